package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// capsuleTouchEvery is how stale last_active_at may be before a use
// rewrites it: the TTL reaper counts in seconds, and a burst of commands
// should not become a burst of row updates. A capsule with a shorter
// timeout is rewritten after a quarter of it (touchSkipSQL): skipping a
// whole second of touches would let a 1 s timeout expire under a capsule
// in use.
const capsuleTouchEvery = time.Second

// touchSkipSQL is the condition under which a touch rewrites
// last_active_at, with $2 the seconds of capsuleTouchEvery.
const touchSkipSQL = `last_active_at < now() - make_interval(secs => CASE WHEN timeout_sec > 0
	THEN least($2, timeout_sec / 4.0) ELSE $2 END)`

// TouchCapsule records that capsule id was just used (a command, a file
// operation, an open terminal), which keeps the TTL reaper away from it.
// An unknown id is not an error: the capsule may have just been deleted.
func (s *Store) TouchCapsule(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE capsules SET last_active_at = now()
		WHERE id = $1 AND `+touchSkipSQL,
		id, capsuleTouchEvery.Seconds())
	if err != nil {
		return fmt.Errorf("recording capsule activity: %w", err)
	}
	return nil
}

// StartCapsuleUse records that an operation which may outlast the
// capsule's idle timeout (a foreground command, a transfer) begins on
// capsule id, and reports false when the capsule is no longer running.
// Unlike TouchCapsule it always writes, so that it and the TTL reaper's
// claim are ordered by the row's lock: either the reaper claimed the
// capsule first and the operation is refused, or the operation's touch
// came first and the reaper finds the capsule in use.
func (s *Store) StartCapsuleUse(ctx context.Context, id string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE capsules SET last_active_at = now()
		WHERE id = $1 AND status = 'running'`, id)
	if err != nil {
		return false, fmt.Errorf("recording capsule activity: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// RecordCapsuleUse touches capsule id as TouchCapsule does and writes ev,
// in one round trip: it runs after every command and file operation, on
// the path whose latency users feel.
func (s *Store) RecordCapsuleUse(ctx context.Context, id string, ev Event) error {
	meta := ev.Metadata
	if meta == nil {
		meta = map[string]any{}
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encoding audit metadata: %w", err)
	}
	_, err = s.pool.Exec(ctx, `
		WITH touched AS (
			UPDATE capsules SET last_active_at = now()
			WHERE id = $1 AND `+touchSkipSQL+`
		)
		INSERT INTO audit_log (team_id, actor_type, actor_id, action, resource_id, metadata, ip)
		VALUES ($3, $4, $5, $6, $7, $8, $9::inet)`,
		id, capsuleTouchEvery.Seconds(),
		nullable(ev.TeamID), ev.ActorType, nullable(ev.ActorID), ev.Action,
		nullable(ev.ResourceID), b, nullable(ev.IP))
	if err != nil {
		return fmt.Errorf("recording capsule use (%s): %w", ev.Action, err)
	}
	return nil
}

// reaperLock is the advisory lock that lets one replica at a time run the
// TTL reaper.
const reaperLock = 0x5772656e6e03 // "Wrenn" 3

// ClaimIdleCapsules moves up to limit running capsules that have been idle
// for longer than their timeout_sec (0: never) to pausing and returns them:
// the caller pauses them. Claiming is the compare-and-set of a pause, so a
// concurrent pause or destroy of the same capsule sees pausing and gets a
// conflict. It returns ErrLocked without doing anything while another
// replica runs it.
func (s *Store) ClaimIdleCapsules(ctx context.Context, limit int) ([]Capsule, error) {
	var out []Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, reaperLock).Scan(&locked); err != nil {
			return err
		}
		if !locked {
			return ErrLocked
		}
		rows, err := tx.Query(ctx, `
			UPDATE capsules SET status = 'pausing', status_reason = '', updated_at = now(), settle_from_host = false
			WHERE id IN (
				SELECT id FROM capsules
				WHERE status = 'running' AND timeout_sec > 0
				  AND last_active_at < now() - make_interval(secs => timeout_sec)
				ORDER BY last_active_at
				LIMIT $1
				FOR UPDATE SKIP LOCKED)
			  AND status = 'running'
			RETURNING `+capsuleColumns, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Capsule, error) { return scanCapsule(row) })
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claiming idle capsules: %w", err)
	}
	return out, nil
}
