package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
)

// Capsule states (DESIGN §5). Every change of state is a compare-and-set.
const (
	CapsulePending  = "pending"
	CapsuleStarting = "starting"
	CapsuleRunning  = "running"
	CapsulePausing  = "pausing"
	CapsulePaused   = "paused"
	CapsuleResuming = "resuming"
	CapsuleStopped  = "stopped"
	CapsuleError    = "error"
	CapsuleMissing  = "missing"
)

// LiveStatuses are the statuses in which a capsule takes memory and CPU on
// its host; the scheduler counts only these.
var LiveStatuses = []string{CapsulePending, CapsuleStarting, CapsuleRunning, CapsulePausing, CapsuleResuming}

// liveStatusesSQL is LiveStatuses as an SQL list; the partial index
// capsules_host_live uses the same list.
const liveStatusesSQL = `('pending', 'starting', 'running', 'pausing', 'resuming')`

// AllStatuses lists every capsule status.
var AllStatuses = []string{CapsulePending, CapsuleStarting, CapsuleRunning, CapsulePausing, CapsulePaused,
	CapsuleResuming, CapsuleStopped, CapsuleError, CapsuleMissing}

var (
	// ErrNoHost means no online host can take the capsule at all: none
	// serves the team or has its template.
	ErrNoHost = errors.New("no online host")
	// ErrNoCapacity means hosts could take the capsule but none has room
	// for it now. CreateCapsule returns it as a *NoCapacityError.
	ErrNoCapacity = errors.New("no capacity")
)

// NoCapacityError says what a refused capsule asked for and the most the
// candidate hosts have free. errors.Is(err, ErrNoCapacity) holds.
type NoCapacityError struct {
	VCPUs        int
	MemoryMB     int
	Hosts        int   // candidate hosts: online, serving the team, with the template
	FreeVCPUs    int   // the most vCPUs one capsule could get on any of them
	FreeMemoryMB int64 // the most memory one capsule could get on any of them
}

func (e *NoCapacityError) Error() string {
	return fmt.Sprintf("no capacity for %d vCPUs and %d MB on %d hosts (at most %d vCPUs and %d MB free)",
		e.VCPUs, e.MemoryMB, e.Hosts, e.FreeVCPUs, e.FreeMemoryMB)
}

// Is makes errors.Is(err, ErrNoCapacity) true.
func (e *NoCapacityError) Is(target error) bool { return target == ErrNoCapacity }

// Capsule is a capsule as the control plane records it.
type Capsule struct {
	ID           string
	TeamID       string
	HostID       string // "" before it is placed, or after its host was deleted
	Template     string
	Status       string
	StatusReason string
	VCPUs        int
	MemoryMB     int
	DiskMB       int
	TimeoutSec   int
	Metadata     map[string]string
	Address      string // private address on its host; never shown to users
	CreatedBy    string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	StartedAt    *time.Time
	StoppedAt    *time.Time
	LastActiveAt time.Time
}

const capsuleColumns = `id::text, team_id::text, coalesce(host_id::text, ''), template, status, status_reason,
	vcpus, memory_mb, disk_mb, timeout_sec, metadata, address, created_by, created_at, updated_at,
	started_at, stopped_at, last_active_at`

// scanCapsule reads one row of capsuleColumns.
func scanCapsule(row interface{ Scan(...any) error }) (Capsule, error) {
	var c Capsule
	var meta []byte
	err := row.Scan(&c.ID, &c.TeamID, &c.HostID, &c.Template, &c.Status, &c.StatusReason,
		&c.VCPUs, &c.MemoryMB, &c.DiskMB, &c.TimeoutSec, &meta, &c.Address, &c.CreatedBy,
		&c.CreatedAt, &c.UpdatedAt, &c.StartedAt, &c.StoppedAt, &c.LastActiveAt)
	if err != nil {
		return Capsule{}, err
	}
	if err := json.Unmarshal(meta, &c.Metadata); err != nil {
		return Capsule{}, err
	}
	return c, nil
}

