package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Build statuses.
const (
	BuildRunning   = "running"
	BuildSucceeded = "succeeded"
	BuildFailed    = "failed"
	BuildCancelled = "cancelled"
)

// Build sources.
const (
	BuildFromImage  = "image"
	BuildFromRecipe = "recipe"
)

// TemplateImage is the kind of templates imported from an OCI image.
const TemplateImage = "image"

// buildReaperLock is the advisory lock of the build reaper.
const buildReaperLock = 0x5772656e6e18 // "Wrenn" 0x18

// Build is a template build job.
type Build struct {
	ID          string
	TeamID      string
	CreatedBy   string
	Name        string
	Public      bool
	Source      string
	Recipe      json.RawMessage
	Status      string
	Error       string
	StepsTotal  int
	StepsDone   int
	CurrentStep string
	HostID      string
	CapsuleID   string
	TemplateID  string
	SizeBytes   int64
	Cancel      bool
	Runner      string
	HeartbeatAt time.Time
	CreatedAt   time.Time
	FinishedAt  *time.Time
}

const buildColumns = `id::text, team_id::text, created_by, name, public, source, coalesce(recipe, 'null'::jsonb),
	status, error, steps_total, steps_done, current_step, coalesce(host_id::text, ''), coalesce(capsule_id::text, ''),
	coalesce(template_id::text, ''), size_bytes, cancel_requested, runner, heartbeat_at, created_at, finished_at`

func scanBuild(row pgx.Row) (Build, error) {
	var b Build
	err := row.Scan(&b.ID, &b.TeamID, &b.CreatedBy, &b.Name, &b.Public, &b.Source, &b.Recipe, &b.Status, &b.Error,
		&b.StepsTotal, &b.StepsDone, &b.CurrentStep, &b.HostID, &b.CapsuleID, &b.TemplateID, &b.SizeBytes, &b.Cancel,
		&b.Runner, &b.HeartbeatAt, &b.CreatedAt, &b.FinishedAt)
	return b, err
}

// NewBuild is a build to record.
type NewBuild struct {
	TeamID     string
	CreatedBy  string
	Name       string
	Public     bool
	Source     string
	Recipe     json.RawMessage // nil for image builds
	StepsTotal int
	Runner     string
}

// ErrBuildRunning means a build of that name runs already for the team.
var ErrBuildRunning = errors.New("a build of that name is running")

