package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/scheduler"
)

// Capsule states (DESIGN §5), named in package capsule. Every change of
// state is a compare-and-set.
const (
	CapsulePending  = string(capsule.Pending)
	CapsuleStarting = string(capsule.Starting)
	CapsuleRunning  = string(capsule.Running)
	CapsulePausing  = string(capsule.Pausing)
	CapsulePaused   = string(capsule.Paused)
	CapsuleResuming = string(capsule.Resuming)
	CapsuleStopped  = string(capsule.Stopped)
	CapsuleError    = string(capsule.Error)
	CapsuleMissing  = string(capsule.Missing)
)

// LiveStatuses are the statuses in which a capsule takes memory and CPU on
// its host; the scheduler counts only these.
var LiveStatuses = []string{CapsulePending, CapsuleStarting, CapsuleRunning, CapsulePausing, CapsuleResuming}

// liveStatusesSQL is LiveStatuses as an SQL list; the partial index
// capsules_host_live uses the same list.
const liveStatusesSQL = `('pending', 'starting', 'running', 'pausing', 'resuming')`

// placedStatusesSQL are the statuses in which a capsule holds disk (its
// writable layer, and saved state once paused) and an address on its
// host: the live ones and paused. The scheduler counts these for disk and
// addresses.
const placedStatusesSQL = `('pending', 'starting', 'running', 'pausing', 'resuming', 'paused')`

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
	VCPUs    int
	MemoryMB int
	DiskMB   int
	// Short is what lacks when CPU and memory would fit: "disk" or
	// "addresses" (scheduler.Short); "" otherwise.
	Short        string
	Hosts        int   // candidate hosts: online, serving the team, with the template
	FreeVCPUs    int   // the most vCPUs one capsule could get on any of them
	FreeMemoryMB int64 // the most memory one capsule could get on any of them
}

func (e *NoCapacityError) Error() string {
	if e.Short != "" {
		return fmt.Sprintf("no capacity for %d vCPUs, %d MB and %d MB of disk on %d hosts: %s",
			e.VCPUs, e.MemoryMB, e.DiskMB, e.Hosts, e.ShortMessage())
	}
	return fmt.Sprintf("no capacity for %d vCPUs and %d MB on %d hosts (at most %d vCPUs and %d MB free)",
		e.VCPUs, e.MemoryMB, e.Hosts, e.FreeVCPUs, e.FreeMemoryMB)
}

// ShortMessage says what lacks when CPU and memory would fit.
func (e *NoCapacityError) ShortMessage() string {
	switch e.Short {
	case "disk":
		return fmt.Sprintf("no host has %d MB of disk free for it (its disk_mb, and its memory as saved state when paused)", e.DiskMB+e.MemoryMB)
	case "addresses":
		return "the hosts that would have room have no capsule address free (paused capsules hold theirs)"
	}
	return ""
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
	// PausedAt and SnapshotBytes describe the saved state of a paused
	// capsule (nil and 0 otherwise).
	PausedAt      *time.Time
	SnapshotBytes int64
	// TemplateID is the template row the capsule started from ("" when
	// that template was deleted since).
	TemplateID string
	// Network is the capsule's egress policy, normalized; nil is the
	// open policy.
	Network *egress.Policy
	// PublicPorts are the ports the port proxy serves without credentials,
	// in ascending order.
	PublicPorts []int
	// AutoResume makes a request to a port of the paused capsule resume it.
	AutoResume bool
}

const capsuleColumns = `id::text, team_id::text, coalesce(host_id::text, ''), template, status, status_reason,
	vcpus, memory_mb, disk_mb, timeout_sec, metadata, address, created_by, created_at, updated_at,
	started_at, stopped_at, last_active_at, paused_at, snapshot_bytes, coalesce(template_id::text, ''), network_policy,
	public_ports, auto_resume`

