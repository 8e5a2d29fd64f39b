package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// APIKey is a team's API key as stored; the key itself is never stored, only
// its hash.
type APIKey struct {
	ID        string
	TeamID    string
	CreatedBy string // "" when the creator's account is gone
	Name      string
	Prefix    string
	// Scopes are what the key may do (auth.AllScopes names them).
	Scopes     []string
	LastUsedAt *time.Time
	CreatedAt  time.Time
}

// NewAPIKey is what creating a key stores.
type NewAPIKey struct {
	TeamID    string
	CreatedBy string
	Name      string
	Prefix    string
	Hash      string
	Scopes    []string
}

const apiKeyColumns = `id::text, team_id::text, coalesce(created_by::text, ''), name, prefix, scopes, last_used_at, created_at`

// scanAPIKey scans apiKeyColumns, then extra.
func scanAPIKey(row pgx.Row, extra ...any) (APIKey, error) {
	var k APIKey
	err := row.Scan(append([]any{&k.ID, &k.TeamID, &k.CreatedBy, &k.Name, &k.Prefix, &k.Scopes, &k.LastUsedAt, &k.CreatedAt}, extra...)...)
	return k, err
}

// CreateAPIKey stores a key and writes ev (ResourceID filled in).
func (s *Store) CreateAPIKey(ctx context.Context, nk NewAPIKey, ev Event) (APIKey, error) {
	var k APIKey
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		k, err = scanAPIKey(tx.QueryRow(ctx, `
			INSERT INTO api_keys (team_id, created_by, name, prefix, key_hash, scopes)
			VALUES ($1, $2, $3, $4, $5, $6)
			RETURNING `+apiKeyColumns, nk.TeamID, nullable(nk.CreatedBy), nk.Name, nk.Prefix, nk.Hash, nk.Scopes))
		if err != nil {
			return err
		}
		ev.ResourceID = k.ID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return APIKey{}, fmt.Errorf("creating API key: %w", err)
	}
	return k, nil
}

// APIKeys lists a team's live keys, newest first.
func (s *Store) APIKeys(ctx context.Context, teamID string) ([]APIKey, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+apiKeyColumns+` FROM api_keys
		WHERE team_id = $1 AND deleted_at IS NULL
		ORDER BY created_at DESC, id`, teamID)
	if err != nil {
		return nil, fmt.Errorf("listing API keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (APIKey, error) { return scanAPIKey(row) })
	if err != nil {
		return nil, fmt.Errorf("listing API keys: %w", err)
	}
	return keys, nil
}

// APIKeyByHash returns the live key with that hash and whether its creator
// is a platform admin now (false when the creator's account is gone), or
// ErrNotFound. It is the one query that authenticates a request by key.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (APIKey, bool, error) {
	var admin bool
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `
		SELECT `+apiKeyColumns+`,
		       coalesce((SELECT is_platform_admin FROM users WHERE id = api_keys.created_by), false)
		FROM api_keys WHERE key_hash = $1 AND deleted_at IS NULL`, hash), &admin)
	if err != nil {
		return APIKey{}, false, notFound("looking up API key", err)
	}
	return k, admin, nil
}

// apiKeyTouchEvery is how stale last_used_at may get: a busy key is written
// at most once per period, not on every request.
const apiKeyTouchEvery = time.Minute

// TouchAPIKey records that k, as read by APIKeyByHash, was just used. When
// k.LastUsedAt is recent it does nothing, without a round trip.
func (s *Store) TouchAPIKey(ctx context.Context, k APIKey) error {
	if k.LastUsedAt != nil && time.Since(*k.LastUsedAt) < apiKeyTouchEvery {
		return nil
	}
	_, err := s.pool.Exec(ctx, `
		UPDATE api_keys SET last_used_at = now()
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))`,
		k.ID, apiKeyTouchEvery.Seconds())
	if err != nil {
		return fmt.Errorf("recording API key use: %w", err)
	}
	return nil
}

// DeleteAPIKey deletes a team's key and writes ev; a key of another team, or
// one already deleted, returns ErrNotFound.
func (s *Store) DeleteAPIKey(ctx context.Context, teamID, id string, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			UPDATE api_keys SET deleted_at = now()
			WHERE id = $1 AND team_id = $2 AND deleted_at IS NULL`, id, teamID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		ev.ResourceID = id
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return fmt.Errorf("deleting API key: %w", err)
	}
	return nil
}
