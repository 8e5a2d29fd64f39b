package lifecycle

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// This file holds snapshots: templates made from a capsule's saved state.
// A snapshot lives on the disk of the host its capsule ran on, in a
// directory named by the template's id (names are per team, directories
// per host); capsules created from it are placed on that host only.

// SnapshotRequest is a snapshot to make of a team's capsule.
type SnapshotRequest struct {
	TeamID    string
	CapsuleID string
	Name      string
	// Resume runs a capsule that was running again once it is saved;
	// otherwise it stays paused.
	Resume bool
}

// Snapshot saves capsule req.CapsuleID (running or paused) as the team's
// template req.Name, recording it with ev (metadata completed). The
// capsule is claimed as for a pause, so that no pause, resume or other
// snapshot runs on it meanwhile.
func (s *Service) Snapshot(ctx context.Context, req SnapshotRequest, ev store.Event) (store.Template, error) {
	switch {
	case req.CapsuleID == "":
		return store.Template{}, errorf(Invalid, "capsule_id is required")
	case req.Name == "":
		return store.Template{}, errorf(Invalid, "name is required: %s", rules.TemplateNameRule)
	case !rules.ValidTemplateName(req.Name):
		return store.Template{}, errorf(Invalid, "name %q is not a template name: %s", req.Name, rules.TemplateNameRule)
	}
	notFound := errorf(CapsuleNotFound, "no capsule with id %q", req.CapsuleID)
	id, err := uuid.Parse(req.CapsuleID)
	if err != nil {
		return store.Template{}, notFound
	}
	c, err := s.store.GetCapsule(ctx, req.TeamID, id.String())
	if errors.Is(err, store.ErrNotFound) {
		return store.Template{}, notFound
	}
	if err != nil {
		return store.Template{}, err
	}
	taken, err := s.store.NameTaken(ctx, req.TeamID, req.Name)
	if err != nil {
		return store.Template{}, err
	}
	if taken {
		return store.Template{}, errorf(NameTaken, "a template called %q already exists; choose another name", req.Name)
	}
	if c.Status != store.CapsuleRunning && c.Status != store.CapsulePaused {
		return store.Template{}, wrongStatus(c, "running or paused")
	}
	if c.HostID == "" {
		return store.Template{}, noHost(c)
	}
	was := c.Status
	bg := context.WithoutCancel(ctx)
	// The quota is checked under the team's lock, in the claim itself, so
	// that concurrent snapshots cannot pass it together. Until the
	// template row exists the directory is protected by the request the
	// claim records: heartbeats have hosts remove snapshot directories of
	// neither (see cleanUpHost), which is what a failed recording leaves.
	tid := uuid.NewString()
	c, err = s.store.ClaimSnapshot(bg, req.TeamID, c.ID, was, tid, c.HostID, s.quota)
	if errors.Is(err, store.ErrConflict) {
		return store.Template{}, wrongStatus(c, was)
	}
	if err != nil {
		return store.Template{}, quotaError(err, "another snapshot")
	}
	defer func() {
		if err := s.store.EndSnapshot(bg, tid); err != nil {
			s.log.WarnContext(bg, "forgetting a snapshot request", "template_id", tid, "err", err)
		}
	}()
	ev = withMeta(ev, map[string]any{"name": req.Name, "capsule_id": c.ID, "resume": req.Resume})
	return s.snapshotClaimed(bg, c, was, tid, req.Name, req.Resume, ev)
}

