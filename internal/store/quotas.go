package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Quota is what one team may hold at once. Zero in a field means no limit.
type Quota struct {
	// RunningCapsules counts capsules that take CPU and memory: pending,
	// starting, running, pausing and resuming.
	RunningCapsules int `json:"running_capsules"`
	// VCPUs and MemoryMB sum the sizes of those capsules.
	VCPUs    int   `json:"vcpus"`
	MemoryMB int64 `json:"memory_mb"`
	// DiskMB sums disk_mb of every capsule that holds disk on its host:
	// the running ones and the paused ones (their saved state).
	DiskMB int64 `json:"disk_mb"`
	// PausedCapsules counts paused capsules, which hold an address and
	// their saved state on their host.
	PausedCapsules int `json:"paused_capsules"`
	// Snapshots counts the team's snapshot templates.
	Snapshots int `json:"snapshots"`
	// ConcurrentCreates counts capsules being created (pending, starting).
	ConcurrentCreates int `json:"concurrent_creates"`
}

// QuotaOverride is what a platform admin set for a team: nil fields take
// the default.
type QuotaOverride struct {
	RunningCapsules   *int   `json:"running_capsules"`
	VCPUs             *int   `json:"vcpus"`
	MemoryMB          *int64 `json:"memory_mb"`
	DiskMB            *int64 `json:"disk_mb"`
	PausedCapsules    *int   `json:"paused_capsules"`
	Snapshots         *int   `json:"snapshots"`
	ConcurrentCreates *int   `json:"concurrent_creates"`
}

// Apply returns def with the fields o sets replaced.
func (o QuotaOverride) Apply(def Quota) Quota {
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set64 := func(dst *int64, v *int64) {
		if v != nil {
			*dst = *v
		}
	}
	set(&def.RunningCapsules, o.RunningCapsules)
	set(&def.VCPUs, o.VCPUs)
	set64(&def.MemoryMB, o.MemoryMB)
	set64(&def.DiskMB, o.DiskMB)
	set(&def.PausedCapsules, o.PausedCapsules)
	set(&def.Snapshots, o.Snapshots)
	set(&def.ConcurrentCreates, o.ConcurrentCreates)
	return def
}

// Usage is what a team holds now, in the terms of Quota.
type Usage Quota

// QuotaError is a request that would take a team past one of its limits.
type QuotaError struct {
	// Limit names it as the API reports it: "running_capsules", "vcpus",
	// "memory_mb", "disk_mb", "paused_capsules", "snapshots" or
	// "concurrent_creates".
	Limit string
	Max   int64 // the team's limit
	Used  int64 // what the team holds now
	Asked int64 // what the request adds
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("team quota %s: %d in use + %d asked > %d", e.Limit, e.Used, e.Asked, e.Max)
}

func teamOverride(ctx context.Context, q querier, teamID string) (QuotaOverride, error) {
	var o QuotaOverride
	err := q.QueryRow(ctx, `
		SELECT running_capsules, vcpus, memory_mb, disk_mb, paused_capsules, snapshots, concurrent_creates
		FROM team_quotas WHERE team_id = $1`, teamID).
		Scan(&o.RunningCapsules, &o.VCPUs, &o.MemoryMB, &o.DiskMB, &o.PausedCapsules, &o.Snapshots, &o.ConcurrentCreates)
	if errors.Is(err, pgx.ErrNoRows) {
		return QuotaOverride{}, nil
	}
	return o, err
}