// GetCapsule returns the capsule id (a UUID) of team teamID. A capsule of
// another team is ErrNotFound.
func (s *Store) GetCapsule(ctx context.Context, teamID, id string) (Capsule, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+capsuleColumns+` FROM capsules WHERE id = $1 AND team_id = $2`, id, teamID)
	c, err := scanCapsule(row)
	if err != nil {
		return Capsule{}, notFound("getting capsule", err)
	}
	return c, nil
}

// NewCapsule is what creating a capsule stores.
type NewCapsule struct {
	TeamID     string
	Template   string
	VCPUs      int
	MemoryMB   int
	DiskMB     int
	TimeoutSec int
	Metadata   map[string]string
	CreatedBy  string // who asked, as an audit actor id
}

// PlacementLimits bounds what a capsule of a team can ask for: the largest
// of the online hosts that serve the team (regular ones and its BYOC ones).
type PlacementLimits struct {
	Hosts             int   // online hosts serving the team
	MaxVCPUs          int   // the most CPUs of any of them
	MaxUsableMemoryMB int64 // the most memory capsules may take on any of them
	MaxDiskMB         int64 // the most disk of any of them
}

// PlacementLimits returns the limits for team teamID's capsules.
func (s *Store) PlacementLimits(ctx context.Context, teamID string) (PlacementLimits, error) {
	var l PlacementLimits
	err := s.pool.QueryRow(ctx, `
		SELECT count(*), coalesce(max(cpus), 0), coalesce(max(memory_mb), 0), coalesce(max(disk_mb), 0)
		FROM hosts WHERE status = 'online' AND (type = 'regular' OR team_id = $1)`, teamID).
		Scan(&l.Hosts, &l.MaxVCPUs, &l.MaxUsableMemoryMB, &l.MaxDiskMB)
	if err != nil {
		return PlacementLimits{}, fmt.Errorf("reading placement limits: %w", err)
	}
	l.MaxUsableMemoryMB = scheduler.UsableMemoryMB(l.MaxUsableMemoryMB)
	return l, nil
}

// CreateCapsule places a capsule on a host and records it as starting on
// that host, with ev (resource filled in), in one transaction. The
// candidate hosts (online, regular or BYOC of the capsule's team, having
// its template) are locked in id order, so that concurrent placements on
// the same hosts take turns and never count the same free memory twice; the
// choice among them is scheduler.Pick's. It returns the capsule and its
// host; ErrNoHost when there is no candidate, a *NoCapacityError
// (ErrNoCapacity) when the capsule fits on none.
func (s *Store) CreateCapsule(ctx context.Context, nc NewCapsule, ev Event) (Capsule, Host, error) {
	meta, err := json.Marshal(nonNilMetadata(nc.Metadata))
	if err != nil {
		return Capsule{}, Host{}, fmt.Errorf("creating capsule: encoding metadata: %w", err)
	}
	var (
		c Capsule
		h Host
	)
	// A deadlock with another writer of host rows (the host monitor updates
	// several at once, in no set order) aborts one side; placing again is
	// safe because nothing of the aborted attempt remains.
	for attempt := 1; ; attempt++ {
		err = s.inTx(ctx, func(tx pgx.Tx) error {
			var err error
			c, h, err = createCapsule(ctx, tx, nc, meta, ev)
			return err
		})
		var pgErr *pgconn.PgError
		if attempt < 3 && errors.As(err, &pgErr) && pgErr.Code == "40P01" {
			continue
		}
		break
	}
	if err != nil {
		return Capsule{}, Host{}, fmt.Errorf("creating capsule: %w", err)
	}
	return c, h, nil
}

