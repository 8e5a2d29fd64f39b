package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// Bounds of a capsule request. The host-dependent ones (most vCPUs, memory
// and disk) come from the online hosts at the time of the request.
const (
	maxCapsuleBody    = 1 << 20 // envs may be large
	maxCapsuleTimeout = 86400
	defaultTimeoutSec = 300
	maxMetadataKeys   = 50
	maxMetadataKey    = 64
	maxMetadataValue  = 512
	defaultListLimit  = 100
	maxListLimit      = 1000
)

// Timeouts of lifecycle calls to agents. They run on contexts detached from
// the request: a capsule's lifetime is never tied to the HTTP request that
// started or destroyed it.
const (
	capsuleStartTimeout   = 60 * time.Second
	capsuleDestroyTimeout = 30 * time.Second
	// bookkeepingTimeout bounds the database writes that record what an
	// agent did, so that they get time of their own after a slow agent.
	bookkeepingTimeout = 10 * time.Second
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
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		p := caller(r)
		req, err := decode[request](w, r, maxCapsuleBody)
		if err != nil {
			return err
		}
		// Everything is checked before anything is created.
		if err := validateEnvs(req.Envs); err != nil {
			return err
		}
		if err := validateMetadata(req.Metadata); err != nil {
			return err
		}
		timeout := defaultTimeoutSec
		if req.TimeoutSec != nil {
			timeout = *req.TimeoutSec
		}
		if timeout < 0 || timeout > maxCapsuleTimeout {
			return errorf(codeInvalid, "timeout_sec must be 0 (never) to %d, not %d", maxCapsuleTimeout, timeout)
		}
		if req.Template == "" {
			return errorf(codeInvalid, "template is required (GET /v1/templates lists them)")
		}
		noTemplate := errorf(codeTemplateNotFound, "no template called %q (GET /v1/templates lists them)", req.Template)
		if !rules.ValidTemplateName(req.Template) {
			return noTemplate
		}
		tmpl, err := s.store.Template(ctx, p.TeamID, req.Template)
		if errors.Is(err, store.ErrNotFound) {
			return noTemplate
		}
		if err != nil {
			return err
		}
		vcpus, memory, disk := tmpl.DefaultVCPUs, tmpl.DefaultMemoryMB, tmpl.DefaultDiskMB
		if tmpl.Kind == store.TemplateSnapshot {
			if err := sameAsSnapshot(tmpl, req.VCPUs, req.MemoryMB, req.DiskMB); err != nil {
				return err
			}
			if tmpl.HostID == "" {
				return errorf(codeTemplateUnavailable, "snapshot %q was on a host that has been deleted; it cannot be restored", tmpl.Name)
			}
		}
		if req.VCPUs != nil {
			vcpus = *req.VCPUs
		}
		if req.MemoryMB != nil {
			memory = *req.MemoryMB
		}
		if req.DiskMB != nil {
			disk = *req.DiskMB
		}
		switch {
		case vcpus < 1:
			return errorf(codeInvalid, "vcpus must be at least 1, not %d", vcpus)
		case memory < rules.MinMemoryMB:
			return errorf(codeInvalid, "memory_mb must be at least %d, not %d", rules.MinMemoryMB, memory)
		case disk < rules.MinDiskMB:
			return errorf(codeInvalid, "disk_mb must be at least %d, not %d", rules.MinDiskMB, disk)
		}
		lim, err := s.store.PlacementLimits(ctx, p.TeamID)
		if err != nil {
			return err
		}
		switch {
		case lim.Hosts == 0:
			return errorf(codeNoHost, "no host is online to run capsules; try again when one is")
		case vcpus > lim.MaxVCPUs:
			return errorf(codeInvalid, "vcpus must be at most %d (the most CPUs of any online host), not %d", lim.MaxVCPUs, vcpus)
		case int64(memory) > lim.MaxUsableMemoryMB:
			return errorf(codeInvalid, "memory_mb must be at most %d (the most any online host gives to capsules), not %d", lim.MaxUsableMemoryMB, memory)
		case int64(disk) > lim.MaxDiskMB:
			return errorf(codeInvalid, "disk_mb must be at most %d (the most disk of any online host), not %d", lim.MaxDiskMB, disk)
		}

		_, actorID := p.actor()
		c, h, err := s.store.CreateCapsule(ctx, store.NewCapsule{
			TeamID: p.TeamID, Template: tmpl.Name, VCPUs: vcpus, MemoryMB: memory, DiskMB: disk,
			TimeoutSec: timeout, Metadata: req.Metadata, CreatedBy: actorID,
			TemplateID: tmpl.ID, AgentTemplate: tmpl.AgentName, HostID: tmpl.HostID,
		}, s.event(r, p, "capsule.create", map[string]any{
			"template": tmpl.Name, "vcpus": vcpus, "memory_mb": memory, "disk_mb": disk, "timeout_sec": timeout,
		}))
		var full *store.NoCapacityError
		switch {
		case errors.Is(err, store.ErrTemplateGone):
			return errorf(codeTemplateNotFound, "snapshot %q was deleted meanwhile", tmpl.Name)
		case errors.Is(err, store.ErrNoHost) && tmpl.Kind == store.TemplateSnapshot:
			return errorf(codeNoHost, "the host that holds snapshot %q is not online", tmpl.Name)
		case errors.Is(err, store.ErrNoHost):
			return errorf(codeNoHost, "no online host has template %q", tmpl.Name)
		case errors.As(err, &full):
			return errorf(codeNoCapacity, "no host has room for %d vCPUs and %d MB of memory now: the most free on the %d hosts with template %q is %d vCPUs and %d MB; try smaller or later",
				vcpus, memory, full.Hosts, tmpl.Name, full.FreeVCPUs, full.FreeMemoryMB)
		case err != nil:
			return err
		}
		s.log.InfoContext(ctx, "capsule placed", "capsule_id", c.ID, "host_id", h.ID, "template", tmpl.Name)
		spec := &hostagentv1.CapsuleSpec{
			CapsuleId: c.ID, Template: tmpl.AgentName, Vcpus: int32(vcpus), MemoryMb: int32(memory),
			DiskMb: int32(disk), Envs: req.Envs,
		}
		// The start outlives the request: a client that hangs up, or asked
		// not to wait, does not stop it.
		bg := context.WithoutCancel(ctx)
		if req.Wait != nil && !*req.Wait {
			go func() { _, _ = s.startCapsule(bg, c, h, spec) }()
			encode(w, http.StatusAccepted, toCapsuleJSON(c))
			return nil
		}
		c, err = s.startCapsule(bg, c, h, spec)
		if err != nil {
			return err
		}
		encode(w, http.StatusCreated, toCapsuleJSON(c))
		return nil
	})
}

