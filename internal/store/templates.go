package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Template kinds.
const (
	TemplateBase     = "base"
	TemplateSnapshot = "snapshot"
)

// Template is what capsules start from: a global base image (TeamID "") or
// a team's snapshot.
type Template struct {
	ID              string
	Name            string
	TeamID          string
	Kind            string
	Description     string
	SizeBytes       int64
	DefaultVCPUs    int
	DefaultMemoryMB int
	DefaultDiskMB   int
	CreatedAt       time.Time
}

const templateColumns = `id::text, name, coalesce(team_id::text, ''), kind, description, size_bytes,
	default_vcpus, default_memory_mb, default_disk_mb, created_at`

func scanTemplate(row pgx.Row) (Template, error) {
	var t Template
	err := row.Scan(&t.ID, &t.Name, &t.TeamID, &t.Kind, &t.Description, &t.SizeBytes,
		&t.DefaultVCPUs, &t.DefaultMemoryMB, &t.DefaultDiskMB, &t.CreatedAt)
	return t, err
}

// Templates lists the templates team teamID can start capsules from: the
// global ones and the team's own, by name. A team template that has the name
// of a global one hides it.
func (s *Store) Templates(ctx context.Context, teamID string) ([]Template, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT DISTINCT ON (name) `+templateColumns+` FROM templates
		WHERE team_id IS NULL OR team_id = $1
		ORDER BY name, team_id NULLS LAST`, teamID)
	if err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Template, error) { return scanTemplate(row) })
	if err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	return out, nil
}

// Template returns the template called name that team teamID can use (its
// own before a global one), or ErrNotFound.
func (s *Store) Template(ctx context.Context, teamID, name string) (Template, error) {
	t, err := scanTemplate(s.pool.QueryRow(ctx, `
		SELECT `+templateColumns+` FROM templates
		WHERE name = $2 AND (team_id IS NULL OR team_id = $1)
		ORDER BY team_id NULLS LAST LIMIT 1`, teamID, name))
	if err != nil {
		return Template{}, notFound("looking up template", err)
	}
	return t, nil
}
