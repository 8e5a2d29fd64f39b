package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/scheduler"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// Bounds of a capsule's idle timeout, in seconds.
const (
	maxTimeoutSec     = 86400
	defaultTimeoutSec = 300
)

// CreateRequest is a capsule to create. Nil sizes take the template's
// defaults; envs and metadata are checked by the caller for their shape.
type CreateRequest struct {
	TeamID    string
	CreatedBy string // the actor's id, for the record
	Template  string
	VCPUs     *int
	MemoryMB  *int
	DiskMB    *int
	// TimeoutSec is the idle time before the reaper pauses the capsule;
	// nil means defaultTimeoutSec, 0 never.
	TimeoutSec *int
	Envs       map[string]string
	Metadata   map[string]string
	// NoWait returns the capsule as placed and starts it in the
	// background.
	NoWait bool
	// Network is the capsule's egress policy (normalized,
	// NormalizePolicy); nil takes the snapshot's it is launched from, else
	// the team's default, else the open policy.
	Network *egress.Policy
	// PublicPorts are the ports the port proxy serves without
	// credentials (checked by the caller); AutoResume makes a request to
	// a port of the paused capsule resume it.
	PublicPorts []int
	AutoResume  bool
}

// Create checks req against the team's templates and the online hosts,
// records the capsule on the host chosen for it (with ev, whose metadata
// is completed) and starts it there. Everything is checked before
// anything is created. It returns the capsule as recorded: running, or
// starting when req.NoWait.
func (s *Service) Create(ctx context.Context, req CreateRequest, ev store.Event) (store.Capsule, error) {
	timeout := defaultTimeoutSec
	if req.TimeoutSec != nil {
		timeout = *req.TimeoutSec
	}
	if timeout < 0 || timeout > maxTimeoutSec {
		return store.Capsule{}, errorf(Invalid, "timeout_sec must be 0 (never) to %d, not %d", maxTimeoutSec, timeout)
	}
	if req.Template == "" {
		return store.Capsule{}, errorf(Invalid, "template is required (GET /v1/templates lists them)")
	}
	noTemplate := errorf(TemplateNotFound, "no template called %q (GET /v1/templates lists them)", req.Template)
	if !rules.ValidTemplateName(req.Template) {
		return store.Capsule{}, noTemplate
	}
	tmpl, err := s.store.Template(ctx, req.TeamID, req.Template)
	if errors.Is(err, store.ErrNotFound) {
		return store.Capsule{}, noTemplate
	}
	if err != nil {
		return store.Capsule{}, err
	}
	vcpus, memory, disk := tmpl.DefaultVCPUs, tmpl.DefaultMemoryMB, tmpl.DefaultDiskMB
	if tmpl.Kind == store.TemplateSnapshot {
		if err := sameAsSnapshot(tmpl, req.VCPUs, req.MemoryMB, req.DiskMB); err != nil {
			return store.Capsule{}, err
		}
		if tmpl.HostID == "" {
			return store.Capsule{}, errorf(TemplateUnavailable, "snapshot %q was on a host that has been deleted; it cannot be restored", tmpl.Name)
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
		return store.Capsule{}, errorf(Invalid, "vcpus must be at least 1, not %d", vcpus)
	case memory < rules.MinMemoryMB:
		return store.Capsule{}, errorf(Invalid, "memory_mb must be at least %d, not %d", rules.MinMemoryMB, memory)
	case disk < rules.MinDiskMB:
		return store.Capsule{}, errorf(Invalid, "disk_mb must be at least %d, not %d", rules.MinDiskMB, disk)
	}
	lim, err := s.store.PlacementLimits(ctx, req.TeamID)
	if err != nil {
		return store.Capsule{}, err
	}
	switch {
	case lim.Hosts == 0:
		return store.Capsule{}, errorf(NoHost, "no host is online to run capsules; try again when one is")
	case vcpus > lim.MaxVCPUs:
		return store.Capsule{}, errorf(Invalid, "vcpus must be at most %d (the most CPUs of any online host), not %d", lim.MaxVCPUs, vcpus)
	case int64(memory) > lim.MaxUsableMemoryMB:
		return store.Capsule{}, errorf(Invalid, "memory_mb must be at most %d (the most any online host gives to capsules), not %d", lim.MaxUsableMemoryMB, memory)
	case int64(disk) > lim.MaxDiskMB:
		return store.Capsule{}, errorf(Invalid, "disk_mb must be at most %d (the most disk of any online host), not %d", lim.MaxDiskMB, disk)
	}

	policy, err := s.createPolicy(ctx, req.TeamID, tmpl, req.Network)
	if err != nil {
		return store.Capsule{}, err
	}
	ev = withMeta(ev, map[string]any{
		"template": tmpl.Name, "vcpus": vcpus, "memory_mb": memory, "disk_mb": disk, "timeout_sec": timeout,
	})
	nc := store.NewCapsule{
		TeamID: req.TeamID, Template: tmpl.Name, VCPUs: vcpus, MemoryMB: memory, DiskMB: disk,
		TimeoutSec: timeout, Metadata: req.Metadata, CreatedBy: req.CreatedBy,
		TemplateID: tmpl.ID, AgentTemplate: tmpl.AgentName, Quota: s.quota,
		Network:     policy,
		PublicPorts: req.PublicPorts, AutoResume: req.AutoResume,
	}
	if tmpl.Kind == store.TemplateSnapshot {
		nc.HostID = tmpl.HostID // its saved state is there only
	}
	c, h, err := s.store.CreateCapsule(ctx, nc, ev)
	// No host with the template can take the capsule: copy the template to
	// one that can, and place again. Twice: a heartbeat sent just before
	// the copy ended may have taken the template off the host's list (a
	// second copy finds it there and ends at once).
	for range 2 {
		if !placeWithCopy(tmpl, err) {
			break
		}
		ask := scheduler.Ask{VCPUs: vcpus, MemoryMB: int64(memory), DiskMB: int64(disk)}
		cerr := s.bringTemplate(ctx, req.TeamID, tmpl, ask)
		if errors.Is(cerr, store.ErrNoHost) {
			break
		}
		if cerr != nil {
			s.log.WarnContext(ctx, "template copy failed", "template", tmpl.Name, "err", cerr)
			return store.Capsule{}, errorf(NoHost, "no online host with template %q can take this capsule, and copying the template to another host failed: %v", tmpl.Name, cerr)
		}
		c, h, err = s.store.CreateCapsule(ctx, nc, ev)
	}
	var full *store.NoCapacityError
	switch {
	case errors.Is(err, store.ErrTemplateGone):
		return store.Capsule{}, errorf(TemplateNotFound, "snapshot %q was deleted meanwhile", tmpl.Name)
	case errors.Is(err, store.ErrNoHost) && tmpl.Kind == store.TemplateSnapshot:
		return store.Capsule{}, errorf(NoHost, "the host that holds snapshot %q is not online", tmpl.Name)
	case errors.Is(err, store.ErrNoHost):
		return store.Capsule{}, errorf(NoHost, "no online host has template %q", tmpl.Name)
	case errors.As(err, &full) && full.Short != "":
		return store.Capsule{}, errorf(NoCapacity, "no host with template %q can take this capsule now: %s; try smaller or later",
			tmpl.Name, full.ShortMessage())
	case errors.As(err, &full):
		return store.Capsule{}, errorf(NoCapacity, "no host has room for %d vCPUs and %d MB of memory now: the most free on the %d hosts with template %q is %d vCPUs and %d MB; try smaller or later",
			vcpus, memory, full.Hosts, tmpl.Name, full.FreeVCPUs, full.FreeMemoryMB)
	case err != nil:
		return store.Capsule{}, quotaError(err, "this capsule")
	}
	s.log.InfoContext(ctx, "capsule placed", "capsule_id", c.ID, "host_id", h.ID, "template", tmpl.Name)
	spec := &hostagentv1.CapsuleSpec{
		CapsuleId: c.ID, Template: tmpl.AgentName, Vcpus: int32(vcpus), MemoryMb: int32(memory),
		DiskMb: int32(disk), Envs: templateEnvs(tmpl, req.Envs), Network: capsule.PolicyToProto(policy),
	}
	// The start outlives the request: a client that hangs up, or asked
	// not to wait, does not stop it.
	bg := context.WithoutCancel(ctx)
	if req.NoWait {
		go func() { _, _ = s.start(bg, c, h, spec) }()
		return c, nil
	}
	return s.start(bg, c, h, spec)
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
			return errorf(Invalid, "%s must be %d or left out: snapshot %q restores a capsule of %d vCPUs, %d MB of memory and %d MB of disk, and cannot be resized",
				f.name, f.want, t.Name, t.DefaultVCPUs, t.DefaultMemoryMB, t.DefaultDiskMB)
		}
	}
	return nil
}

