package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

// Template kinds (and TemplateImage, builds.go).
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
	// HostID is the host a snapshot lives on ("" for base templates, or
	// when that host was deleted).
	HostID          string
	SourceCapsuleID string
	// AgentName is the template's directory on hosts.
	AgentName string
	// Network is the egress policy a snapshot passes on to capsules
	// launched from it that ask for none: its source capsule's when it
	// was taken (nil: the open policy; always nil for base templates).
	Network *egress.Policy
	// BuildMS is how long the build that made it took (0: not built by
	// a build job); Config what the build recorded (JSON object: env,
	// user, workdir, start, expose).
	BuildMS int64
	Config  json.RawMessage
}

const templateColumns = `id::text, name, coalesce(team_id::text, ''), kind, description, size_bytes,
	default_vcpus, default_memory_mb, default_disk_mb, created_at, coalesce(host_id::text, ''),
	coalesce(source_capsule_id::text, ''), agent_name, network_policy, coalesce(build_ms, 0), config`

func scanTemplate(row pgx.Row) (Template, error) {
	var t Template
	err := row.Scan(&t.ID, &t.Name, &t.TeamID, &t.Kind, &t.Description, &t.SizeBytes,
		&t.DefaultVCPUs, &t.DefaultMemoryMB, &t.DefaultDiskMB, &t.CreatedAt, &t.HostID, &t.SourceCapsuleID,
		&t.AgentName, &t.Network, &t.BuildMS, &t.Config)
	if err == nil && t.AgentName == "" {
		t.AgentName = t.Name
	}
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

// NewSnapshot is a snapshot template about to be written on a host. Its id
// is chosen before the agent writes it, because the id is its directory.
type NewSnapshot struct {
	ID              string
	Name            string
	TeamID          string
	HostID          string
	SourceCapsuleID string
	VCPUs           int
	MemoryMB        int
	DiskMB          int
	SizeBytes       int64
}

// ErrNameTaken means a template of that name already exists for the team
// (or globally).
var ErrNameTaken = errors.New("template name taken")

// CreateSnapshot records a snapshot template with ev (resource filled in).
// A name the team or a base template already has is ErrNameTaken.
func (s *Store) CreateSnapshot(ctx context.Context, ns NewSnapshot, ev Event) (Template, error) {
	var t Template
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Serializes creations of one name, so that the global check
		// below cannot miss a concurrent base template (never created at
		// run time, but cheap to be sure of).
		var taken bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM templates WHERE name = $1 AND team_id IS NULL)`,
			ns.Name).Scan(&taken); err != nil {
			return err
		}
		if taken {
			return ErrNameTaken
		}
		var err error
		t, err = scanTemplate(tx.QueryRow(ctx, `
			INSERT INTO templates (id, name, team_id, kind, size_bytes, default_vcpus, default_memory_mb,
			                       default_disk_mb, host_id, source_capsule_id, agent_name, description,
			                       network_policy)
			VALUES ($1, $2, $3, 'snapshot', $4, $5, $6, $7, $8, $9, $10, $11,
			        (SELECT network_policy FROM capsules WHERE id = $9))
			RETURNING `+templateColumns, ns.ID, ns.Name, ns.TeamID, ns.SizeBytes, ns.VCPUs, ns.MemoryMB, ns.DiskMB,
			ns.HostID, ns.SourceCapsuleID, ns.ID, "snapshot of capsule "+ns.SourceCapsuleID))
		if isUniqueViolation(err) {
			return ErrNameTaken
		}
		if err != nil {
			return err
		}
		ev.ResourceID = t.ID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Template{}, fmt.Errorf("recording snapshot: %w", err)
	}
	return t, nil
}

// NameTaken reports whether team teamID cannot give a new snapshot the
// name name: a base template or one of its own has it.
func (s *Store) NameTaken(ctx context.Context, teamID, name string) (bool, error) {
	var taken bool
	err := s.pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM templates WHERE name = $2 AND (team_id IS NULL OR team_id = $1))`,
		teamID, name).Scan(&taken)
	if err != nil {
		return false, fmt.Errorf("checking template name: %w", err)
	}
	return taken, nil
}

