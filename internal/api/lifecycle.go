package api

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// This file holds pause, resume and ping, and the TTL reaper that pauses
// idle capsules through the same code as the API. Every operation first
// claims the capsule with a compare-and-set into a transient status
// (pausing, resuming), so that of concurrent calls exactly one acts; the
// others get 409 with the status they found.

const (
	capsulePauseTimeout  = 2 * time.Minute
	capsuleResumeTimeout = 2 * time.Minute
	// agentProbeTimeout bounds the GetCapsule that finds out what a
	// capsule became after a failed operation.
	agentProbeTimeout = 5 * time.Second
	// staleTransient is how long a capsule may stay starting, pausing or
	// resuming before its host's report settles it: longer than any
	// operation takes, so only the leftovers of a control plane that died
	// mid-operation are touched.
	staleTransient = 10 * time.Minute
	// reapBatch bounds how many idle capsules one reaper round pauses.
	reapBatch = 32
	// defaultReaperInterval applies when the configuration has none.
	defaultReaperInterval = time.Second
)

// wrongStatus is the 409 of an operation that found capsule c in a status
// it cannot act on. The body names the status, and Error.Status carries it.
func wrongStatus(c store.Capsule, want string) *Error {
	var hint string
	switch c.Status {
	case store.CapsulePaused:
		hint = "; resume it first"
	case store.CapsuleRunning:
		hint = "; it is already running"
	case store.CapsulePending, store.CapsuleStarting, store.CapsulePausing, store.CapsuleResuming:
		hint = "; another operation is under way, try again when it is done"
	case store.CapsuleMissing:
		hint = "; its host is not answering"
	case store.CapsuleStopped, store.CapsuleError:
		hint = "; it cannot run again"
	}
	e := errorf(codeConflict, "capsule %s is %s, not %s%s", c.ID, c.Status, want, hint)
	e.Status = c.Status
	return e
}

func (s *server) handlePauseCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		if c.Status != store.CapsuleRunning {
			return wrongStatus(c, store.CapsuleRunning)
		}
		if c.HostID == "" {
			return errorf(codeConflict, "capsule %s has no host any more", c.ID)
		}
		ctx := context.WithoutCancel(r.Context())
		c, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleRunning}, store.CapsulePausing, "")
		if errors.Is(err, store.ErrConflict) {
			return wrongStatus(c, store.CapsuleRunning)
		}
		if err != nil {
			return err
		}
		c, err = s.pauseClaimed(ctx, c, s.event(r, caller(r), "capsule.pause", map[string]any{}))
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

// pauseClaimed pauses capsule c, which the caller moved to pausing, and
// records the outcome with ev (metadata completed). The API and the reaper
// both pause through it. It returns the capsule as recorded and, when it
// did not end up paused, an *Error for the client.
func (s *server) pauseClaimed(ctx context.Context, c store.Capsule, ev store.Event) (store.Capsule, error) {
	start := time.Now()
	h, err := s.hostOf(ctx, c)
	if err != nil {
		s.metrics.pause.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return s.hostLost(ctx, c, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, capsulePauseTimeout)
	res, err := s.capsuleService(h).PauseCapsule(callCtx, connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: c.ID}))
	cancel()
	bctx, cancel := context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		s.metrics.pause.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return s.settleAfterFailure(bctx, c, h, store.CapsulePausing, "pause", err)
	}
	elapsed := time.Since(start)
	bytes := res.Msg.GetCapsule().GetSnapshotBytes()
	ev = withMeta(ev, map[string]any{"host_id": h.ID, "snapshot_bytes": bytes, "duration_ms": elapsed.Milliseconds()})
	pc, err := s.store.MarkCapsulePaused(bctx, c.ID, []string{store.CapsulePausing}, bytes, "", ev)
	if errors.Is(err, store.ErrConflict) {
		// Destroyed, or its host declared lost, while it paused: the row
		// already says what is true now.
		s.metrics.pause.WithLabelValues("error").Observe(elapsed.Seconds())
		return pc, wrongStatus(pc, store.CapsulePausing)
	}
	if err != nil {
		s.metrics.pause.WithLabelValues("error").Observe(elapsed.Seconds())
		return pc, err
	}
	s.metrics.pause.WithLabelValues("ok").Observe(elapsed.Seconds())
	s.log.InfoContext(ctx, "capsule paused", "capsule_id", c.ID, "host_id", h.ID, "snapshot_bytes", bytes,
		"duration_ms", elapsed.Milliseconds())
	return pc, nil
}