// start asks host h to start capsule c and records the outcome: running
// with its address, or error with a reason (and a best-effort destroy on
// the host, which may have half-made it). It returns the capsule as
// recorded and, when it did not start, an *Error.
func (s *Service) start(ctx context.Context, c store.Capsule, h store.Host, spec *hostagentv1.CapsuleSpec) (store.Capsule, error) {
	callCtx, cancel := context.WithTimeout(ctx, startTimeout)
	res, err := s.agent(h).CreateCapsule(callCtx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{Spec: spec}))
	cancel()
	ctx, cancel = context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		opErr, reason := agentFailure("start the capsule", err)
		s.log.WarnContext(ctx, "capsule failed to start", "capsule_id", c.ID, "host_id", h.ID, "err", err)
		fc, serr := s.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleStarting}, store.CapsuleError, reason)
		if serr != nil && !errors.Is(serr, store.ErrConflict) {
			s.log.ErrorContext(ctx, "recording capsule start failure", "capsule_id", c.ID, "err", serr)
		}
		if serr != nil {
			fc = c
		}
		s.destroyBestEffort(ctx, h, c.ID)
		return fc, opErr
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
		return rc, errorf(Conflict, "capsule %s became %s while it started", c.ID, rc.Status)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "recording capsule start", "capsule_id", c.ID, "err", err)
		return rc, err
	}
	s.log.InfoContext(ctx, "capsule running", "capsule_id", c.ID, "host_id", h.ID)
	return rc, nil
}

// templateEnvs returns the environment of a capsule of t: the variables
// t's build set (its config's env), overridden by those of the request.
func templateEnvs(t store.Template, envs map[string]string) map[string]string {
	var cfg struct {
		Env map[string]string `json:"env"`
	}
	if len(t.Config) == 0 || json.Unmarshal(t.Config, &cfg) != nil || len(cfg.Env) == 0 {
		return envs
	}
	out := make(map[string]string, len(cfg.Env)+len(envs))
	for k, v := range cfg.Env {
		out[k] = v
	}
	for k, v := range envs {
		out[k] = v
	}
	return out
}
