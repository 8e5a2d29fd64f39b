package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// LoginLockout is the policy for failed logins of one account: after
// MaxFailures failures in a row, each further failure locks the account
// out for Base, doubled per failure beyond MaxFailures, up to Max. Failures
// older than Forget no longer count.
type LoginLockout struct {
	MaxFailures int
	Base        time.Duration
	Max         time.Duration
	Forget      time.Duration
}

// lockFor returns how long the failures-th failure in a row locks out.
func (p LoginLockout) lockFor(failures int) time.Duration {
	if failures < p.MaxFailures {
		return 0
	}
	d := p.Base
	for i := p.MaxFailures; i < failures && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// LoginLockedFor returns how long logins to the account with that email
// digest stay refused; 0 when they are allowed. Accounts that do not exist
// are counted like the others, so that a lockout says nothing about whether
// an account exists.
func (s *Store) LoginLockedFor(ctx context.Context, emailHash string) (time.Duration, error) {
	var ms int64
	err := s.pool.QueryRow(ctx, `
		SELECT coalesce(greatest(0, ceil(extract(epoch FROM locked_until - now()) * 1000)), 0)::bigint
		FROM login_failures WHERE email_hash = $1`, emailHash).Scan(&ms)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("looking up login failures: %w", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// RecordLoginFailure counts a failed login for that email digest and
// returns how long it locks the account out (0: not yet). Rows that no
// longer count are deleted on the way.
func (s *Store) RecordLoginFailure(ctx context.Context, emailHash string, p LoginLockout) (time.Duration, error) {
	var lock time.Duration
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			DELETE FROM login_failures
			WHERE last_failure_at < now() - make_interval(secs => $1)
			  AND (locked_until IS NULL OR locked_until < now())`, p.Forget.Seconds()); err != nil {
			return err
		}
		var failures int
		if err := tx.QueryRow(ctx, `
			INSERT INTO login_failures AS f (email_hash, failures, last_failure_at)
			VALUES ($1, 1, now())
			ON CONFLICT (email_hash) DO UPDATE SET
				failures = CASE WHEN f.last_failure_at < now() - make_interval(secs => $2) THEN 1 ELSE f.failures + 1 END,
				last_failure_at = now()
			RETURNING failures`, emailHash, p.Forget.Seconds()).Scan(&failures); err != nil {
			return err
		}
		lock = p.lockFor(failures)
		if lock == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `
			UPDATE login_failures SET locked_until = now() + make_interval(secs => $2)
			WHERE email_hash = $1`, emailHash, lock.Seconds())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("recording login failure: %w", err)
	}
	return lock, nil
}

// ClearLoginFailures forgets the failed logins of that email digest, after
// a successful login.
func (s *Store) ClearLoginFailures(ctx context.Context, emailHash string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM login_failures WHERE email_hash = $1`, emailHash); err != nil {
		return fmt.Errorf("clearing login failures: %w", err)
	}
	return nil
}