func createCapsule(ctx context.Context, tx pgx.Tx, nc NewCapsule, meta []byte, ev Event) (Capsule, Host, error) {
	rows, err := tx.Query(ctx, `
		SELECT id::text, type = 'byoc', cpus, memory_mb FROM hosts
		WHERE status = 'online' AND (type = 'regular' OR team_id = $1) AND $2 = ANY(templates)
		ORDER BY id
		FOR UPDATE`, nc.TeamID, nc.Template)
	if err != nil {
		return Capsule{}, Host{}, err
	}
	cands, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (scheduler.Host, error) {
		var h scheduler.Host
		err := row.Scan(&h.ID, &h.BYOC, &h.CPUs, &h.MemoryMB)
		return h, err
	})
	if err != nil {
		return Capsule{}, Host{}, err
	}
	if len(cands) == 0 {
		return Capsule{}, Host{}, ErrNoHost
	}
	// A new statement sees every capsule committed by those who held the
	// locks before us.
	ids := make([]string, len(cands))
	for i, h := range cands {
		ids[i] = h.ID
	}
	rows, err = tx.Query(ctx, `
		SELECT host_id::text, sum(vcpus), sum(memory_mb) FROM capsules
		WHERE host_id = ANY($1::uuid[]) AND status IN `+liveStatusesSQL+`
		GROUP BY host_id`, ids)
	if err != nil {
		return Capsule{}, Host{}, err
	}
	used := map[string]scheduler.Host{}
	var (
		id   string
		u    scheduler.Host
		vcpu int
		mem  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &vcpu, &mem}, func() error {
		u.AllocatedVCPUs, u.AllocatedMemoryMB = vcpu, mem
		used[id] = u
		return nil
	})
	if err != nil {
		return Capsule{}, Host{}, err
	}
	for i := range cands {
		cands[i].AllocatedVCPUs = used[cands[i].ID].AllocatedVCPUs
		cands[i].AllocatedMemoryMB = used[cands[i].ID].AllocatedMemoryMB
	}
	best, ok := scheduler.Pick(cands, nc.VCPUs, int64(nc.MemoryMB))
	if !ok {
		e := &NoCapacityError{VCPUs: nc.VCPUs, MemoryMB: nc.MemoryMB, Hosts: len(cands)}
		e.FreeVCPUs, e.FreeMemoryMB = scheduler.Free(cands)
		return Capsule{}, Host{}, e
	}
	c, err := scanCapsule(tx.QueryRow(ctx, `
		INSERT INTO capsules (team_id, host_id, template, status, vcpus, memory_mb, disk_mb, timeout_sec, metadata, created_by)
		VALUES ($1, $2, $3, 'starting', $4, $5, $6, $7, $8, $9)
		RETURNING `+capsuleColumns, nc.TeamID, cands[best].ID, nc.Template, nc.VCPUs, nc.MemoryMB, nc.DiskMB,
		nc.TimeoutSec, meta, nc.CreatedBy))
	if err != nil {
		return Capsule{}, Host{}, err
	}
	h, err := scanHost(tx.QueryRow(ctx, `SELECT `+hostColumns+` FROM hosts WHERE id = $1`, c.HostID))
	if err != nil {
		return Capsule{}, Host{}, err
	}
	ev.ResourceID = c.ID
	if ev.Metadata == nil {
		ev.Metadata = map[string]any{}
	}
	ev.Metadata["host_id"] = h.ID
	if err := writeEvent(ctx, tx, ev); err != nil {
		return Capsule{}, Host{}, err
	}
	return c, h, nil
}

