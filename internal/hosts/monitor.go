// Package hosts runs the control plane's host monitor: the periodic job that
// marks hosts unreachable when their heartbeats stop. Heartbeats themselves
// bring a host back online (internal/api).
package hosts

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// Monitor marks online hosts whose last heartbeat is older than Timeout
// unreachable, every Interval. Every replica runs one; a PostgreSQL advisory
// lock lets only one of them act per round. Its fields must not change once
// Run has started; Check is safe to call concurrently with Run.
type Monitor struct {
	Store    *store.Store
	Log      *slog.Logger
	Interval time.Duration
	Timeout  time.Duration
}

// Run checks every Interval until ctx is done; it returns nil then. A failed
// round is logged and the next one tried, so that a database blip does not
// stop the monitor for good.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := m.Check(ctx); err != nil && ctx.Err() == nil {
				m.Log.WarnContext(ctx, "host monitor round failed", "err", err)
			}
		}
	}
}

// Check runs one round. Another replica holding the lock is not an error.
func (m *Monitor) Check(ctx context.Context) error {
	ids, err := m.Store.MarkUnreachable(ctx, m.Timeout)
	if errors.Is(err, store.ErrLocked) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, id := range ids {
		m.Log.InfoContext(ctx, "host unreachable", "host_id", id, "timeout", m.Timeout.String())
	}
	return nil
}
