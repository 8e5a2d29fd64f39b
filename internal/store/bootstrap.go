package store

import (
	"context"
	"errors"
	"fmt"
)

// ErrBootstrapSpent means the bootstrap token was used already (or a
// platform admin exists), so it makes no one platform admin any more.
var ErrBootstrapSpent = errors.New("bootstrap token spent")

// bootstrapOpen reports whether the bootstrap token may still make a
// platform admin: it was never spent and no platform admin exists.
func bootstrapOpen(ctx context.Context, q querier) (bool, error) {
	var open bool
	err := q.QueryRow(ctx, `
		SELECT NOT EXISTS (SELECT 1 FROM bootstrap)
		   AND NOT EXISTS (SELECT 1 FROM users WHERE is_platform_admin)`).Scan(&open)
	if err != nil {
		return false, fmt.Errorf("looking up bootstrap: %w", err)
	}
	return open, nil
}

// BootstrapOpen reports whether the bootstrap token may still make a
// platform admin (see CreateUser's NewUser.PlatformAdmin).
func (s *Store) BootstrapOpen(ctx context.Context) (bool, error) {
	return bootstrapOpen(ctx, s.pool)
}