// ErrTemplateInUse means capsules that are not stopped started from the
// template.
var ErrTemplateInUse = errors.New("template in use")

// ErrTemplateGone means the template a capsule was to be created from was
// deleted meanwhile.
var ErrTemplateGone = errors.New("template deleted")

// DeleteSnapshot deletes team teamID's snapshot or image template id and writes ev,
// unless a capsule that is not stopped started from it (ErrTemplateInUse,
// wrapped with how many). An unknown id is ErrNotFound.
//
// The template's files are the caller's to remove, after DeleteSnapshot
// returns: removed inside the transaction, a failed commit would leave a
// row without files. Once the row is gone no capsule can be created from
// it (a create locks the row FOR SHARE, so one under way waits for this
// deletion and then finds it gone, ErrTemplateGone), and files whose
// removal fails are found again as orphans (OrphanTemplates).
func (s *Store) DeleteSnapshot(ctx context.Context, teamID, id string, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var tid string
		if err := tx.QueryRow(ctx, `
			SELECT id::text FROM templates WHERE id = $1 AND team_id = $2 AND kind IN ('snapshot', 'image') FOR UPDATE`,
			id, teamID).Scan(&tid); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FROM capsules WHERE template_id = $1 AND status <> 'stopped'`,
			id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d capsules: %w", n, ErrTemplateInUse)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM templates WHERE id = $1`, id); err != nil {
			return err
		}
		ev.ResourceID = id
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return notFound("deleting snapshot", err)
	}
	return nil
}

// DeleteTemplateRow deletes template id without checks: it undoes a
// CreateSnapshot whose files could not be kept.
func (s *Store) DeleteTemplateRow(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM templates WHERE id = $1`, id); err != nil {
		return fmt.Errorf("deleting template: %w", err)
	}
	return nil
}

// CapsulesUsingTemplate counts the capsules started from template id that
// are not stopped.
func (s *Store) CapsulesUsingTemplate(ctx context.Context, id string) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM capsules WHERE template_id = $1 AND status <> 'stopped'`, id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting capsules of template: %w", err)
	}
	return n, nil
}

// BeginSnapshot records that template id is about to be written on host
// hostID, so that OrphanTemplates does not take its directory for a
// leftover before its row exists. EndSnapshot forgets it again, whatever
// became of the snapshot.
func (s *Store) BeginSnapshot(ctx context.Context, id, hostID string) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO snapshot_requests (template_id, host_id) VALUES ($1, $2)`, id, hostID); err != nil {
		return fmt.Errorf("recording snapshot request: %w", err)
	}
	return nil
}

// EndSnapshot forgets the request BeginSnapshot recorded.
func (s *Store) EndSnapshot(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM snapshot_requests WHERE template_id = $1`, id); err != nil {
		return fmt.Errorf("forgetting snapshot request: %w", err)
	}
	return nil
}

// OrphanTemplates returns the templates among reported (a host's heartbeat
// list) that are snapshot directories — named by a UUID — of no template row
// and no snapshot under way: what a snapshot whose recording failed left on
// the host. A request older than staleAfter (its control plane died) no
// longer protects its directory.
func (s *Store) OrphanTemplates(ctx context.Context, reported []string, staleAfter time.Duration) ([]string, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT r.name FROM unnest($1::text[]) AS r(name)
		WHERE r.name ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
		  AND NOT EXISTS (SELECT 1 FROM templates t WHERE t.agent_name = r.name)
		  -- Any host's request protects the name: hosts may share a
		  -- directory of templates.
		  AND NOT EXISTS (SELECT 1 FROM snapshot_requests q
		                  WHERE q.template_id = r.name::uuid
		                    AND q.created_at > now() - make_interval(secs => $2))`,
		reported, staleAfter.Seconds())
	if err != nil {
		return nil, fmt.Errorf("finding orphan templates: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("finding orphan templates: %w", err)
	}
	return out, nil
}
