package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Host types and statuses.
const (
	HostRegular = "regular"
	HostBYOC    = "byoc"

	HostPending     = "pending"
	HostOnline      = "online"
	HostUnreachable = "unreachable"
)

// Host is a machine that runs capsules, as the control plane knows it.
type Host struct {
	ID           string
	Type         string
	TeamID       string // "" for regular hosts
	Status       string
	Arch         string
	CPUs         int
	MemoryMB     int64
	DiskMB       int64
	Runtime      string
	Address      string
	Hostname     string
	AgentVersion string
	FreeCPUs     int
	FreeMemoryMB int64
	FreeDiskMB   int64
	Capsules     json.RawMessage // as last reported by the agent
	Templates    []string        // templates the agent has on disk, as last reported
	// FreeAddresses is how many more capsules the host's address pool
	// takes, as last reported; -1 when the agent has not reported it.
	FreeAddresses int
	// TLSPin is the pin of the agent's TLS key (internal/hosttls), the
	// only key the control plane accepts from it; "" until one is known.
	TLSPin string
	// AllocatedVCPUs and AllocatedMemoryMB are what the host's live
	// capsules take (see liveStatuses), the scheduler's own accounting.
	AllocatedVCPUs    int
	AllocatedMemoryMB int64
	LastHeartbeatAt   *time.Time
	RegisteredAt      *time.Time
	CreatedAt         time.Time
	CreatedBy         string
}

// NewHost is what creating a host stores.
type NewHost struct {
	Type      string
	TeamID    string
	CreatedBy string
}

// Secret is a token's hash and expiry; the token itself is never stored.
type Secret struct {
	Hash      string
	ExpiresAt time.Time
}

// HostSpec is what an agent reports about its machine when it registers.
type HostSpec struct {
	Address      string
	Arch         string
	CPUs         int
	MemoryMB     int64
	DiskMB       int64
	Runtime      string
	AgentVersion string
	Hostname     string
	// TLSPin is the pin of the agent's TLS key; registration replaces
	// whatever was pinned before.
	TLSPin string
}

// Capacity is what an agent reports in a heartbeat.
type Capacity struct {
	FreeCPUs     int
	FreeMemoryMB int64
	FreeDiskMB   int64
	Capsules     json.RawMessage
	// Templates replaces the host's template list (nil: none).
	Templates []string
	// FreeAddresses is how many more capsules the host's address pool
	// takes; nil when the agent does not report it.
	FreeAddresses *int
}

const hostColumns = `id::text, type, coalesce(team_id::text, ''), status, arch, cpus, memory_mb, disk_mb,
	runtime, address, hostname, agent_version, free_cpus, free_memory_mb, free_disk_mb, capsules,
	templates, (SELECT coalesce(sum(c.vcpus), 0) FROM capsules c WHERE c.host_id = hosts.id AND c.status IN ` + liveStatusesSQL + `),
	(SELECT coalesce(sum(c.memory_mb), 0) FROM capsules c WHERE c.host_id = hosts.id AND c.status IN ` + liveStatusesSQL + `),
	last_heartbeat_at, registered_at, created_at, coalesce(created_by::text, ''),
	coalesce(free_addresses, -1), tls_spki_sha256`

func scanHost(row pgx.Row) (Host, error) {
	var h Host
	err := row.Scan(&h.ID, &h.Type, &h.TeamID, &h.Status, &h.Arch, &h.CPUs, &h.MemoryMB, &h.DiskMB,
		&h.Runtime, &h.Address, &h.Hostname, &h.AgentVersion, &h.FreeCPUs, &h.FreeMemoryMB, &h.FreeDiskMB,
		&h.Capsules, &h.Templates, &h.AllocatedVCPUs, &h.AllocatedMemoryMB, &h.LastHeartbeatAt, &h.RegisteredAt, &h.CreatedAt, &h.CreatedBy,
		&h.FreeAddresses, &h.TLSPin)
	return h, err
}