func (s *server) handleResumeCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		if c.Status != store.CapsulePaused {
			return wrongStatus(c, store.CapsulePaused)
		}
		ctx := context.WithoutCancel(r.Context())
		c, err = s.store.ClaimResume(ctx, c.ID)
		var full *store.NoCapacityError
		switch {
		case errors.Is(err, store.ErrConflict):
			return wrongStatus(c, store.CapsulePaused)
		case errors.Is(err, store.ErrNoHost):
			return errorf(codeConflict, "capsule %s has no host any more", c.ID)
		case errors.As(err, &full):
			return errorf(codeNoCapacity, "the capsule's host has no room for its %d vCPUs and %d MB now (at most %d vCPUs and %d MB free); free some, or try later",
				full.VCPUs, full.MemoryMB, full.FreeVCPUs, full.FreeMemoryMB)
		case err != nil:
			return err
		}
		c, err = s.resumeClaimed(ctx, c, s.event(r, caller(r), "capsule.resume", map[string]any{}))
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

// resumeClaimed resumes capsule c, which the caller moved to resuming, and
// records the outcome with ev, as pauseClaimed does for pauses.
func (s *server) resumeClaimed(ctx context.Context, c store.Capsule, ev store.Event) (store.Capsule, error) {
	start := time.Now()
	h, err := s.hostOf(ctx, c)
	if err != nil {
		s.metrics.resume.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return s.hostLost(ctx, c, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, capsuleResumeTimeout)
	_, err = s.capsuleService(h).ResumeCapsule(callCtx, connect.NewRequest(&hostagentv1.ResumeCapsuleRequest{CapsuleId: c.ID}))
	cancel()
	bctx, cancel := context.WithTimeout(ctx, bookkeepingTimeout)
	defer cancel()
	if err != nil {
		s.metrics.resume.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return s.settleAfterFailure(bctx, c, h, store.CapsuleResuming, "resume", err)
	}
	elapsed := time.Since(start)
	ev = withMeta(ev, map[string]any{"host_id": h.ID, "duration_ms": elapsed.Milliseconds()})
	rc, err := s.store.SetCapsuleStatus(bctx, c.ID, []string{store.CapsuleResuming}, store.CapsuleRunning, "", ev)
	if errors.Is(err, store.ErrConflict) {
		s.metrics.resume.WithLabelValues("error").Observe(elapsed.Seconds())
		return rc, wrongStatus(rc, store.CapsuleResuming)
	}
	if err != nil {
		s.metrics.resume.WithLabelValues("error").Observe(elapsed.Seconds())
		return rc, err
	}
	s.metrics.resume.WithLabelValues("ok").Observe(elapsed.Seconds())
	s.log.InfoContext(ctx, "capsule resumed", "capsule_id", c.ID, "host_id", h.ID, "duration_ms", elapsed.Milliseconds())
	return rc, nil
}

// hostOf returns capsule c's host; ErrNotFound when it has none.
func (s *server) hostOf(ctx context.Context, c store.Capsule) (store.Host, error) {
	if c.HostID == "" {
		return store.Host{}, store.ErrNotFound
	}
	return s.store.Host(ctx, c.HostID)
}

// hostLost records that capsule c, in a transient status, cannot be
// operated on because its host row is gone (err is ErrNotFound) or could
// not be read.
func (s *server) hostLost(ctx context.Context, c store.Capsule, err error) (store.Capsule, error) {
	if !errors.Is(err, store.ErrNotFound) {
		// The database failed: leave the transient status for
		// reconciliation rather than guess.
		return c, err
	}
	fc, serr := s.store.SetCapsuleStatus(ctx, c.ID, []string{c.Status}, store.CapsuleError, "its host was deleted")
	if serr != nil && !errors.Is(serr, store.ErrConflict) {
		return c, serr
	}
	return fc, errorf(codeConflict, "capsule %s has no host any more", c.ID)
}

// settleAfterFailure records what capsule c, left in status from by a
// failed op, truly is: it asks the agent. Running or paused there, it is
// recorded so, with the failure as its reason; gone or stopped there, it is
// in error; and when the agent cannot be reached at all (or reports a
// status of its own) the transient status stays for reconciliation to
// settle when the host next reports. It returns
// the capsule as recorded and the client's error.
func (s *server) settleAfterFailure(ctx context.Context, c store.Capsule, h store.Host, from, op string, callErr error) (store.Capsule, error) {
	apiErr, reason := agentFailure(op+" the capsule", callErr)
	s.log.WarnContext(ctx, "capsule "+op+" failed", "capsule_id", c.ID, "host_id", h.ID, "err", callErr)
	pctx, cancel := context.WithTimeout(ctx, agentProbeTimeout)
	got, gerr := s.capsuleService(h).GetCapsule(pctx, connect.NewRequest(&hostagentv1.GetCapsuleRequest{CapsuleId: c.ID}))
	cancel()
	var (
		fc  store.Capsule
		err error
	)
	var reported capsule.Status
	if gerr == nil {
		reported = capsule.StatusOf(got.Msg.GetCapsule())
	}
	switch {
	case gerr == nil && reported == capsule.Running:
		fc, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{from}, store.CapsuleRunning, op+" failed: "+reason)
	case gerr == nil && reported == capsule.Paused:
		fc, err = s.store.MarkCapsulePaused(ctx, c.ID, []string{from}, got.Msg.GetCapsule().GetSnapshotBytes(), op+" failed: "+reason)
	case (gerr == nil && reported == capsule.Stopped) || connect.CodeOf(gerr) == connect.CodeNotFound:
		fc, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{from}, store.CapsuleError,
			op+" failed and its host no longer has the capsule: "+reason)
		if apiErr.Code == codeConflict {
			apiErr.Code = codeAgentError
		}
	default:
		// Unreachable, or in a status of its own that the agent will
		// report as running, paused or stopped later.
		s.log.WarnContext(ctx, "asking the agent about a capsule after a failure", "capsule_id", c.ID, "host_id", h.ID, "err", gerr)
		lc, err := s.store.LeaveToHost(ctx, c.ID, from, op+" failed and its host could not be asked what became of the capsule; its next heartbeat settles it: "+reason)
		if err != nil && !errors.Is(err, store.ErrConflict) {
			s.log.ErrorContext(ctx, "recording capsule "+op+" failure", "capsule_id", c.ID, "err", err)
			lc = c
		}
		apiErr.Status = lc.Status
		return lc, apiErr
	}
	if err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.ErrorContext(ctx, "recording capsule "+op+" failure", "capsule_id", c.ID, "err", err)
		return c, apiErr
	}
	apiErr.Status = fc.Status
	return fc, apiErr
}