func nonNilMetadata(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// SetCapsuleStatus moves capsule id from one of the statuses in from to
// status to, with reason as its status_reason, and writes events (resource
// filled in) in the same transaction; moving to stopped also sets
// stopped_at. It returns the capsule as it is afterwards. When the capsule
// is in none of from, nothing changes and it returns the capsule as it is
// with an error wrapping ErrConflict that names its status; an unknown id
// is ErrNotFound.
func (s *Store) SetCapsuleStatus(ctx context.Context, id string, from []string, to, reason string, events ...Event) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET status = $3, status_reason = $4, updated_at = now(),
			       stopped_at = CASE WHEN $3 = 'stopped' THEN now() ELSE stopped_at END
			WHERE id = $1 AND status = ANY($2)
			RETURNING `+capsuleColumns, id, from, to, reason))
		if errors.Is(err, pgx.ErrNoRows) {
			return currentStatusConflict(ctx, tx, id, &c)
		}
		if err != nil {
			return err
		}
		for _, ev := range events {
			ev.ResourceID = c.ID
			if err := writeEvent(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return c, notFound("changing capsule status", err)
	}
	return c, nil
}

// currentStatusConflict reads capsule id into c and returns the conflict
// that explains why a compare-and-set did not match, or ErrNoRows.
func currentStatusConflict(ctx context.Context, q querier, id string, c *Capsule) error {
	cur, err := scanCapsule(q.QueryRow(ctx, `SELECT `+capsuleColumns+` FROM capsules WHERE id = $1`, id))
	if err != nil {
		return err
	}
	*c = cur
	return fmt.Errorf("capsule %s is %s: %w", id, cur.Status, ErrConflict)
}

// MarkCapsuleRunning moves capsule id from starting to running with its
// private address and start time. Errors as SetCapsuleStatus's.
func (s *Store) MarkCapsuleRunning(ctx context.Context, id, address string, startedAt time.Time) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET status = 'running', status_reason = '', address = $2, started_at = $3,
			       last_active_at = $3, updated_at = now()
			WHERE id = $1 AND status = 'starting'
			RETURNING `+capsuleColumns, id, address, startedAt))
		if errors.Is(err, pgx.ErrNoRows) {
			return currentStatusConflict(ctx, tx, id, &c)
		}
		return err
	})
	if err != nil {
		return c, notFound("marking capsule running", err)
	}
	return c, nil
}

// CapsuleCursor is where a page of ListCapsules ends: the last capsule's
// creation time and id.
type CapsuleCursor struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"id"`
}

// CapsuleFilter selects capsules. Zero fields select everything.
type CapsuleFilter struct {
	Statuses []string
	// Metadata must be contained in a capsule's metadata.
	Metadata map[string]string
	// Limit is the page size (at least 1).
	Limit int
	// After continues a listing after the capsule it names.
	After *CapsuleCursor
}

// ListCapsules returns one page of team teamID's capsules, newest first,
// and the cursor of the next page (nil after the last). Pages are keyset
// pages on (created_at, id): capsules created or deleted meanwhile neither
// repeat nor shift others.
func (s *Store) ListCapsules(ctx context.Context, teamID string, f CapsuleFilter) ([]Capsule, *CapsuleCursor, error) {
	var meta []byte
	if len(f.Metadata) > 0 {
		var err error
		if meta, err = json.Marshal(f.Metadata); err != nil {
			return nil, nil, fmt.Errorf("listing capsules: %w", err)
		}
	}
	var (
		afterAt *time.Time
		afterID *string
	)
	if f.After != nil {
		afterAt, afterID = &f.After.CreatedAt, &f.After.ID
	}
	var statuses []string
	if len(f.Statuses) > 0 {
		statuses = f.Statuses
	}
	rows, err := s.pool.Query(ctx, `
		SELECT `+capsuleColumns+` FROM capsules
		WHERE team_id = $1
		  AND ($2::text[] IS NULL OR status = ANY($2))
		  AND ($3::jsonb IS NULL OR metadata @> $3)
		  AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
		ORDER BY created_at DESC, id DESC
		LIMIT $6`, teamID, statuses, meta, afterAt, afterID, f.Limit+1)
	if err != nil {
		return nil, nil, fmt.Errorf("listing capsules: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Capsule, error) { return scanCapsule(row) })
	if err != nil {
		return nil, nil, fmt.Errorf("listing capsules: %w", err)
	}
	if len(out) <= f.Limit {
		return out, nil, nil
	}
	out = out[:f.Limit]
	last := out[len(out)-1]
	return out, &CapsuleCursor{CreatedAt: last.CreatedAt, ID: last.ID}, nil
}