// CreateHost stores a pending host with its first registration token and
// writes ev (ResourceID filled in).
func (s *Store) CreateHost(ctx context.Context, nh NewHost, token Secret, ev Event) (Host, error) {
	var h Host
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		h, err = scanHost(tx.QueryRow(ctx, `
			INSERT INTO hosts (type, team_id, created_by) VALUES ($1, $2, $3)
			RETURNING `+hostColumns, nh.Type, nullable(nh.TeamID), nullable(nh.CreatedBy)))
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO host_registration_tokens (host_id, token_hash, expires_at) VALUES ($1, $2, $3)`,
			h.ID, token.Hash, token.ExpiresAt); err != nil {
			return err
		}
		ev.ResourceID = h.ID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Host{}, fmt.Errorf("creating host: %w", err)
	}
	return h, nil
}

// Hosts lists hosts, oldest first: every host when teamID is "", else the
// BYOC hosts of that team.
func (s *Store) Hosts(ctx context.Context, teamID string) ([]Host, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT `+hostColumns+` FROM hosts
		WHERE $1::uuid IS NULL OR team_id = $1
		ORDER BY created_at, id`, nullable(teamID))
	if err != nil {
		return nil, fmt.Errorf("listing hosts: %w", err)
	}
	hosts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Host, error) { return scanHost(row) })
	if err != nil {
		return nil, fmt.Errorf("listing hosts: %w", err)
	}
	return hosts, nil
}

// Host returns one host, or ErrNotFound.
func (s *Store) Host(ctx context.Context, id string) (Host, error) {
	h, err := scanHost(s.pool.QueryRow(ctx, `SELECT `+hostColumns+` FROM hosts WHERE id = $1`, id))
	if err != nil {
		return Host{}, notFound("looking up host", err)
	}
	return h, nil
}