// withMeta returns ev with extra added to its metadata.
func withMeta(ev store.Event, extra map[string]any) store.Event {
	m := make(map[string]any, len(ev.Metadata)+len(extra))
	for k, v := range ev.Metadata {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	ev.Metadata = m
	return ev
}

func (s *server) handlePingCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		c, err = s.store.PingCapsule(r.Context(), c.ID)
		if errors.Is(err, store.ErrConflict) {
			return wrongStatus(c, store.CapsuleRunning)
		}
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

// runReaper pauses idle capsules every interval until ctx ends.
func (s *server) runReaper(ctx context.Context) error {
	interval := s.cfg.ReaperInterval
	if interval <= 0 {
		interval = defaultReaperInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.reap(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "reaper round failed", "err", err)
			}
		}
	}
}

// reap runs one reaper round: it claims the capsules idle for longer than
// their timeout_sec and pauses them, all at once, through the API's pause.
// Another replica holding the reaper's lock is not an error.
func (s *server) reap(ctx context.Context) error {
	cs, err := s.store.ClaimIdleCapsules(ctx, reapBatch)
	if errors.Is(err, store.ErrLocked) {
		return nil
	}
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			ev := store.Event{TeamID: c.TeamID, ActorType: store.ActorSystem, Action: "capsule.pause",
				Metadata: map[string]any{"reason": "ttl", "timeout_sec": c.TimeoutSec}}
			// Detached: a shutting-down reaper still records how the
			// pauses it started ended.
			if _, err := s.pauseClaimed(context.WithoutCancel(ctx), c, ev); err != nil {
				s.log.WarnContext(ctx, "pausing idle capsule", "capsule_id", c.ID, "err", err)
				return
			}
			s.log.InfoContext(ctx, "idle capsule paused", "capsule_id", c.ID, "timeout_sec", c.TimeoutSec)
		})
	}
	wg.Wait()
	return nil
}
