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
	ID         string
	TeamID     string
	CreatedBy  string // "" when the creator's account is gone
	Name       string
	Prefix     string
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
}

const apiKeyColumns = `id::text, team_id::text, coalesce(created_by::text, ''), name, prefix, last_used_at, created_at`

func scanAPIKey(row pgx.Row) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.TeamID, &k.CreatedBy, &k.Name, &k.Prefix, &k.LastUsedAt, &k.CreatedAt)
	return k, err
}

// CreateAPIKey stores a key and writes ev (ResourceID filled in).
func (s *Store) CreateAPIKey(ctx context.Context, nk NewAPIKey, ev Event) (APIKey, error) {
	var k APIKey
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		k, err = scanAPIKey(tx.QueryRow(ctx, `
			INSERT INTO api_keys (team_id, created_by, name, prefix, key_hash)
			VALUES ($1, $2, $3, $4, $5)
			RETURNING `+apiKeyColumns, nk.TeamID, nullable(nk.CreatedBy), nk.Name, nk.Prefix, nk.Hash))
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

// APIKeyByHash returns the live key with that hash, or ErrNotFound.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (APIKey, error) {
	k, err := scanAPIKey(s.pool.QueryRow(ctx, `
		SELECT `+apiKeyColumns+` FROM api_keys WHERE key_hash = $1 AND deleted_at IS NULL`, hash))
	if err != nil {
		return APIKey{}, notFound("looking up API key", err)
	}
	return k, nil
}

// TouchAPIKey records that a key was used. It writes at most once a minute
// per key, so that a busy key does not turn every request into a write.
func (s *Store) TouchAPIKey(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE api_keys SET last_used_at = now()
		WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`, id)
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