// scanCapsule reads one row of capsuleColumns.
func scanCapsule(row interface{ Scan(...any) error }) (Capsule, error) {
	var c Capsule
	var meta []byte
	err := row.Scan(&c.ID, &c.TeamID, &c.HostID, &c.Template, &c.Status, &c.StatusReason,
		&c.VCPUs, &c.MemoryMB, &c.DiskMB, &c.TimeoutSec, &meta, &c.Address, &c.CreatedBy,
		&c.CreatedAt, &c.UpdatedAt, &c.StartedAt, &c.StoppedAt, &c.LastActiveAt, &c.PausedAt, &c.SnapshotBytes,
		&c.TemplateID, &c.Network, &c.PublicPorts, &c.AutoResume)
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
	// TemplateID is the template's row; AgentTemplate its directory on
	// hosts, which placement looks for in the hosts' template lists.
	TemplateID    string
	AgentTemplate string
	// HostID, when set, is the only host the capsule may go to: the one
	// holding its snapshot template. That host need not list the
	// template (the control plane recorded where it wrote it).
	HostID string
	// Quota is the team's default quota; what a platform admin set for
	// the team applies over it. Going past it is a *QuotaError.
	Quota Quota
	// Network is the capsule's egress policy, normalized; nil is the
	// open policy.
	Network *egress.Policy
	// PublicPorts and AutoResume are the port proxy's settings (see
	// Capsule).
	PublicPorts []int
	AutoResume  bool
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
	if nc.AgentTemplate == "" {
		nc.AgentTemplate = nc.Template
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

// allocations fills in what the capsules of hosts (whose ids are ids, in
// the same order) take: CPU and memory of the live ones, disk of the live
// and paused ones, and the disk and number of those placed since each
// host's last heartbeat.
func allocations(ctx context.Context, tx pgx.Tx, hosts []scheduler.Host, ids []string) error {
	rows, err := tx.Query(ctx, `
		SELECT c.host_id::text,
		       coalesce(sum(c.vcpus) FILTER (WHERE c.status IN `+liveStatusesSQL+`), 0),
		       coalesce(sum(c.memory_mb) FILTER (WHERE c.status IN `+liveStatusesSQL+`), 0),
		       coalesce(sum(c.disk_mb::bigint + c.memory_mb), 0),
		       count(*) FILTER (WHERE c.created_at >= coalesce(h.last_heartbeat_at, '-infinity')),
		       coalesce(sum(c.disk_mb::bigint + c.memory_mb) FILTER (WHERE c.created_at >= coalesce(h.last_heartbeat_at, '-infinity')), 0)
		FROM capsules c JOIN hosts h ON h.id = c.host_id
		WHERE c.host_id = ANY($1::uuid[]) AND c.status IN `+placedStatusesSQL+`
		GROUP BY c.host_id`, ids)
	if err != nil {
		return err
	}
	byID := map[string]*scheduler.Host{}
	for i := range hosts {
		byID[hosts[i].ID] = &hosts[i]
	}
	var (
		id                    string
		vcpus, placed         int
		mem, disk, placedDisk int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &vcpus, &mem, &disk, &placed, &placedDisk}, func() error {
		if h := byID[id]; h != nil {
			h.AllocatedVCPUs, h.AllocatedMemoryMB, h.AllocatedDiskMB = vcpus, mem, disk
			h.Placed, h.PlacedDiskMB = placed, placedDisk
		}
		return nil
	})
	return err
}

func createCapsule(ctx context.Context, tx pgx.Tx, nc NewCapsule, meta []byte, ev Event) (Capsule, Host, error) {
	if nc.TemplateID != "" {
		// Held until the capsule is in: a DELETE of the template (which
		// locks it FOR UPDATE while it checks for users and removes the
		// files) waits for this create, or this create for it.
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM templates WHERE id = $1 FOR SHARE`, nc.TemplateID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return Capsule{}, Host{}, ErrTemplateGone
		}
		if err != nil {
			return Capsule{}, Host{}, err
		}
	}
	// The team's quota first: it locks the team, so that its creates and
	// resumes are counted one after the other.
	err := checkQuota(ctx, tx, nc.TeamID, nc.Quota, capsuleAsk{
		vcpus: int64(nc.VCPUs), memoryMB: int64(nc.MemoryMB), diskMB: int64(nc.DiskMB), creating: true,
	})
	if err != nil {
		return Capsule{}, Host{}, err
	}
	rows, err := tx.Query(ctx, `
		SELECT id::text, type = 'byoc', cpus, memory_mb, disk_mb,
		       CASE WHEN last_heartbeat_at IS NULL THEN -1 ELSE free_disk_mb END, coalesce(free_addresses, -1)
		FROM hosts
		WHERE status = 'online' AND (type = 'regular' OR team_id = $1)
		  AND CASE WHEN $3::uuid IS NULL THEN $2 = ANY(templates) ELSE id = $3 END
		ORDER BY id
		FOR UPDATE`, nc.TeamID, nc.AgentTemplate, nullable(nc.HostID))
	if err != nil {
		return Capsule{}, Host{}, err
	}
	cands, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (scheduler.Host, error) {
		var h scheduler.Host
		err := row.Scan(&h.ID, &h.BYOC, &h.CPUs, &h.MemoryMB, &h.DiskMB, &h.FreeDiskMB, &h.FreeAddresses)
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
	if err := allocations(ctx, tx, cands, ids); err != nil {
		return Capsule{}, Host{}, err
	}
	ask := scheduler.Ask{VCPUs: nc.VCPUs, MemoryMB: int64(nc.MemoryMB), DiskMB: int64(nc.DiskMB)}
	best, ok := scheduler.Pick(cands, ask)
	if !ok {
		e := &NoCapacityError{VCPUs: nc.VCPUs, MemoryMB: nc.MemoryMB, DiskMB: nc.DiskMB, Hosts: len(cands)}
		e.FreeVCPUs, e.FreeMemoryMB = scheduler.Free(cands)
		e.Short = scheduler.Short(cands, ask)
		return Capsule{}, Host{}, e
	}
	c, err := scanCapsule(tx.QueryRow(ctx, `
		INSERT INTO capsules (team_id, host_id, template, status, vcpus, memory_mb, disk_mb, timeout_sec, metadata,
		                      created_by, template_id, network_policy, public_ports, auto_resume)
		VALUES ($1, $2, $3, 'starting', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		RETURNING `+capsuleColumns, nc.TeamID, cands[best].ID, nc.Template, nc.VCPUs, nc.MemoryMB, nc.DiskMB,
		nc.TimeoutSec, meta, nc.CreatedBy, nullable(nc.TemplateID), nc.Network, nonNilPorts(nc.PublicPorts), nc.AutoResume))
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
// stopped_at, moving to paused sets paused_at (leaving paused clears it and
// snapshot_bytes), and coming back to running counts as activity, so that
// the TTL reaper does not pause a capsule that was just resumed. It returns
// the capsule as it is afterwards. When the capsule is in none of from,
// nothing changes and it returns the capsule as it is with an error
// wrapping ErrConflict that names its status; an unknown id is ErrNotFound.
func (s *Store) SetCapsuleStatus(ctx context.Context, id string, from []string, to, reason string, events ...Event) (Capsule, error) {
	return s.setCapsuleStatus(ctx, id, from, to, reason, -1, events)
}

// MarkCapsulePaused moves capsule id from one of from to paused, as
// SetCapsuleStatus does, and records the size of its saved state.
func (s *Store) MarkCapsulePaused(ctx context.Context, id string, from []string, snapshotBytes int64, reason string, events ...Event) (Capsule, error) {
	return s.setCapsuleStatus(ctx, id, from, CapsulePaused, reason, max(snapshotBytes, 0), events)
}

// setCapsuleStatus is SetCapsuleStatus; snapshotBytes >= 0 replaces
// snapshot_bytes when the capsule ends up paused.
func (s *Store) setCapsuleStatus(ctx context.Context, id string, from []string, to, reason string, snapshotBytes int64, events []Event) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET status = $3, status_reason = $4, updated_at = now(), settle_from_host = false,
			       stopped_at = CASE WHEN $3 = 'stopped' THEN now() ELSE stopped_at END,
			       paused_at = CASE WHEN $3 <> 'paused' THEN NULL
			                        WHEN status = 'paused' THEN paused_at ELSE now() END,
			       snapshot_bytes = CASE WHEN $3 <> 'paused' THEN 0
			                             WHEN $5::bigint >= 0 THEN $5 ELSE snapshot_bytes END,
			       last_active_at = CASE WHEN $3 = 'running' AND status <> 'running' THEN now()
			                             ELSE last_active_at END
			WHERE id = $1 AND status = ANY($2)
			RETURNING `+capsuleColumns, id, from, to, reason, snapshotBytes))
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

// ClaimResume moves capsule id from paused to resuming, with ev, when its
// host still has room for it: a paused capsule gave its CPU and memory back
// and others may have taken them. The host row is locked as placement locks
// it, so a resume and a create cannot both take the last free memory. It
// returns a *NoCapacityError (ErrNoCapacity) when the capsule no longer
// fits, ErrNoHost when it has no host, ErrConflict (with the capsule as it
// is) when it is not paused, and a *QuotaError when running it again would
// take its team past quota (the team's default, with its override).
func (s *Store) ClaimResume(ctx context.Context, id string, quota Quota) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		c, err = scanCapsule(tx.QueryRow(ctx, `SELECT `+capsuleColumns+` FROM capsules WHERE id = $1`, id))
		if err != nil {
			return err
		}
		if c.Status != CapsulePaused {
			return fmt.Errorf("capsule %s is %s: %w", id, c.Status, ErrConflict)
		}
		if c.HostID == "" {
			return ErrNoHost
		}
		err = checkQuota(ctx, tx, c.TeamID, quota, capsuleAsk{vcpus: int64(c.VCPUs), memoryMB: int64(c.MemoryMB)})
		if err != nil {
			return err
		}
		h := scheduler.Host{ID: c.HostID}
		err = tx.QueryRow(ctx, `SELECT type = 'byoc', cpus, memory_mb FROM hosts WHERE id = $1 FOR UPDATE`, c.HostID).
			Scan(&h.BYOC, &h.CPUs, &h.MemoryMB)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoHost
		}
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `
			SELECT coalesce(sum(vcpus), 0), coalesce(sum(memory_mb), 0) FROM capsules
			WHERE host_id = $1 AND status IN `+liveStatusesSQL, c.HostID).Scan(&h.AllocatedVCPUs, &h.AllocatedMemoryMB)
		if err != nil {
			return err
		}
		if _, ok := scheduler.Pick([]scheduler.Host{h}, scheduler.Ask{VCPUs: c.VCPUs, MemoryMB: int64(c.MemoryMB)}); !ok {
			e := &NoCapacityError{VCPUs: c.VCPUs, MemoryMB: c.MemoryMB, Hosts: 1}
			e.FreeVCPUs, e.FreeMemoryMB = scheduler.Free([]scheduler.Host{h})
			return e
		}
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET status = 'resuming', status_reason = '', updated_at = now(), settle_from_host = false
			WHERE id = $1 AND status = 'paused'
			RETURNING `+capsuleColumns, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return currentStatusConflict(ctx, tx, id, &c)
		}
		return err
	})
	if err != nil {
		return c, notFound("claiming capsule resume", err)
	}
	return c, nil
}

// PingCapsule records activity on capsule id when it is running. Otherwise
// it returns ErrConflict with the capsule as it is.
func (s *Store) PingCapsule(ctx context.Context, id string) (Capsule, error) {
	c, err := scanCapsule(s.pool.QueryRow(ctx, `
		UPDATE capsules SET last_active_at = now() WHERE id = $1 AND status = 'running'
		RETURNING `+capsuleColumns, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = currentStatusConflict(ctx, s.pool, id, &c)
	}
	if err != nil {
		return c, notFound("pinging capsule", err)
	}
	return c, nil
}

// LeaveToHost records that the operation that moved capsule id to from
// (pausing or resuming) failed without learning what the host did: the
// capsule keeps that status, with reason, until its host's next report
// settles it (ReconcileHost). It returns ErrConflict when the capsule is
// no longer in from.
func (s *Store) LeaveToHost(ctx context.Context, id, from, reason string) (Capsule, error) {
	c, err := scanCapsule(s.pool.QueryRow(ctx, `
		UPDATE capsules SET settle_from_host = true, status_reason = $3, updated_at = now()
		WHERE id = $1 AND status = $2
		RETURNING `+capsuleColumns, id, from, reason))
	if errors.Is(err, pgx.ErrNoRows) {
		err = currentStatusConflict(ctx, s.pool, id, &c)
	}
	if err != nil {
		return c, notFound("leaving capsule to its host", err)
	}
	return c, nil
}

// SetCapsuleNetwork makes p (nil: the open policy) the egress policy of
// capsule id: with the capsule's row locked, it calls apply with the
// capsule as it is now (which applies the policy on its host and may
// refuse), then records p with ev (its resource id filled in) and returns
// the capsule. The lock makes concurrent changes of one capsule's policy
// reach its host in the order they are recorded. An error of apply is
// returned as is, and nothing is recorded.
func (s *Store) SetCapsuleNetwork(ctx context.Context, id string, p *egress.Policy, ev Event, apply func(Capsule) error) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		cur, err := scanCapsule(tx.QueryRow(ctx, `SELECT `+capsuleColumns+` FROM capsules WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if err := apply(cur); err != nil {
			return err
		}
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET network_policy = $2, updated_at = now() WHERE id = $1
			RETURNING `+capsuleColumns, id, p))
		if err != nil {
			return err
		}
		ev.ResourceID = id
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Capsule{}, fmt.Errorf("setting capsule network policy: %w", err)
	}
	return c, nil
}
