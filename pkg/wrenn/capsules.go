package wrenn

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Capsule statuses.
const (
	StatusPending  = "pending"
	StatusStarting = "starting"
	StatusRunning  = "running"
	StatusPausing  = "pausing"
	StatusPaused   = "paused"
	StatusResuming = "resuming"
	StatusStopped  = "stopped"
	StatusError    = "error"
	StatusMissing  = "missing"
)

// Capsule is a sandbox as the API describes it.
type Capsule struct {
	ID string `json:"id"`
	// Status is one of the Status constants.
	Status string `json:"status"`
	// StatusReason says why it is in error or missing, or why its last
	// pause or resume failed.
	StatusReason  string            `json:"status_reason,omitempty"`
	Template      string            `json:"template"`
	VCPUs         int               `json:"vcpus"`
	MemoryMB      int               `json:"memory_mb"`
	DiskMB        int               `json:"disk_mb"`
	TimeoutSec    int               `json:"timeout_sec"`
	Metadata      map[string]string `json:"metadata"`
	HostID        *string           `json:"host_id"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	StartedAt     *time.Time        `json:"started_at"`
	StoppedAt     *time.Time        `json:"stopped_at"`
	LastActiveAt  time.Time         `json:"last_active_at"`
	PausedAt      *time.Time        `json:"paused_at"`
	SnapshotBytes int64             `json:"snapshot_bytes"`
	// Network is the capsule's egress policy, normalized.
	Network NetworkPolicy `json:"network"`
}

// NetworkPolicy is a capsule's egress policy (docs/network.md): a deny
// entry always wins; an allow list, or Internet false, makes it
// default-deny. Entries are IPv4 CIDRs and domain names ("example.com",
// "*.example.com"); the host, other capsules and private ranges stay
// unreachable whatever it says.
type NetworkPolicy struct {
	Internet bool     `json:"internet"`
	Allow    []string `json:"allow"`
	Deny     []string `json:"deny"`
}

// CapsuleSpec is what to create. Only Template is required; zero values
// take the template's defaults.
type CapsuleSpec struct {
	Template string `json:"template"`
	VCPUs    int    `json:"vcpus,omitempty"`
	MemoryMB int    `json:"memory_mb,omitempty"`
	DiskMB   int    `json:"disk_mb,omitempty"`
	// TimeoutSec is how long the capsule may be idle before it is paused:
	// nil for the server's default (300 s), a pointer to 0 for never.
	TimeoutSec *int              `json:"timeout_sec,omitempty"`
	Envs       map[string]string `json:"envs,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// Network is the capsule's egress policy; nil: a snapshot's source
	// capsule's, else the team's default, else the open policy.
	Network *NetworkPolicy `json:"network,omitempty"`
	// NoWait answers as soon as the capsule is starting (status
	// "starting"), instead of when it runs.
	NoWait bool `json:"-"`
}

// Seconds returns a pointer to n, for CapsuleSpec.TimeoutSec.
func Seconds(n int) *int { return &n }

