package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/lifecycle"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// Bounds of a capsule request. The host-dependent ones (most vCPUs, memory
// and disk) come from the online hosts at the time of the request.
const (
	maxCapsuleBody   = 1 << 20 // envs may be large
	maxMetadataKeys  = 50
	maxMetadataKey   = 64
	maxMetadataValue = 512
	defaultListLimit = 100
	maxListLimit     = 1000
)

// capsuleJSON is a capsule as users see it: never its address or envs.
type capsuleJSON struct {
	ID           string            `json:"id"`
	Status       string            `json:"status"`
	StatusReason string            `json:"status_reason,omitempty"`
	Template     string            `json:"template"`
	VCPUs        int               `json:"vcpus"`
	MemoryMB     int               `json:"memory_mb"`
	DiskMB       int               `json:"disk_mb"`
	TimeoutSec   int               `json:"timeout_sec"`
	Metadata     map[string]string `json:"metadata"`
	HostID       *string           `json:"host_id"`
	CreatedAt    time.Time         `json:"created_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	StartedAt    *time.Time        `json:"started_at"`
	StoppedAt    *time.Time        `json:"stopped_at"`
	LastActiveAt time.Time         `json:"last_active_at"`
	// PausedAt and SnapshotBytes describe a paused capsule's saved state.
	PausedAt      *time.Time `json:"paused_at"`
	SnapshotBytes int64      `json:"snapshot_bytes"`
	// Network is the capsule's egress policy.
	Network egress.Policy `json:"network"`
	// PublicPorts are served by the port proxy without credentials;
	// AutoResume makes a request to a port resume the paused capsule.
	PublicPorts []int `json:"public_ports"`
	AutoResume  bool  `json:"auto_resume"`
}

func toCapsuleJSON(c store.Capsule) capsuleJSON {
	meta := c.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return capsuleJSON{
		ID: c.ID, Status: c.Status, StatusReason: c.StatusReason, Template: c.Template, VCPUs: c.VCPUs,
		MemoryMB: c.MemoryMB, DiskMB: c.DiskMB, TimeoutSec: c.TimeoutSec, Metadata: meta, HostID: ptr(c.HostID),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, StartedAt: c.StartedAt, StoppedAt: c.StoppedAt,
		LastActiveAt: c.LastActiveAt, PausedAt: c.PausedAt, SnapshotBytes: c.SnapshotBytes,
		Network:     policyJSON(c.Network),
		PublicPorts: nonNil(c.PublicPorts), AutoResume: c.AutoResume,
	}
}

// teamCapsule returns the capsule {id} of the caller's team. Another team's
// capsule, like an id that is not a UUID, is not found: ids reveal nothing.
func (s *server) teamCapsule(r *http.Request) (store.Capsule, error) {
	raw := r.PathValue("id")
	notFound := errorf(codeCapsuleNotFound, "no capsule with id %q", raw)
	id, err := uuid.Parse(raw)
	if err != nil {
		return store.Capsule{}, notFound
	}
	c, err := s.store.GetCapsule(r.Context(), caller(r).TeamID, id.String())
	if errors.Is(err, store.ErrNotFound) {
		return store.Capsule{}, notFound
	}
	return c, err
}

func validateEnvs(envs map[string]string) error {
	if len(envs) > rules.MaxEnvs {
		return errorf(codeInvalid, "envs: at most %d variables, not %d", rules.MaxEnvs, len(envs))
	}
	for k, v := range envs {
		if !rules.ValidEnvName(k) {
			return errorf(codeInvalid, "envs: %q is not a variable name (%s)", k, rules.EnvNameRule)
		}
		if len(v) > rules.MaxEnvValueBytes {
			return errorf(codeInvalid, "envs: the value of %s is %d bytes, more than %d", k, len(v), rules.MaxEnvValueBytes)
		}
	}
	return nil
}

func validateMetadataPair(k, v string) error {
	switch {
	case k == "" || len(k) > maxMetadataKey:
		return errorf(codeInvalid, "metadata: keys are 1-%d bytes, %q is not", maxMetadataKey, k)
	case len(v) > maxMetadataValue:
		return errorf(codeInvalid, "metadata: the value of %q is %d bytes, more than %d", k, len(v), maxMetadataValue)
	}
	return nil
}

func validateMetadata(meta map[string]string) error {
	if len(meta) > maxMetadataKeys {
		return errorf(codeInvalid, "metadata: at most %d keys, not %d", maxMetadataKeys, len(meta))
	}
	for k, v := range meta {
		if err := validateMetadataPair(k, v); err != nil {
			return err
		}
	}
	return nil
}

func (s *server) handleCreateCapsule() http.Handler {
	type request struct {
		Template   string            `json:"template"`
		VCPUs      *int              `json:"vcpus"`
		MemoryMB   *int              `json:"memory_mb"`
		DiskMB     *int              `json:"disk_mb"`
		TimeoutSec *int              `json:"timeout_sec"`
		Envs       map[string]string `json:"envs"`
		Metadata   map[string]string `json:"metadata"`
		Wait       *bool             `json:"wait"`
		Network    *policyRequest    `json:"network"`
		Ports      []createPort      `json:"ports"`
		AutoResume bool              `json:"auto_resume"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		req, err := decode[request](w, r, maxCapsuleBody)
		if err != nil {
			return err
		}
		if err := validateEnvs(req.Envs); err != nil {
			return err
		}
		if err := validateMetadata(req.Metadata); err != nil {
			return err
		}
		policy, err := req.Network.normalize()
		if err != nil {
			return err
		}
		public, err := checkPublicPorts(req.Ports)
		if err != nil {
			return err
		}
		_, actorID := p.actor()
		noWait := req.Wait != nil && !*req.Wait
		c, err := s.capsules.Create(r.Context(), lifecycle.CreateRequest{
			TeamID: p.TeamID, CreatedBy: actorID, Template: req.Template,
			VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB, TimeoutSec: req.TimeoutSec,
			Envs: req.Envs, Metadata: req.Metadata, NoWait: noWait, Network: policy,
			PublicPorts: public, AutoResume: req.AutoResume,
		}, s.event(r, p, "capsule.create", nil))
		if err != nil {
			return err
		}
		status := http.StatusCreated
		if noWait {
			status = http.StatusAccepted
		}
		encode(w, status, toCapsuleJSON(c))
		return nil
	})
}