func teamUsage(ctx context.Context, q querier, teamID string) (Usage, error) {
	var u Usage
	err := q.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE status IN `+liveStatusesSQL+`),
		       coalesce(sum(vcpus) FILTER (WHERE status IN `+liveStatusesSQL+`), 0),
		       coalesce(sum(memory_mb) FILTER (WHERE status IN `+liveStatusesSQL+`), 0),
		       coalesce(sum(disk_mb) FILTER (WHERE status IN `+liveStatusesSQL+` OR status = 'paused'), 0),
		       count(*) FILTER (WHERE status = 'paused'),
		       (SELECT count(*) FROM templates t WHERE t.team_id = $1 AND t.kind = 'snapshot'),
		       count(*) FILTER (WHERE status IN ('pending', 'starting'))
		FROM capsules WHERE team_id = $1`, teamID).
		Scan(&u.RunningCapsules, &u.VCPUs, &u.MemoryMB, &u.DiskMB, &u.PausedCapsules, &u.Snapshots, &u.ConcurrentCreates)
	return u, err
}

// TeamQuota returns team teamID's quota (def with what a platform admin
// set), its override and what it uses now.
func (s *Store) TeamQuota(ctx context.Context, teamID string, def Quota) (Quota, QuotaOverride, Usage, error) {
	o, err := teamOverride(ctx, s.pool, teamID)
	if err != nil {
		return Quota{}, QuotaOverride{}, Usage{}, fmt.Errorf("reading team quota: %w", err)
	}
	u, err := teamUsage(ctx, s.pool, teamID)
	if err != nil {
		return Quota{}, QuotaOverride{}, Usage{}, fmt.Errorf("reading team usage: %w", err)
	}
	return o.Apply(def), o, u, nil
}

// SetTeamQuota replaces what team teamID's quota overrides, recording ev.
// ErrNotFound when there is no such team.
func (s *Store) SetTeamQuota(ctx context.Context, teamID string, o QuotaOverride, ev Event) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `
			INSERT INTO team_quotas (team_id, running_capsules, vcpus, memory_mb, disk_mb, paused_capsules, snapshots, concurrent_creates)
			SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM teams WHERE id = $1
			ON CONFLICT (team_id) DO UPDATE SET
			  running_capsules = $2, vcpus = $3, memory_mb = $4, disk_mb = $5, paused_capsules = $6,
			  snapshots = $7, concurrent_creates = $8, updated_at = now()`,
			teamID, o.RunningCapsules, o.VCPUs, o.MemoryMB, o.DiskMB, o.PausedCapsules, o.Snapshots, o.ConcurrentCreates)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		return writeEvent(ctx, tx, ev)
	})
	if err != nil {
		return notFound("setting team quota", err)
	}
	return nil
}

// capsuleAsk is what a capsule adds to its team's usage when it is
// created or resumed.
type capsuleAsk struct {
	vcpus, memoryMB, diskMB int64
	// creating: a new capsule (counts as a create under way and adds its
	// disk); resuming: a paused one (leaves the paused ones).
	creating bool
}

// checkQuota locks team teamID (so that its creates and resumes take
// turns) and returns a *QuotaError when ask would take it past quota q
// (with what a platform admin set for it applied).
func checkQuota(ctx context.Context, tx pgx.Tx, teamID string, def Quota, ask capsuleAsk) error {
	var one int
	if err := tx.QueryRow(ctx, `SELECT 1 FROM teams WHERE id = $1 FOR UPDATE`, teamID).Scan(&one); err != nil {
		return fmt.Errorf("locking team: %w", err)
	}
	o, err := teamOverride(ctx, tx, teamID)
	if err != nil {
		return err
	}
	q := o.Apply(def)
	u, err := teamUsage(ctx, tx, teamID)
	if err != nil {
		return err
	}
	type check struct {
		limit      string
		max, used  int64
		asked      int64
		applicable bool
	}
	checks := []check{
		{"concurrent_creates", int64(q.ConcurrentCreates), int64(u.ConcurrentCreates), 1, ask.creating},
		{"running_capsules", int64(q.RunningCapsules), int64(u.RunningCapsules), 1, true},
		{"vcpus", int64(q.VCPUs), int64(u.VCPUs), ask.vcpus, true},
		{"memory_mb", q.MemoryMB, u.MemoryMB, ask.memoryMB, true},
		{"disk_mb", q.DiskMB, u.DiskMB, ask.diskMB, ask.creating},
	}
	for _, c := range checks {
		if c.applicable && c.max > 0 && c.used+c.asked > c.max {
			return &QuotaError{Limit: c.limit, Max: c.max, Used: c.used, Asked: c.asked}
		}
	}
	return nil
}

// ClaimSnapshot starts a snapshot of capsule capsuleID (of team teamID,
// on host hostID) as template tid, in one transaction: under the team's
// lock, as creates and resumes are, it checks that one more snapshot fits
// the team's snapshot quota (def with its override applied), counting its
// snapshot templates and its snapshots under way; it moves the capsule from
// was to pausing; and it records the snapshot request (BeginSnapshot), so
// that concurrent snapshots are counted one after the other and exactly
// the quota's number get through. Past the quota it returns a
// *QuotaError; a capsule no longer in was, ErrConflict (with the capsule
// as it is).
func (s *Store) ClaimSnapshot(ctx context.Context, teamID, capsuleID, was, tid, hostID string, def Quota) (Capsule, error) {
	var c Capsule
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM teams WHERE id = $1 FOR UPDATE`, teamID).Scan(&one); err != nil {
			return fmt.Errorf("locking team: %w", err)
		}
		o, err := teamOverride(ctx, tx, teamID)
		if err != nil {
			return err
		}
		if max := o.Apply(def).Snapshots; max > 0 {
			var used int
			err := tx.QueryRow(ctx, `
				SELECT (SELECT count(*) FROM templates t WHERE t.team_id = $1 AND t.kind = 'snapshot') +
				       (SELECT count(*) FROM snapshot_requests r WHERE r.team_id = $1
				          AND NOT EXISTS (SELECT 1 FROM templates t WHERE t.id = r.template_id))`, teamID).Scan(&used)
			if err != nil {
				return err
			}
			if used+1 > max {
				return &QuotaError{Limit: "snapshots", Max: int64(max), Used: int64(used), Asked: 1}
			}
		}
		c, err = scanCapsule(tx.QueryRow(ctx, `
			UPDATE capsules SET status = 'pausing', status_reason = '', updated_at = now(), settle_from_host = false,
			       paused_at = NULL, snapshot_bytes = 0
			WHERE id = $1 AND team_id = $2 AND status = $3
			RETURNING `+capsuleColumns, capsuleID, teamID, was))
		if errors.Is(err, pgx.ErrNoRows) {
			return currentStatusConflict(ctx, tx, capsuleID, &c)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO snapshot_requests (template_id, host_id, team_id) VALUES ($1, $2, $3)`,
			tid, hostID, teamID)
		return err
	})
	var qe *QuotaError
	if errors.As(err, &qe) {
		return c, err
	}
	if err != nil {
		return c, notFound("claiming capsule snapshot", err)
	}
	return c, nil
}

// CheckSnapshotQuota returns a *QuotaError when team teamID holds as many
// snapshots as its quota allows (def with its override applied).
func (s *Store) CheckSnapshotQuota(ctx context.Context, teamID string, def Quota) error {
	return s.checkOneMore(ctx, teamID, def, "snapshots", func(q Quota) int { return q.Snapshots })
}

// CheckPausedQuota returns a *QuotaError when team teamID holds as many
// paused capsules as its quota allows.
func (s *Store) CheckPausedQuota(ctx context.Context, teamID string, def Quota) error {
	return s.checkOneMore(ctx, teamID, def, "paused_capsules", func(q Quota) int { return q.PausedCapsules })
}

// checkOneMore returns a *QuotaError named limit when one more of what
// field picks would take team teamID past its quota.
func (s *Store) checkOneMore(ctx context.Context, teamID string, def Quota, limit string, field func(Quota) int) error {
	q, _, u, err := s.TeamQuota(ctx, teamID, def)
	if err != nil {
		return err
	}
	if max, used := field(q), field(Quota(u)); max > 0 && used+1 > max {
		return &QuotaError{Limit: limit, Max: int64(max), Used: int64(used), Asked: 1}
	}
	return nil
}