// DeleteHost deletes a host together with its tokens and credentials, so
// its agent is refused from then on, and writes ev.
func (s *Store) DeleteHost(ctx context.Context, id string, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Nothing of the host's capsules can run or resume again once it
		// is gone (their host_id becomes NULL): a capsule left running,
		// paused or missing would say otherwise. An operation in flight
		// on one finds its compare-and-set refused.
		if _, err := tx.Exec(ctx, `
			UPDATE capsules SET status = 'error', updated_at = now(), settle_from_host = false,
			       status_reason = 'its host was deleted (it was ' || status || ')',
			       paused_at = NULL, snapshot_bytes = 0
			WHERE host_id = $1 AND status NOT IN ('stopped', 'error')`, id); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM hosts WHERE id = $1`, id)
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
		return fmt.Errorf("deleting host: %w", err)
	}
	return nil
}

// IssueRegistrationToken stores a new registration token for a host,
// revoking every older unused one, and writes ev. An unknown host returns
// ErrNotFound.
func (s *Store) IssueRegistrationToken(ctx context.Context, hostID string, token Secret, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Locking the host row orders concurrent issues, so exactly one
		// token stays valid.
		var id string
		if err := tx.QueryRow(ctx, `SELECT id::text FROM hosts WHERE id = $1 FOR UPDATE`, hostID).Scan(&id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			UPDATE host_registration_tokens SET revoked_at = now()
			WHERE host_id = $1 AND used_at IS NULL AND revoked_at IS NULL`, hostID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO host_registration_tokens (host_id, token_hash, expires_at) VALUES ($1, $2, $3)`,
			hostID, token.Hash, token.ExpiresAt); err != nil {
			return err
		}
		ev.ResourceID = hostID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return notFound("issuing registration token", err)
	}
	return nil
}

// Register consumes a registration token, records the host's spec, marks it
// online, replaces its credentials with cred and refresh, and writes ev
// (actor, team and resource filled in). An unknown, used, revoked or expired
// token returns ErrNotFound. The token is consumed by a conditional UPDATE
// whose row lock makes concurrent registrations with one token wait for each
// other, so exactly one succeeds.
func (s *Store) Register(ctx context.Context, tokenHash string, spec HostSpec, cred, refresh Secret, ev Event) (Host, error) {
	var h Host
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var hostID string
		err := tx.QueryRow(ctx, `
			UPDATE host_registration_tokens SET used_at = now()
			WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
			RETURNING host_id::text`, tokenHash).Scan(&hostID)
		if err != nil {
			return err
		}
		h, err = scanHost(tx.QueryRow(ctx, `
			UPDATE hosts SET status = 'online', address = $2, arch = $3, cpus = $4, memory_mb = $5,
			       disk_mb = $6, runtime = $7, agent_version = $8, hostname = $9,
			       free_cpus = $4, free_memory_mb = $5, free_disk_mb = $6,
			       registered_at = now(), last_heartbeat_at = now(), tls_spki_sha256 = $10,
			       free_addresses = NULL
			WHERE id = $1
			RETURNING `+hostColumns, hostID, spec.Address, spec.Arch, spec.CPUs, spec.MemoryMB,
			spec.DiskMB, spec.Runtime, spec.AgentVersion, spec.Hostname, spec.TLSPin))
		if err != nil {
			return err
		}
		if err := replaceCredentials(ctx, tx, hostID, cred, refresh); err != nil {
			return err
		}
		ev.TeamID, ev.ActorType, ev.ActorID, ev.ResourceID = h.TeamID, ActorHost, h.ID, h.ID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return Host{}, notFound("registering host", err)
	}
	return h, nil
}

// replaceCredentials revokes a host's live credentials and refresh tokens
// (on refresh, the one presented is already used) and stores new ones.
func replaceCredentials(ctx context.Context, tx pgx.Tx, hostID string, cred, refresh Secret) error {
	if _, err := tx.Exec(ctx, `
		UPDATE host_credentials SET revoked_at = now() WHERE host_id = $1 AND revoked_at IS NULL`, hostID); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `
		UPDATE host_refresh_tokens SET revoked_at = now()
		WHERE host_id = $1 AND used_at IS NULL AND revoked_at IS NULL`, hostID); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO host_credentials (host_id, token_hash, expires_at) VALUES ($1, $2, $3)`,
		hostID, cred.Hash, cred.ExpiresAt); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO host_refresh_tokens (host_id, token_hash, expires_at) VALUES ($1, $2, $3)`,
		hostID, refresh.Hash, refresh.ExpiresAt)
	return err
}

// HostByCredential returns the id of the host holding a live credential with
// that hash, or ErrNotFound.
func (s *Store) HostByCredential(ctx context.Context, hash string) (string, error) {
	var id string
	err := s.pool.QueryRow(ctx, `
		SELECT host_id::text FROM host_credentials
		WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()`, hash).Scan(&id)
	if err != nil {
		return "", notFound("looking up host credential", err)
	}
	return id, nil
}

// Heartbeat records that a host is alive with capacity c and marks it
// online. An unknown host returns ErrNotFound. It reports whether the host
// was unreachable before.
func (s *Store) Heartbeat(ctx context.Context, hostID string, c Capacity) (revived bool, err error) {
	capsules := c.Capsules
	if len(capsules) == 0 {
		capsules = json.RawMessage("[]")
	}
	templates := c.Templates
	if templates == nil {
		templates = []string{}
	}
	var prev string
	err = s.pool.QueryRow(ctx, `
		UPDATE hosts h SET status = 'online', last_heartbeat_at = now(),
		       free_cpus = $2, free_memory_mb = $3, free_disk_mb = $4, capsules = $5, templates = $6,
		       free_addresses = $7
		FROM (SELECT id, status FROM hosts WHERE id = $1 FOR UPDATE) old
		WHERE h.id = old.id
		RETURNING old.status`, hostID, c.FreeCPUs, c.FreeMemoryMB, c.FreeDiskMB, []byte(capsules), templates,
		c.FreeAddresses).Scan(&prev)
	if err != nil {
		return false, notFound("recording heartbeat", err)
	}
	return prev == HostUnreachable, nil
}

// ErrPinMismatch is PinHostKey's answer when the host has another key
// pinned than the one its agent now presents.
var ErrPinMismatch = errors.New("the host has another TLS key pinned")

// PinHostKey pins pin as host hostID's agent TLS key when none is pinned
// yet (a host registered before agents served TLS), writing ev (actor,
// team, resource and the pin filled in), and reports whether it did. The
// same pin again changes nothing; another one returns ErrPinMismatch and
// changes nothing: only a new registration replaces a pin. An unknown host
// returns ErrNotFound.
func (s *Store) PinHostKey(ctx context.Context, hostID, pin string, ev Event) (pinned bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var teamID, old string
		err := tx.QueryRow(ctx, `
			SELECT coalesce(team_id::text, ''), tls_spki_sha256 FROM hosts WHERE id = $1 FOR UPDATE`, hostID).Scan(&teamID, &old)
		if err != nil {
			return err
		}
		switch old {
		case pin:
			return nil
		case "":
		default:
			return ErrPinMismatch
		}
		if _, err := tx.Exec(ctx, `UPDATE hosts SET tls_spki_sha256 = $2 WHERE id = $1`, hostID, pin); err != nil {
			return err
		}
		pinned = true
		ev.TeamID, ev.ActorType, ev.ActorID, ev.ResourceID = teamID, ActorHost, hostID, hostID
		ev.Metadata = map[string]any{"tls_spki_sha256": pin}
		return writeEvent(ctx, tx, ev)
	})
	if errors.Is(err, ErrPinMismatch) {
		return false, fmt.Errorf("pinning host key: %w", err)
	}
	if err != nil {
		return false, notFound("pinning host key", err)
	}
	return pinned, nil
}

// SetHostAddress records addr as where the control plane reaches host
// hostID, when it is not that already, and writes ev (actor, team,
// resource and the old and new address filled in) with the change. It
// reports whether the address changed, and from what. An unknown host
// returns ErrNotFound.
func (s *Store) SetHostAddress(ctx context.Context, hostID, addr string, ev Event) (prev string, changed bool, err error) {
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		var teamID, old string
		err := tx.QueryRow(ctx, `
			SELECT coalesce(team_id::text, ''), address FROM hosts WHERE id = $1 FOR UPDATE`, hostID).Scan(&teamID, &old)
		if err != nil {
			return err
		}
		if old == addr {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE hosts SET address = $2 WHERE id = $1`, hostID, addr); err != nil {
			return err
		}
		prev, changed = old, true
		ev.TeamID, ev.ActorType, ev.ActorID, ev.ResourceID = teamID, ActorHost, hostID, hostID
		ev.Metadata = map[string]any{"from": old, "to": addr}
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return "", false, notFound("changing host address", err)
	}
	return prev, changed, nil
}

