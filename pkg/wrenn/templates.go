package wrenn

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Template is what capsules start from: a base template or a team's
// snapshot.
type Template struct {
	Name string `json:"name"`
	// Kind is "base" or "snapshot".
	Kind            string    `json:"kind"`
	Description     string    `json:"description"`
	SizeBytes       int64     `json:"size_bytes"`
	DefaultVCPUs    int       `json:"default_vcpus"`
	DefaultMemoryMB int       `json:"default_memory_mb"`
	DefaultDiskMB   int       `json:"default_disk_mb"`
	CreatedAt       time.Time `json:"created_at"`
	// HostID is the host a snapshot lives on.
	HostID *string `json:"host_id"`
	// SourceCapsuleID is the capsule a snapshot was taken of.
	SourceCapsuleID *string `json:"source_capsule_id"`
}

// ListTemplates lists the base templates and the team's snapshots, by
// name.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out []Template
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/templates"}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SnapshotOptions adjust CreateSnapshot.
type SnapshotOptions struct {
	// KeepPaused leaves the capsule paused afterwards instead of running
	// again (the default for a running capsule).
	KeepPaused bool
}

// CreateSnapshot saves a running or paused capsule as a template named
// name (^[a-z0-9][a-z0-9._-]{0,62}$) that new capsules can start from. A
// name in use is ErrConflict (code name_taken).
func (c *Client) CreateSnapshot(ctx context.Context, capsuleID, name string, opts SnapshotOptions) (*Template, error) {
	body := struct {
		CapsuleID string `json:"capsule_id"`
		Name      string `json:"name"`
		Resume    *bool  `json:"resume,omitempty"`
	}{CapsuleID: capsuleID, Name: name}
	if opts.KeepPaused {
		f := false
		body.Resume = &f
	}
	var out Template
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/snapshots", json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListSnapshots lists the same as ListTemplates (each with its Kind).
func (c *Client) ListSnapshots(ctx context.Context) ([]Template, error) {
	var out []Template
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/snapshots"}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSnapshot deletes a snapshot template. One that a live capsule was
// created from is ErrConflict (code template_in_use).
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/snapshots/" + url.PathEscape(name)}, nil)
}