func (s *server) handleGetCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

func (s *server) handleDeleteCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		if err := s.capsules.Destroy(r.Context(), c, s.event(r, caller(r), "capsule.destroy", nil)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// encodeCursor and decodeCursor make a list cursor opaque to clients.
func encodeCursor(c *store.CapsuleCursor) *string {
	if c == nil {
		return nil
	}
	b, _ := json.Marshal(c)
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

func decodeCursor(s string) (*store.CapsuleCursor, error) {
	bad := errorf(codeInvalid, "cursor is not one this API handed out")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var c store.CapsuleCursor
	if err := json.Unmarshal(b, &c); err != nil || c.CreatedAt.IsZero() {
		return nil, bad
	}
	id, err := uuid.Parse(c.ID)
	if err != nil {
		return nil, bad
	}
	c.ID = id.String()
	return &c, nil
}

// capsuleFilter reads the list query: status (comma-separated and/or
// repeated), metadata=key=value (repeated, all must match), limit, cursor.
func capsuleFilter(r *http.Request) (store.CapsuleFilter, error) {
	q := r.URL.Query()
	f := store.CapsuleFilter{Limit: defaultListLimit}
	for _, v := range q["status"] {
		for st := range strings.SplitSeq(v, ",") {
			if !slices.Contains(store.AllStatuses, st) {
				return f, errorf(codeInvalid, "status: %q is not a capsule status (%s)", st, strings.Join(store.AllStatuses, ", "))
			}
			if !slices.Contains(f.Statuses, st) {
				f.Statuses = append(f.Statuses, st)
			}
		}
	}
	for _, v := range q["metadata"] {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return f, errorf(codeInvalid, "metadata: %q is not key=value", v)
		}
		if err := validateMetadataPair(k, val); err != nil {
			return f, err
		}
		if old, dup := f.Metadata[k]; dup && old != val {
			return f, errorf(codeInvalid, "metadata: key %q is given twice with different values", k)
		}
		if f.Metadata == nil {
			f.Metadata = map[string]string{}
		}
		f.Metadata[k] = val
	}
	if len(f.Metadata) > maxMetadataKeys {
		return f, errorf(codeInvalid, "metadata: at most %d keys", maxMetadataKeys)
	}
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return f, errorf(codeInvalid, "limit must be an integer from 1 to %d, not %q", maxListLimit, v)
		}
		f.Limit = n
	}
	if q.Has("cursor") {
		c, err := decodeCursor(q.Get("cursor"))
		if err != nil {
			return f, err
		}
		f.After = c
	}
	return f, nil
}

func (s *server) handleListCapsules() http.Handler {
	type response struct {
		Capsules   []capsuleJSON `json:"capsules"`
		NextCursor *string       `json:"next_cursor"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		f, err := capsuleFilter(r)
		if err != nil {
			return err
		}
		cs, next, err := s.store.ListCapsules(r.Context(), caller(r).TeamID, f)
		if err != nil {
			return err
		}
		out := response{Capsules: make([]capsuleJSON, 0, len(cs)), NextCursor: encodeCursor(next)}
		for _, c := range cs {
			out.Capsules = append(out.Capsules, toCapsuleJSON(c))
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}
