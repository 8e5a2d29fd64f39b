package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Actor types for audit events.
const (
	ActorUser   = "user"
	ActorAPIKey = "api_key"
	ActorHost   = "host"
	ActorSystem = "system"
)

// Event is one audit log row. Empty strings are stored as NULL.
type Event struct {
	TeamID     string
	ActorType  string
	ActorID    string
	Action     string
	ResourceID string
	Metadata   map[string]any
	IP         string
}

// AuditEntry is an Event as stored.
type AuditEntry struct {
	Event
	ID        string
	CreatedAt time.Time
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func writeEvent(ctx context.Context, q querier, ev Event) error {
	meta := ev.Metadata
	if meta == nil {
		meta = map[string]any{}
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encoding audit metadata: %w", err)
	}
	_, err = q.Exec(ctx, `
		INSERT INTO audit_log (team_id, actor_type, actor_id, action, resource_id, metadata, ip)
		VALUES ($1, $2, $3, $4, $5, $6, $7::inet)`,
		nullable(ev.TeamID), ev.ActorType, nullable(ev.ActorID), ev.Action,
		nullable(ev.ResourceID), b, nullable(ev.IP))
	if err != nil {
		return fmt.Errorf("writing audit event %s: %w", ev.Action, err)
	}
	return nil
}

// Audit records ev on its own, for actions that change nothing else (login).
func (s *Store) Audit(ctx context.Context, ev Event) error {
	return writeEvent(ctx, s.pool, ev)
}

// AuditFilter narrows AuditLog. Empty fields do not filter.
type AuditFilter struct {
	// Action is an exact action, or with ActionPrefix the start of one
	// ("capsule." matches capsule.create, capsule.pause, …).
	Action       string
	ActionPrefix bool
	ActorType    string
	ResourceID   string // a UUID
	// Before is the id of an entry: only entries after it in the log's
	// order (older ones) are returned. An id the caller cannot see returns
	// ErrNotFound.
	Before string
}

// AuditLog returns at most limit events of a team that match f, newest
// first (ties by id, descending), and with withoutTeam also the events that
// belong to no team (those of shared hosts), which only platform admins
// should see.
func (s *Store) AuditLog(ctx context.Context, teamID string, withoutTeam bool, f AuditFilter, limit int) ([]AuditEntry, error) {
	const visible = `(team_id = $1 OR ($2 AND team_id IS NULL))`
	var cursorAt *time.Time
	if f.Before != "" {
		var at time.Time
		err := s.pool.QueryRow(ctx, `SELECT created_at FROM audit_log WHERE id = $3 AND `+visible, teamID, withoutTeam, f.Before).Scan(&at)
		if err != nil {
			return nil, notFound("finding audit log cursor", err)
		}
		cursorAt = &at
	}
	action := f.Action
	if f.ActionPrefix {
		action = ""
	}
	prefix := ""
	if f.ActionPrefix {
		prefix = f.Action
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id::text, coalesce(team_id::text, ''), actor_type, coalesce(actor_id::text, ''),
		       action, coalesce(resource_id::text, ''), metadata, coalesce(host(ip), ''), created_at
		FROM audit_log
		WHERE `+visible+`
		  AND ($4 = '' OR action = $4)
		  AND ($5 = '' OR starts_with(action, $5))
		  AND ($6 = '' OR actor_type = $6)
		  AND ($7::uuid IS NULL OR resource_id = $7)
		  AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9::uuid))
		ORDER BY created_at DESC, id DESC
		LIMIT $3`, teamID, withoutTeam, limit, action, prefix, f.ActorType, nullable(f.ResourceID), cursorAt, nullable(f.Before))
	if err != nil {
		return nil, fmt.Errorf("listing audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := row.Scan(&e.ID, &e.TeamID, &e.ActorType, &e.ActorID, &e.Action, &e.ResourceID, &e.Metadata, &e.IP, &e.CreatedAt)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing audit log: %w", err)
	}
	return out, nil
}
