package lifecycle

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// Pause claims running capsule c (running → pausing) and pauses it on its
// host, recording the outcome with ev. It returns the capsule as recorded;
// it is paused only when the error is nil, which the host acknowledges
// once the saved state is durable.
func (s *Service) Pause(ctx context.Context, c store.Capsule, ev store.Event) (store.Capsule, error) {
	if c.Status != store.CapsuleRunning {
		return c, wrongStatus(c, store.CapsuleRunning)
	}
	if c.HostID == "" {
		return c, noHost(c)
	}
	// The reaper pauses idle capsules whatever the quota: a pause frees
	// CPU and memory, and disk_mb counts paused capsules anyway.
	if err := s.store.CheckPausedQuota(ctx, c.TeamID, s.quota); err != nil {
		return c, quotaError(err, "pausing it")
	}
	ctx = context.WithoutCancel(ctx)
	c, err := s.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleRunning}, store.CapsulePausing, "")
	if errors.Is(err, store.ErrConflict) {
		return c, wrongStatus(c, store.CapsuleRunning)
	}
	if err != nil {
		return c, err
	}
	return s.pauseClaimed(ctx, c, ev)
}

// pauseClaimed pauses capsule c, which the caller moved to pausing, and
// records the outcome with ev (metadata completed). Pause and the reaper
// both pause through it.
func (s *Service) pauseClaimed(ctx context.Context, c store.Capsule, ev store.Event) (store.Capsule, error) {
	start := time.Now()
	h, err := s.hostOf(ctx, c)
	if err != nil {
		observe(s.metrics.Pause, false, time.Since(start))
		return s.hostLost(ctx, c, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, pauseTimeout)
	res, err := s.agent(h).PauseCapsule(callCtx, connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: c.ID}))
	cancel()
	bctx, cancel := context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		observe(s.metrics.Pause, false, time.Since(start))
		return s.settleAfterFailure(bctx, c, h, store.CapsulePausing, "pause", err)
	}
	elapsed := time.Since(start)
	bytes := res.Msg.GetCapsule().GetSnapshotBytes()
	ev = withMeta(ev, map[string]any{"host_id": h.ID, "snapshot_bytes": bytes, "duration_ms": elapsed.Milliseconds()})
	pc, err := s.store.MarkCapsulePaused(bctx, c.ID, []string{store.CapsulePausing}, bytes, "", ev)
	if errors.Is(err, store.ErrConflict) {
		// Destroyed, or its host declared lost, while it paused: the row
		// already says what is true now.
		observe(s.metrics.Pause, false, elapsed)
		return pc, wrongStatus(pc, store.CapsulePausing)
	}
	if err != nil {
		observe(s.metrics.Pause, false, elapsed)
		return pc, err
	}
	observe(s.metrics.Pause, true, elapsed)
	s.log.InfoContext(ctx, "capsule paused", "capsule_id", c.ID, "host_id", h.ID, "snapshot_bytes", bytes,
		"duration_ms", elapsed.Milliseconds())
	return pc, nil
}

// Resume claims paused capsule c (paused → resuming, its resources taken
// on its host again) and resumes it there, recording the outcome with ev.
func (s *Service) Resume(ctx context.Context, c store.Capsule, ev store.Event) (store.Capsule, error) {
	if c.Status != store.CapsulePaused {
		return c, wrongStatus(c, store.CapsulePaused)
	}
	ctx = context.WithoutCancel(ctx)
	c, err := s.store.ClaimResume(ctx, c.ID, s.quota)
	var full *store.NoCapacityError
	switch {
	case errors.Is(err, store.ErrConflict):
		return c, wrongStatus(c, store.CapsulePaused)
	case errors.Is(err, store.ErrNoHost):
		return c, noHost(c)
	case errors.As(err, &full):
		return c, errorf(NoCapacity, "the capsule's host has no room for its %d vCPUs and %d MB now (at most %d vCPUs and %d MB free); free some, or try later",
			full.VCPUs, full.MemoryMB, full.FreeVCPUs, full.FreeMemoryMB)
	case err != nil:
		return c, quotaError(err, "resuming it")
	}
	start := time.Now()
	h, err := s.hostOf(ctx, c)
	if err != nil {
		observe(s.metrics.Resume, false, time.Since(start))
		return s.hostLost(ctx, c, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, resumeTimeout)
	_, err = s.agent(h).ResumeCapsule(callCtx, connect.NewRequest(&hostagentv1.ResumeCapsuleRequest{CapsuleId: c.ID}))
	cancel()
	bctx, cancel := context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		observe(s.metrics.Resume, false, time.Since(start))
		return s.settleAfterFailure(bctx, c, h, store.CapsuleResuming, "resume", err)
	}
	elapsed := time.Since(start)
	ev = withMeta(ev, map[string]any{"host_id": h.ID, "duration_ms": elapsed.Milliseconds()})
	rc, err := s.store.SetCapsuleStatus(bctx, c.ID, []string{store.CapsuleResuming}, store.CapsuleRunning, "", ev)
	if errors.Is(err, store.ErrConflict) {
		observe(s.metrics.Resume, false, elapsed)
		return rc, wrongStatus(rc, store.CapsuleResuming)
	}
	if err != nil {
		observe(s.metrics.Resume, false, elapsed)
		return rc, err
	}
	observe(s.metrics.Resume, true, elapsed)
	s.log.InfoContext(ctx, "capsule resumed", "capsule_id", c.ID, "host_id", h.ID, "duration_ms", elapsed.Milliseconds())
	return rc, nil
}

// Ping marks running capsule c active now, which puts off its pause by the
// reaper.
func (s *Service) Ping(ctx context.Context, c store.Capsule) (store.Capsule, error) {
	c, err := s.store.PingCapsule(ctx, c.ID)
	if errors.Is(err, store.ErrConflict) {
		return c, wrongStatus(c, store.CapsuleRunning)
	}
	return c, err
}