// CreateCapsule creates a capsule and, unless spec.NoWait, answers when it
// is running.
func (c *Client) CreateCapsule(ctx context.Context, spec CapsuleSpec) (*Capsule, error) {
	body := struct {
		CapsuleSpec
		Wait *bool `json:"wait,omitempty"`
	}{CapsuleSpec: spec}
	if spec.NoWait {
		f := false
		body.Wait = &f
	}
	var out Capsule
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/capsules", json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetCapsule returns a capsule. An unknown one is ErrNotFound
// (code capsule_not_found).
func (c *Client) GetCapsule(ctx context.Context, id string) (*Capsule, error) {
	var out Capsule
	if err := c.call(ctx, request{method: http.MethodGet, path: capsulePath(id, "")}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListOptions filter and page GET /v1/capsules.
type ListOptions struct {
	// Statuses keeps capsules in one of these statuses (none: all).
	Statuses []string
	// Metadata keeps capsules whose metadata has every one of these pairs.
	Metadata map[string]string
	// Limit is the page size, 1–1000 (0: the server's default, 100).
	Limit int
	// Cursor is the NextCursor of the previous page.
	Cursor string
}

// CapsulePage is one page of capsules, newest first.
type CapsulePage struct {
	Capsules []Capsule `json:"capsules"`
	// NextCursor is nil on the last page.
	NextCursor *string `json:"next_cursor"`
}

// ListCapsules returns one page of the team's capsules.
func (c *Client) ListCapsules(ctx context.Context, opts ListOptions) (*CapsulePage, error) {
	q := url.Values{}
	if len(opts.Statuses) > 0 {
		q.Set("status", strings.Join(opts.Statuses, ","))
	}
	for k, v := range opts.Metadata {
		q.Add("metadata", k+"="+v)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	var out CapsulePage
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/capsules", query: q}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAllCapsules returns every capsule matching opts, page after page
// (opts.Cursor is where it starts).
func (c *Client) ListAllCapsules(ctx context.Context, opts ListOptions) ([]Capsule, error) {
	var all []Capsule
	for {
		p, err := c.ListCapsules(ctx, opts)
		if err != nil {
			return all, err
		}
		all = append(all, p.Capsules...)
		if p.NextCursor == nil || *p.NextCursor == "" {
			return all, nil
		}
		opts.Cursor = *p.NextCursor
	}
}

// DestroyCapsule destroys a capsule; destroying a stopped one succeeds.
func (c *Client) DestroyCapsule(ctx context.Context, id string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: capsulePath(id, "")}, nil)
}

// PauseCapsule saves a running capsule whole (memory, processes, files)
// and answers it paused. A capsule in another status is ErrConflict, with
// its status in (*Error).CapsuleStatus.
func (c *Client) PauseCapsule(ctx context.Context, id string) (*Capsule, error) {
	return c.lifecycle(ctx, id, "/pause")
}

// ResumeCapsule runs a paused capsule again where it was.
func (c *Client) ResumeCapsule(ctx context.Context, id string) (*Capsule, error) {
	return c.lifecycle(ctx, id, "/resume")
}

// PingCapsule records activity on a running capsule, so that its idle
// timeout starts again.
func (c *Client) PingCapsule(ctx context.Context, id string) (*Capsule, error) {
	return c.lifecycle(ctx, id, "/ping")
}

// SetCapsuleNetwork replaces the egress policy of a running or paused
// capsule; its next connection and lookup follow it.
func (c *Client) SetCapsuleNetwork(ctx context.Context, id string, p NetworkPolicy) (*Capsule, error) {
	var out Capsule
	if err := c.call(ctx, request{method: http.MethodPatch, path: capsulePath(id, "/network"), json: p}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) lifecycle(ctx context.Context, id, op string) (*Capsule, error) {
	var out Capsule
	if err := c.call(ctx, request{method: http.MethodPost, path: capsulePath(id, op)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Metrics is what a running capsule uses now.
type Metrics struct {
	CPUCount          int       `json:"cpu_count"`
	CPUUsedPct        float64   `json:"cpu_used_pct"`
	MemTotalBytes     int64     `json:"mem_total_bytes"`
	MemUsedBytes      int64     `json:"mem_used_bytes"`
	MemAvailableBytes int64     `json:"mem_available_bytes"`
	DiskTotalBytes    int64     `json:"disk_total_bytes"`
	DiskUsedBytes     int64     `json:"disk_used_bytes"`
	Load1             float64   `json:"load_1"`
	Processes         int       `json:"processes"`
	Timestamp         time.Time `json:"timestamp"`
}

// CapsuleMetrics returns what a running capsule uses now.
func (c *Client) CapsuleMetrics(ctx context.Context, id string) (*Metrics, error) {
	var out Metrics
	if err := c.call(ctx, request{method: http.MethodGet, path: capsulePath(id, "/metrics")}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
