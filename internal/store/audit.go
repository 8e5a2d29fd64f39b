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

// AuditLog returns at most limit events of a team, newest first, and with
// withoutTeam also the events that belong to no team (those of shared
// hosts), which only platform admins should see.
func (s *Store) AuditLog(ctx context.Context, teamID string, withoutTeam bool, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id::text, coalesce(team_id::text, ''), actor_type, coalesce(actor_id::text, ''),
		       action, coalesce(resource_id::text, ''), metadata, coalesce(host(ip), ''), created_at
		FROM audit_log
		WHERE team_id = $1 OR ($2 AND team_id IS NULL)
		ORDER BY created_at DESC, id
		LIMIT $3`, teamID, withoutTeam, limit)
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