// sameAsSnapshot refuses sizes other than the snapshot's own: a snapshot
// restores a capsule's memory whole, so it cannot be given less or more.
func sameAsSnapshot(t store.Template, vcpus, memory, disk *int) error {
	for _, f := range []struct {
		name string
		got  *int
		want int
	}{{"vcpus", vcpus, t.DefaultVCPUs}, {"memory_mb", memory, t.DefaultMemoryMB}, {"disk_mb", disk, t.DefaultDiskMB}} {
		if f.got != nil && *f.got != f.want {
			return errorf(codeInvalid, "%s must be %d or left out: snapshot %q restores a capsule of %d vCPUs, %d MB of memory and %d MB of disk, and cannot be resized",
				f.name, f.want, t.Name, t.DefaultVCPUs, t.DefaultMemoryMB, t.DefaultDiskMB)
		}
	}
	return nil
}

// startCapsule asks host h to start capsule c and records the outcome:
// running with its address, or error with a reason (and a best-effort
// destroy on the host, which may have half-made it). It returns the capsule
// as recorded and, when it did not start, an *Error for the client.
func (s *server) startCapsule(ctx context.Context, c store.Capsule, h store.Host, spec *hostagentv1.CapsuleSpec) (store.Capsule, error) {
	callCtx, cancel := context.WithTimeout(ctx, capsuleStartTimeout)
	res, err := s.capsuleService(h).CreateCapsule(callCtx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{Spec: spec}))
	cancel()
	ctx, cancel = context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		apiErr, reason := agentFailure("start the capsule", err)
		s.log.WarnContext(ctx, "capsule failed to start", "capsule_id", c.ID, "host_id", h.ID, "err", err)
		fc, serr := s.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleStarting}, store.CapsuleError, reason)
		if serr != nil && !errors.Is(serr, store.ErrConflict) {
			s.log.ErrorContext(ctx, "recording capsule start failure", "capsule_id", c.ID, "err", serr)
		}
		if serr != nil {
			fc = c
		}
		s.destroyBestEffort(ctx, h, c.ID)
		return fc, apiErr
	}
	started := time.Now()
	if ms := res.Msg.GetCapsule().GetStartedAtUnixMs(); ms > 0 {
		started = time.UnixMilli(ms)
	}
	rc, err := s.store.MarkCapsuleRunning(ctx, c.ID, res.Msg.GetCapsule().GetAddress(), started)
	if errors.Is(err, store.ErrConflict) {
		// Destroyed while it started: the destroy may have come before
		// the capsule existed on the host, so take it off again.
		s.destroyBestEffort(ctx, h, c.ID)
		return rc, errorf(codeConflict, "capsule %s became %s while it started", c.ID, rc.Status)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "recording capsule start", "capsule_id", c.ID, "err", err)
		return rc, err
	}
	s.log.InfoContext(ctx, "capsule running", "capsule_id", c.ID, "host_id", h.ID)
	return rc, nil
}

// destroyBestEffort asks host h to destroy capsule id and only logs a
// failure: the capsule is already recorded as gone or failed.
func (s *server) destroyBestEffort(ctx context.Context, h store.Host, id string) {
	if err := s.destroyOnAgent(ctx, h, id); err != nil {
		s.log.WarnContext(ctx, "destroying capsule on its host", "capsule_id", id, "host_id", h.ID, "err", err)
	}
}

