package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// capsuleTouchEvery is how stale last_active_at may be before a use
// rewrites it: the TTL reaper counts in seconds, and a burst of commands
// should not become a burst of row updates.
const capsuleTouchEvery = time.Second

// TouchCapsule records that capsule id was just used (a command, a file
// operation, an open terminal), which keeps the TTL reaper away from it.
// An unknown id is not an error: the capsule may have just been deleted.
func (s *Store) TouchCapsule(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE capsules SET last_active_at = now()
		WHERE id = $1 AND last_active_at < now() - make_interval(secs => $2)`,
		id, capsuleTouchEvery.Seconds())
	if err != nil {
		return fmt.Errorf("recording capsule activity: %w", err)
	}
	return nil
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
			WHERE id = $1 AND last_active_at < now() - make_interval(secs => $2)
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
