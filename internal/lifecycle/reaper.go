package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// reapBatch bounds how many idle capsules one reaper round pauses.
const reapBatch = 32

// RunReaper pauses capsules idle for longer than their timeout_sec, every
// Deps.ReaperInterval, until ctx ends; it returns nil then. Every replica
// runs one; a PostgreSQL advisory lock lets one act per round.
func (s *Service) RunReaper(ctx context.Context) error {
	t := time.NewTicker(s.reaperEvery)
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
// their timeout_sec and pauses them, all at once, through Pause's own
// code. Another replica holding the reaper's lock is not an error.
func (s *Service) reap(ctx context.Context) error {
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