// snapshotClaimed asks capsule c's host to save c (claimed: pausing, was
// its status before) as template tid, named name, then records the
// template with ev and c's status after. Nothing is left half-done: when
// the template row cannot be written, the agent deletes what it wrote.
func (s *Service) snapshotClaimed(ctx context.Context, c store.Capsule, was, tid, name string, resume bool, ev store.Event) (store.Template, error) {
	start := time.Now()
	fail := func() { observe(s.metrics.Snapshot, false, time.Since(start)) }
	h, err := s.hostOf(ctx, c)
	if err != nil {
		fail()
		_, err = s.hostLost(ctx, c, err)
		return store.Template{}, err
	}
	callCtx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	res, err := s.agent(h).SnapshotCapsule(callCtx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{
		CapsuleId: c.ID, Template: tid, Resume: resume,
	}))
	cancel()
	bctx, cancel := context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		fail()
		// Whatever the agent may have written under that name is nobody's.
		s.deleteTemplateBestEffort(bctx, h, tid)
		_, err = s.settleAfterFailure(bctx, c, h, store.CapsulePausing, "snapshot", err)
		return store.Template{}, err
	}
	// The capsule's status first: it is true whatever becomes of the
	// template row.
	after := res.Msg.GetCapsule()
	afterStatus := capsule.StatusOf(after)
	switch afterStatus {
	case capsule.Paused:
		_, err = s.store.MarkCapsulePaused(bctx, c.ID, []string{store.CapsulePausing}, after.GetSnapshotBytes(), "")
	default:
		_, err = s.store.SetCapsuleStatus(bctx, c.ID, []string{store.CapsulePausing}, store.CapsuleRunning, "")
	}
	if err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.ErrorContext(bctx, "recording capsule status after snapshot", "capsule_id", c.ID, "err", err)
	}
	tm := res.Msg.GetTemplate()
	ns := store.NewSnapshot{
		ID: tid, Name: name, TeamID: c.TeamID, HostID: h.ID, SourceCapsuleID: c.ID,
		VCPUs: c.VCPUs, MemoryMB: c.MemoryMB, DiskMB: c.DiskMB, SizeBytes: tm.GetSizeBytes(),
	}
	// The agent's sizes win: they are what the snapshot restores with.
	if tm.GetVcpus() > 0 && tm.GetMemoryMb() > 0 && tm.GetDiskMb() > 0 {
		ns.VCPUs, ns.MemoryMB, ns.DiskMB = int(tm.GetVcpus()), int(tm.GetMemoryMb()), int(tm.GetDiskMb())
	}
	elapsed := time.Since(start)
	ev = withMeta(ev, map[string]any{"host_id": h.ID, "template_id": tid, "size_bytes": ns.SizeBytes,
		"duration_ms": elapsed.Milliseconds(), "capsule_status": string(afterStatus), "was": was})
	t, err := s.store.CreateSnapshot(bctx, ns, ev)
	if err != nil {
		fail()
		s.deleteTemplateBestEffort(bctx, h, tid)
		if errors.Is(err, store.ErrNameTaken) {
			return store.Template{}, errorf(NameTaken, "a template called %q was created meanwhile; choose another name", name)
		}
		return store.Template{}, err
	}
	if err := s.store.AddHostTemplate(bctx, h.ID, tid); err != nil {
		// Placement of snapshots does not depend on the list; the next
		// heartbeat sets it anyway.
		s.log.WarnContext(bctx, "adding snapshot to host templates", "host_id", h.ID, "template_id", tid, "err", err)
	}
	observe(s.metrics.Snapshot, true, elapsed)
	s.log.InfoContext(bctx, "snapshot created", "capsule_id", c.ID, "host_id", h.ID, "template_id", tid,
		"duration_ms", elapsed.Milliseconds())
	return t, nil
}

// DeleteSnapshot deletes the team's snapshot name, recording it with ev:
// its row first, then its files on its host. A snapshot still used by
// capsules that are not stopped is TemplateInUse; a base template cannot be
// deleted. Deleting a snapshot that a concurrent call deleted is no error.
func (s *Service) DeleteSnapshot(ctx context.Context, teamID, name string, ev store.Event) error {
	notFound := errorf(TemplateNotFound, "no snapshot called %q (GET /v1/snapshots lists them)", name)
	if !rules.ValidTemplateName(name) {
		return notFound
	}
	t, err := s.store.Template(ctx, teamID, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	if t.Kind == store.TemplateBase || t.TeamID == "" {
		return errorf(Conflict, "%q is a global template; only the team's snapshots and built templates can be deleted", name)
	}
	ctx = context.WithoutCancel(ctx)
	err = s.store.DeleteSnapshot(ctx, teamID, t.ID, withMeta(ev, map[string]any{"name": name}))
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Deleted by a concurrent call: the outcome asked for.
		return nil
	case errors.Is(err, store.ErrTemplateInUse):
		n, _ := s.store.CapsulesUsingTemplate(ctx, t.ID)
		return errorf(TemplateInUse, "snapshot %q is in use by %d capsules that are not stopped; destroy them first", name, n)
	case err != nil:
		return err
	}
	// The files go once the row is committed (see store.DeleteSnapshot):
	// files a failure here leaves are orphans, removed when the host's
	// heartbeat next lists them.
	s.removeSnapshotFiles(ctx, t)
	return nil
}

// removeSnapshotFiles removes deleted snapshot t's files from its host, if
// the host still exists; a failure is logged and left to the orphan
// clean-up of heartbeats.
func (s *Service) removeSnapshotFiles(ctx context.Context, t store.Template) {
	if copyable(t) {
		// Copied to the hosts that needed it: each holds it.
		hosts, err := s.store.HostsWithTemplate(ctx, t.AgentName)
		if err != nil {
			s.log.WarnContext(ctx, "listing the hosts of a deleted template; their heartbeats will report it as an orphan",
				"template_id", t.ID, "err", err)
		}
		for _, h := range hosts {
			s.deleteTemplateBestEffort(ctx, h, t.AgentName)
		}
		return
	}
	if t.HostID == "" {
		return
	}
	h, err := s.store.Host(ctx, t.HostID)
	if errors.Is(err, store.ErrNotFound) {
		return // the host and its disk are gone
	}
	if err == nil {
		err = s.deleteTemplateOnAgent(ctx, h, t.AgentName)
	}
	if err != nil {
		s.log.WarnContext(ctx, "deleting snapshot files on its host; its heartbeats will report them as orphans",
			"host_id", t.HostID, "template_id", t.ID, "err", err)
	}
}

// deleteTemplateBestEffort asks host h to delete template dir and only logs
// a failure.
func (s *Service) deleteTemplateBestEffort(ctx context.Context, h store.Host, dir string) {
	if err := s.deleteTemplateOnAgent(ctx, h, dir); err != nil {
		s.log.WarnContext(ctx, "deleting template on its host", "host_id", h.ID, "template_id", dir, "err", err)
	}
}

func (s *Service) deleteTemplateOnAgent(ctx context.Context, h store.Host, dir string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), destroyTimeout)
	defer cancel()
	_, err := s.agent(h).DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Template: dir}))
	return err
}