// destroyOnAgent asks host h to destroy capsule id; the agent answers
// success for capsules it does not know. A capsule whose sandbox is gone
// but whose host could not remove all of its network or files is
// destroyed too: the host keeps reporting it, and the heartbeat's clean-up
// of finished capsules asks again (cleanUpHost) until nothing is left.
func (s *server) destroyOnAgent(ctx context.Context, h store.Host, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), capsuleDestroyTimeout)
	defer cancel()
	resp, err := s.capsuleService(h).DestroyCapsule(ctx, connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id}))
	if err != nil {
		return err
	}
	if left := resp.Msg.GetLeftovers(); left != "" {
		s.log.WarnContext(ctx, "capsule destroyed, its host is still removing what it had (retried on heartbeats)",
			"capsule_id", id, "host_id", h.ID, "leftovers", left)
	}
	return nil
}

// agentFailure turns a failed lifecycle call into the client's error and
// the capsule's status reason. The agent's own message is kept only for
// the codes the agent answers on purpose; for the others (dial errors,
// timeouts, foreign answers) only the code, because the cause could
// describe the network behind an address a BYOC team chose.
func agentFailure(what string, err error) (*Error, string) {
	code := connect.CodeOf(err)
	detail := code.String()
	var ce *connect.Error
	switch code {
	case connect.CodeFailedPrecondition, connect.CodeResourceExhausted, connect.CodeInvalidArgument,
		connect.CodeAlreadyExists, connect.CodeNotFound, connect.CodeAborted:
		if errors.As(err, &ce) && ce.Message() != "" {
			detail += ": " + ce.Message()
		}
	}
	reason := "the host agent could not " + what + ": " + detail
	switch code {
	case connect.CodeFailedPrecondition:
		return errorf(codeTemplateUnavailable, "%s", reason), reason
	case connect.CodeResourceExhausted:
		return errorf(codeNoCapacity, "%s", reason), reason
	case connect.CodeAborted:
		// Another operation on the capsule is under way on the host.
		return errorf(codeConflict, "%s; try again", reason), reason
	default:
		return errorf(codeAgentError, "%s", reason), reason
	}
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

// destroyAttempts bounds how often DELETE follows a capsule whose status
// changes under it (a start or pause finishing meanwhile).
const destroyAttempts = 5

// settleWait is how often DELETE looks again at a capsule it destroyed on
// its host while a pause or resume was in flight there: that operation
// fails and settles the row, and only then can the destroy be recorded.
const settleWait = 100 * time.Millisecond

func (s *server) handleDeleteCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		ctx := context.WithoutCancel(r.Context())
		// destroyed is set once the agent destroyed the capsule: from then
		// on this call has acted and must finish recording it.
		destroyed := false
		deadline := time.Now().Add(capsuleDestroyTimeout)
		for attempt := 0; ; {
			switch c.Status {
			case store.CapsuleStopped:
				w.WriteHeader(http.StatusNoContent)
				return nil
			case store.CapsulePausing, store.CapsuleResuming:
				if !destroyed {
					return wrongStatus(c, "running or paused")
				}
				if time.Now().After(deadline) {
					return errorf(codeConflict, "capsule %s was destroyed on its host but stays %s; try again", c.ID, c.Status)
				}
				time.Sleep(settleWait)
				if c, err = s.store.GetCapsule(ctx, p.TeamID, c.ID); err != nil {
					return err
				}
				continue
			}
			if attempt++; attempt > destroyAttempts {
				return errorf(codeConflict, "capsule %s kept changing status (now %s); try again", c.ID, c.Status)
			}
			if c.HostID != "" {
				h, err := s.store.Host(ctx, c.HostID)
				switch {
				case errors.Is(err, store.ErrNotFound):
					// The host was deleted meanwhile: nothing left to stop.
				case err != nil:
					return err
				default:
					if err := s.destroyOnAgent(ctx, h, c.ID); err != nil {
						s.log.WarnContext(ctx, "destroying capsule", "capsule_id", c.ID, "host_id", h.ID, "err", err)
						apiErr, _ := agentFailure("destroy the capsule", err)
						if apiErr.Code != codeConflict {
							// Only a busy capsule (409, try again) is not
							// the agent failing.
							apiErr.Code = codeAgentError
						}
						apiErr.Status = c.Status
						return apiErr
					}
					destroyed = true
				}
			}
			// Only from the status the destroy saw: if a start finished
			// meanwhile, the capsule may be back on the host; go again.
			prev := c.Status
			c, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{prev}, store.CapsuleStopped, "",
				s.event(r, p, "capsule.destroy", map[string]any{"status": prev}))
			if err == nil {
				s.log.InfoContext(ctx, "capsule destroyed", "capsule_id", c.ID)
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			if !errors.Is(err, store.ErrConflict) {
				return err
			}
		}
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