// Refresh consumes a refresh token, revokes the host's credentials, stores
// cred and refresh in their place and writes ev (actor, team and resource
// filled in). It returns the host's id; an unknown, used, revoked or expired
// token returns ErrNotFound.
func (s *Store) Refresh(ctx context.Context, tokenHash string, cred, refresh Secret, ev Event) (string, error) {
	var hostID, teamID string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			UPDATE host_refresh_tokens t SET used_at = now()
			FROM hosts h
			WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now()
			  AND h.id = t.host_id
			RETURNING t.host_id::text, coalesce(h.team_id::text, '')`, tokenHash).Scan(&hostID, &teamID)
		if err != nil {
			return err
		}
		if err := replaceCredentials(ctx, tx, hostID, cred, refresh); err != nil {
			return err
		}
		ev.TeamID, ev.ActorType, ev.ActorID, ev.ResourceID = teamID, ActorHost, hostID, hostID
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return "", notFound("refreshing host credential", err)
	}
	return hostID, nil
}

// monitorLock is the advisory lock that lets one replica at a time run the
// host monitor.
const monitorLock = 0x5772656e6e02 // "Wrenn" 2

// ErrLocked means another replica holds the lock of a periodic job.
var ErrLocked = errors.New("held by another replica")

// MarkUnreachable marks online hosts silent for longer than timeout
// unreachable and returns their ids. It returns ErrLocked without doing
// anything while another replica runs it.
func (s *Store) MarkUnreachable(ctx context.Context, timeout time.Duration) ([]string, error) {
	var ids []string
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, monitorLock).Scan(&locked); err != nil {
			return err
		}
		if !locked {
			return ErrLocked
		}
		rows, err := tx.Query(ctx, `
			UPDATE hosts SET status = 'unreachable'
			WHERE status = 'online' AND last_heartbeat_at < now() - make_interval(secs => $1)
			RETURNING id::text, coalesce(team_id::text, '')`, timeout.Seconds())
		if err != nil {
			return err
		}
		// Each event belongs to the host's team, as its registration's does.
		events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) {
			ev := Event{ActorType: ActorSystem, Action: "host.unreachable", Metadata: map[string]any{"timeout_sec": timeout.Seconds()}}
			err := row.Scan(&ev.ResourceID, &ev.TeamID)
			return ev, err
		})
		if err != nil {
			return err
		}
		for _, ev := range events {
			if err := writeEvent(ctx, tx, ev); err != nil {
				return err
			}
			ids = append(ids, ev.ResourceID)
		}
		if len(ids) == 0 {
			return nil
		}
		// Their capsules cannot be vouched for until the agent reports
		// them again (ReconcileHost); an operation in flight on one of
		// them finds its compare-and-set refused and leaves it missing.
		_, err = tx.Exec(ctx, `
			UPDATE capsules c SET status = 'missing', updated_at = now(),
			       status_reason = 'was ' || c.status || '; its host has not been heard from since '
			                       || to_char(h.last_heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
			FROM hosts h
			WHERE h.id = c.host_id AND c.host_id = ANY($1::uuid[]) AND c.status IN `+unsettledStatusesSQL,
			ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("marking silent hosts unreachable: %w", err)
	}
	return ids, nil
}

// unsettledStatusesSQL are the statuses whose truth is on the host: a
// lost host's capsules in them become missing.
const unsettledStatusesSQL = `('pending', 'starting', 'running', 'pausing', 'paused', 'resuming')`

// ReportedCapsule is one capsule as an agent reports it in a heartbeat.
type ReportedCapsule struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// Reconciled is one capsule ReconcileHost changed.
type Reconciled struct {
	ID, TeamID, From, To string
}

// reportLatency bounds the time from an agent listing its capsules to the
// control plane reading the heartbeat that carries the list. A capsule left
// to its host's report is settled only by a report received longer than
// that after, so that a list made before the operation failed cannot undo
// what the operation did.
const reportLatency = 5 * time.Second

// ReconcileHost settles host hostID's capsules from reported, the agent's
// own list: capsules marked missing, capsules an operation left to the host
// (LeaveToHost), and capsules left starting, pausing or resuming for longer
// than staleAfter (an operation whose control plane died). Alive becomes
// running, paused stays paused, absent or stopped becomes stopped; one the
// host reports pausing or resuming is left for a later report. A capsule
// recorded running or paused that the host reports stopped (its sandbox
// died, its saved state is gone) becomes stopped too; one the host merely
// does not list is not, since a heartbeat may predate its creation.
// Nothing else is touched, so operations in flight are not
// raced: they hold their transient status for less than staleAfter.
func (s *Store) ReconcileHost(ctx context.Context, hostID string, reported []ReportedCapsule, staleAfter time.Duration) ([]Reconciled, error) {
	if reported == nil {
		reported = []ReportedCapsule{}
	}
	rep, err := json.Marshal(reported)
	if err != nil {
		return nil, fmt.Errorf("reconciling host capsules: %w", err)
	}
	// The ids reported stopped, as uuids so that the primary key finds
	// them (an id that is no uuid is no capsule's).
	stopped := []string{}
	for _, r := range reported {
		if u, err := uuid.Parse(r.ID); err == nil && r.Status == CapsuleStopped {
			stopped = append(stopped, u.String())
		}
	}
	var out []Reconciled
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			WITH rep AS (
				SELECT DISTINCT ON (id) id, status FROM jsonb_to_recordset($2::jsonb) AS r(id text, status text)
			), old AS (
				SELECT c.id, c.status FROM capsules c
				WHERE c.host_id = $1
				  AND (c.status = 'missing' OR (c.status IN ('starting', 'pausing', 'resuming')
				       -- A report left to settle a capsule must have been
				       -- made after that: one built just before and received
				       -- just after would settle it to the old status.
				       AND ((c.settle_from_host AND c.updated_at < now() - make_interval(secs => $5))
				            OR c.updated_at < now() - make_interval(secs => $3)))
				       -- The host says it is stopped: the agent never brings
				       -- a stopped capsule back, so the report cannot be stale.
				       OR (c.status IN ('running', 'paused') AND c.id = ANY($4::uuid[])))
				FOR UPDATE
			), want AS (
				SELECT old.id, old.status AS was, CASE
					WHEN rep.status = 'running' AND c.address <> '' THEN 'running'
					WHEN rep.status = 'running' THEN 'error'
					WHEN rep.status = 'paused' THEN 'paused'
					ELSE 'stopped' END AS status
				FROM old JOIN capsules c ON c.id = old.id LEFT JOIN rep ON rep.id = old.id::text
				-- A pause or resume still under way on the host settles
				-- with a later report.
				WHERE rep.status IS NULL OR rep.status NOT IN ('pausing', 'resuming')
			)
			UPDATE capsules c SET status = want.status, updated_at = now(), settle_from_host = false,
			       status_reason = CASE want.status
			           WHEN 'stopped' THEN 'its host no longer has it (found while reconciling from ' || want.was || ')'
			           WHEN 'error' THEN 'its start did not finish (its address was never recorded); it is removed from its host'
			           ELSE '' END,
			       stopped_at = CASE WHEN want.status = 'stopped' THEN now() ELSE stopped_at END,
			       paused_at = CASE WHEN want.status = 'paused' THEN coalesce(paused_at, now()) ELSE NULL END,
			       last_active_at = CASE WHEN want.status = 'running' THEN now() ELSE last_active_at END
			FROM want
			WHERE c.id = want.id AND c.status = want.was
			RETURNING c.id::text, c.team_id::text, want.was, want.status`, hostID, rep, staleAfter.Seconds(), stopped,
			reportLatency.Seconds())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Reconciled, error) {
			var r Reconciled
			err := row.Scan(&r.ID, &r.TeamID, &r.From, &r.To)
			return r, err
		})
		if err != nil {
			return err
		}
		for _, r := range out {
			if err := writeEvent(ctx, tx, Event{ActorType: ActorSystem, Action: "capsule.reconcile", ResourceID: r.ID,
				TeamID: r.TeamID, Metadata: map[string]any{"from": r.From, "to": r.To, "host_id": hostID}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reconciling host capsules: %w", err)
	}
	return out, nil
}

// FinishedCapsulesOnHost returns the ids of the capsules in reported that
// are recorded stopped or in error on host hostID: neither can run again,
// so what the host still holds of them (a dead sandbox's state, or the
// running sandbox of a start that never finished, which no placement
// counts) is a leftover. Ids that name no capsule of the host are not
// returned.
func (s *Store) FinishedCapsulesOnHost(ctx context.Context, hostID string, reported []ReportedCapsule) ([]string, error) {
	ids := make([]string, 0, len(reported))
	for _, r := range reported {
		if u, err := uuid.Parse(r.ID); err == nil {
			ids = append(ids, u.String())
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT id::text FROM capsules WHERE id = ANY($2::uuid[]) AND host_id = $1 AND status IN ('stopped', 'error')`, hostID, ids)
	if err != nil {
		return nil, fmt.Errorf("finding finished capsules on host: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("finding finished capsules on host: %w", err)
	}
	return out, nil
}

// AddHostTemplate adds name to host hostID's template list until its next
// heartbeat reports the list again: a snapshot just written there can be
// used at once.
func (s *Store) AddHostTemplate(ctx context.Context, hostID, name string) error {
	_, err := s.pool.Exec(ctx, `
		UPDATE hosts SET templates = array_append(templates, $2)
		WHERE id = $1 AND NOT $2 = ANY(templates)`, hostID, name)
	if err != nil {
		return fmt.Errorf("adding host template: %w", err)
	}
	return nil
}

// HostCounts returns how many hosts are in each status.
func (s *Store) HostCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM hosts GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("counting hosts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{HostPending: 0, HostOnline: 0, HostUnreachable: 0}
	for rows.Next() {
		var (
			status string
			n      int
		)
		if err := rows.Scan(&status, &n); err != nil {
			return nil, fmt.Errorf("counting hosts: %w", err)
		}
		out[status] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting hosts: %w", err)
	}
	return out, nil
}