// CreateBuild records a running build with ev (resource filled in). A name
// that a template of the team (or a global one) has is ErrNameTaken; one
// that a running build of the team has, ErrBuildRunning.
func (s *Store) CreateBuild(ctx context.Context, nb NewBuild, ev Event) (Build, error) {
	var b Build
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var taken bool
		if err := tx.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM templates WHERE name = $2 AND (team_id IS NULL OR team_id = $1 OR $3))`,
			nb.TeamID, nb.Name, nb.Public).Scan(&taken); err != nil {
			return err
		}
		if taken {
			return ErrNameTaken
		}
		var recipe any
		if nb.Recipe != nil {
			recipe = nb.Recipe
		}
		var err error
		b, err = scanBuild(tx.QueryRow(ctx, `
			INSERT INTO template_builds (team_id, created_by, name, public, source, recipe, steps_total, runner)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			RETURNING `+buildColumns, nb.TeamID, nb.CreatedBy, nb.Name, nb.Public, nb.Source, recipe, nb.StepsTotal, nb.Runner))
		if isUniqueViolation(err) {
			return ErrBuildRunning
		}
		if err != nil {
			return err
		}
		ev.ResourceID = b.ID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Build{}, fmt.Errorf("recording build: %w", err)
	}
	return b, nil
}

// Build returns team teamID's build id, or ErrNotFound.
func (s *Store) Build(ctx context.Context, teamID, id string) (Build, error) {
	b, err := scanBuild(s.pool.QueryRow(ctx, `SELECT `+buildColumns+` FROM template_builds WHERE id = $1 AND team_id = $2`, id, teamID))
	if err != nil {
		return Build{}, notFound("looking up build", err)
	}
	return b, nil
}

// BuildByID returns build id whatever its team, or ErrNotFound.
func (s *Store) BuildByID(ctx context.Context, id string) (Build, error) {
	b, err := scanBuild(s.pool.QueryRow(ctx, `SELECT `+buildColumns+` FROM template_builds WHERE id = $1`, id))
	if err != nil {
		return Build{}, notFound("looking up build", err)
	}
	return b, nil
}

// Builds lists team teamID's latest builds, newest first, at most limit.
func (s *Store) Builds(ctx context.Context, teamID string, limit int) ([]Build, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+buildColumns+` FROM template_builds WHERE team_id = $1
		ORDER BY created_at DESC, id LIMIT $2`, teamID, limit)
	if err != nil {
		return nil, fmt.Errorf("listing builds: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Build, error) { return scanBuild(row) })
	if err != nil {
		return nil, fmt.Errorf("listing builds: %w", err)
	}
	return out, nil
}

// BuildProgress is what a running build records as it goes; nil fields
// stay as they are.
type BuildProgress struct {
	StepsDone   *int
	CurrentStep *string
	HostID      *string
	CapsuleID   *string
}

// UpdateBuild records p on running build id and touches its heartbeat. It
// reports whether a cancel was asked for; a build that is no longer
// running is ErrConflict.
func (s *Store) UpdateBuild(ctx context.Context, id string, p BuildProgress) (cancel bool, err error) {
	err = s.pool.QueryRow(ctx, `
		UPDATE template_builds SET heartbeat_at = now(),
			steps_done = coalesce($2, steps_done), current_step = coalesce($3, current_step),
			host_id = coalesce($4::uuid, host_id), capsule_id = coalesce($5::uuid, capsule_id)
		WHERE id = $1 AND status = 'running'
		RETURNING cancel_requested`, id, p.StepsDone, p.CurrentStep, p.HostID, p.CapsuleID).Scan(&cancel)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("updating build: %w", ErrConflict)
	}
	if err != nil {
		return false, fmt.Errorf("updating build: %w", err)
	}
	return cancel, nil
}

// RequestCancel asks running build id of team teamID to stop, with ev. It
// returns the build; one that is not running is returned unchanged with
// ErrConflict; an unknown one is ErrNotFound.
func (s *Store) RequestCancel(ctx context.Context, teamID, id string, ev Event) (Build, error) {
	var b Build
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		b, err = scanBuild(tx.QueryRow(ctx, `
			UPDATE template_builds SET cancel_requested = true
			WHERE id = $1 AND team_id = $2 AND status = 'running'
			RETURNING `+buildColumns, id, teamID))
		if errors.Is(err, pgx.ErrNoRows) {
			b, err = scanBuild(tx.QueryRow(ctx, `SELECT `+buildColumns+` FROM template_builds WHERE id = $1 AND team_id = $2`, id, teamID))
			if err != nil {
				return err
			}
			return ErrConflict
		}
		if err != nil {
			return err
		}
		ev.ResourceID = id
		return writeEvent(ctx, tx, ev)
	})
	if errors.Is(err, ErrConflict) {
		return b, ErrConflict
	}
	if err != nil {
		return Build{}, notFound("cancelling build", err)
	}
	return b, nil
}

// FinishBuild moves running build id to status (failed or cancelled) with
// reason. A build that is no longer running is left alone (ErrConflict).
func (s *Store) FinishBuild(ctx context.Context, id, status, reason string) (Build, error) {
	b, err := scanBuild(s.pool.QueryRow(ctx, `
		UPDATE template_builds SET status = $2, error = $3, finished_at = now(), heartbeat_at = now()
		WHERE id = $1 AND status = 'running'
		RETURNING `+buildColumns, id, status, reason))
	if errors.Is(err, pgx.ErrNoRows) {
		return Build{}, fmt.Errorf("finishing build: %w", ErrConflict)
	}
	if err != nil {
		return Build{}, fmt.Errorf("finishing build: %w", err)
	}
	return b, nil
}

// BuiltTemplate is the template a successful build makes.
type BuiltTemplate struct {
	// ID is the template's id, chosen before it was written (it names its
	// directory on the host), or of the snapshot already recorded.
	ID              string
	Kind            string // TemplateImage or TemplateSnapshot
	HostID          string
	VCPUs           int
	MemoryMB        int
	DiskMB          int
	SizeBytes       int64
	Config          json.RawMessage
	SourceCapsuleID string
}

// SucceedBuild records running build b's template and marks b succeeded,
// in one transaction, with ev. An image template's row is inserted; a
// recipe's snapshot row (recorded by the snapshot) is updated with the
// build's data and, for a public build, made global. It returns the build
// and the template; a build no longer running (cancelled meanwhile, or
// failed by the reaper) is ErrConflict and nothing is recorded;
// ErrNameTaken when the name was taken meanwhile.
func (s *Store) SucceedBuild(ctx context.Context, b Build, bt BuiltTemplate, ev Event) (Build, Template, error) {
	var (
		out Build
		t   Template
	)
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM template_builds WHERE id = $1 FOR UPDATE`, b.ID).Scan(&status); err != nil {
			return err
		}
		if status != BuildRunning {
			return ErrConflict
		}
		if b.Public {
			var taken bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM templates WHERE name = $1 AND team_id IS NULL)`,
				b.Name).Scan(&taken); err != nil {
				return err
			}
			if taken {
				return ErrNameTaken
			}
		}
		var team *string
		if !b.Public {
			team = &b.TeamID
		}
		cfg := bt.Config
		if cfg == nil {
			cfg = json.RawMessage("{}")
		}
		ms := time.Since(b.CreatedAt).Milliseconds()
		var err error
		switch bt.Kind {
		case TemplateImage:
			t, err = scanTemplate(tx.QueryRow(ctx, `
				INSERT INTO templates (id, name, team_id, kind, size_bytes, default_vcpus, default_memory_mb,
				                       default_disk_mb, host_id, agent_name, description, build_ms, build_id, config)
				VALUES ($1::uuid, $2, $3, 'image', $4, $5, $6, $7, $8, $1::text, $9, $10, $11, $12)
				RETURNING `+templateColumns, bt.ID, b.Name, team, bt.SizeBytes, bt.VCPUs, bt.MemoryMB, bt.DiskMB,
				bt.HostID, "built from an OCI image", ms, b.ID, cfg))
		default:
			t, err = scanTemplate(tx.QueryRow(ctx, `
				UPDATE templates SET team_id = $2, description = $3, build_ms = $4, build_id = $5, config = $6
				WHERE id = $1 RETURNING `+templateColumns, bt.ID, team, "built from a recipe", ms, b.ID, cfg))
		}
		if isUniqueViolation(err) {
			return ErrNameTaken
		}
		if err != nil {
			return err
		}
		out, err = scanBuild(tx.QueryRow(ctx, `
			UPDATE template_builds SET status = 'succeeded', finished_at = now(), template_id = $2, size_bytes = $3,
				steps_done = steps_total, current_step = ''
			WHERE id = $1 RETURNING `+buildColumns, b.ID, t.ID, t.SizeBytes))
		if err != nil {
			return err
		}
		ev.ResourceID = t.ID
		return writeEvent(ctx, tx, ev)
	})
	if errors.Is(err, ErrConflict) || errors.Is(err, ErrNameTaken) {
		return Build{}, Template{}, err
	}
	if err != nil {
		return Build{}, Template{}, fmt.Errorf("recording built template: %w", err)
	}
	return out, t, nil
}

// BuildLog is one line of a build's log.
type BuildLog struct {
	Seq    int64     `json:"seq"`
	Step   int       `json:"step"`
	Stream string    `json:"stream"`
	Line   string    `json:"line"`
	At     time.Time `json:"at"`
}

// AppendBuildLogs adds lines to build id's log, numbering them after the
// last one.
func (s *Store) AppendBuildLogs(ctx context.Context, id string, lines []BuildLog) error {
	if len(lines) == 0 {
		return nil
	}
	steps, streams, texts := make([]int32, len(lines)), make([]string, len(lines)), make([]string, len(lines))
	for i, l := range lines {
		steps[i], streams[i], texts[i] = int32(l.Step), l.Stream, l.Line
	}
	// One writer per build (its runner), so max(seq) does not race.
	_, err := s.pool.Exec(ctx, `
		INSERT INTO template_build_logs (build_id, seq, step, stream, line)
		SELECT $1, coalesce((SELECT max(seq) FROM template_build_logs WHERE build_id = $1), 0) + n, step, stream, line
		FROM unnest($2::int[], $3::text[], $4::text[]) WITH ORDINALITY AS u(step, stream, line, n)`,
		id, steps, streams, texts)
	if err != nil {
		return fmt.Errorf("writing build log: %w", err)
	}
	return nil
}

// BuildLogs returns build id's log lines after seq after, at most limit.
func (s *Store) BuildLogs(ctx context.Context, id string, after int64, limit int) ([]BuildLog, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT seq, step, stream, line, at FROM template_build_logs
		WHERE build_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reading build log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (BuildLog, error) {
		var l BuildLog
		err := row.Scan(&l.Seq, &l.Step, &l.Stream, &l.Line, &l.At)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading build log: %w", err)
	}
	return out, nil
}

// ClaimStaleBuilds fails the running builds whose runner has not touched
// them for staleAfter — their control plane died — with reason, and
// returns them as they were (with the host and capsule to clean up). It
// takes the build reaper's advisory lock: ErrLocked while another replica
// holds it.
func (s *Store) ClaimStaleBuilds(ctx context.Context, staleAfter time.Duration, reason string) ([]Build, error) {
	var out []Build
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, buildReaperLock).Scan(&locked); err != nil {
			return err
		}
		if !locked {
			return ErrLocked
		}
		rows, err := tx.Query(ctx, `
			UPDATE template_builds SET status = 'failed', finished_at = now(),
				error = $2 || CASE WHEN current_step <> '' THEN ' (it was at: ' || current_step || ')' ELSE '' END
			WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
			RETURNING `+buildColumns, staleAfter.Seconds(), reason)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Build, error) { return scanBuild(row) })
		return err
	})
	if errors.Is(err, ErrLocked) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("failing stale builds: %w", err)
	}
	return out, nil
}

// ImportHost returns the online host an image build of team teamID goes
// to: a shared host or one of the team's own, with a base template that has
// envd to give the import (minimal) before one without, the most free disk
// first. ErrNotFound when no host is online.
func (s *Store) ImportHost(ctx context.Context, teamID string) (Host, error) {
	h, err := scanHost(s.pool.QueryRow(ctx, `
		SELECT `+hostColumns+` FROM hosts
		WHERE status = 'online' AND (type = 'regular' OR team_id = $1)
		ORDER BY 'minimal' = ANY(templates) DESC, free_disk_mb DESC, id LIMIT 1`, teamID))
	if err != nil {
		return Host{}, notFound("choosing a host for an import", err)
	}
	return h, nil
}
