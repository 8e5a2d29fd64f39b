package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
)

// TemplateCopy is where a template goes so that a capsule can be placed:
// From has it, To lacks it and has room for the template and the capsule.
type TemplateCopy struct {
	From, To Host
}

// PlanTemplateCopy picks, among the online hosts team teamID may use, one
// that lacks template agentName and could take a capsule asking ask once
// it holds the template's templateMB more of disk, and one of the same
// runtime that has the template, to copy it from. It returns ErrNoHost
// when there is no such pair. Nothing is locked: the capsule is placed
// afterwards, by CreateCapsule, as any other.
//
// A team's own (BYOC) host is run by that team, so what it holds is
// trusted by that team only: it is a source for the team's own hosts,
// never for the hosts every team shares.
func (s *Store) PlanTemplateCopy(ctx context.Context, teamID, agentName string, ask scheduler.Ask, templateMB int64) (TemplateCopy, error) {
	var plan TemplateCopy
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+hostColumns+` FROM hosts
			WHERE status = 'online' AND (type = 'regular' OR team_id = $1)
			ORDER BY id`, teamID)
		if err != nil {
			return err
		}
		hosts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Host, error) { return scanHost(row) })
		if err != nil {
			return err
		}
		var have, lack []Host
		for _, h := range hosts {
			if slices.Contains(h.Templates, agentName) {
				have = append(have, h)
			} else {
				lack = append(lack, h)
			}
		}
		source := func(to Host) (Host, bool) {
			for _, byoc := range []bool{false, true} { // shared hosts first
				for _, from := range have {
					if from.Runtime != to.Runtime || (from.Type == HostBYOC) != byoc {
						continue
					}
					if from.Type != HostBYOC || (to.Type == HostBYOC && to.TeamID == from.TeamID) {
						return from, true
					}
				}
			}
			return Host{}, false
		}
		var (
			cands []scheduler.Host
			froms []Host
			tos   []Host
		)
		for _, to := range lack {
			from, ok := source(to)
			if !ok {
				continue
			}
			cands = append(cands, scheduler.Host{
				ID: to.ID, BYOC: to.Type == HostBYOC, CPUs: to.CPUs, MemoryMB: to.MemoryMB, DiskMB: to.DiskMB,
				FreeDiskMB: freeDisk(to), FreeAddresses: to.FreeAddresses,
			})
			froms, tos = append(froms, from), append(tos, to)
		}
		if len(cands) == 0 {
			return ErrNoHost
		}
		ids := make([]string, len(cands))
		for i, h := range cands {
			ids[i] = h.ID
		}
		if err := allocations(ctx, tx, cands, ids); err != nil {
			return err
		}
		ask.DiskMB += templateMB
		best, ok := scheduler.Pick(cands, ask)
		if !ok {
			return ErrNoHost
		}
		plan = TemplateCopy{From: froms[best], To: tos[best]}
		return nil
	})
	if err != nil {
		return TemplateCopy{}, fmt.Errorf("planning a template copy: %w", err)
	}
	return plan, nil
}

// freeDisk is h's free disk as the scheduler takes it: -1 before its first
// heartbeat.
func freeDisk(h Host) int64 {
	if h.LastHeartbeatAt == nil {
		return -1
	}
	return h.FreeDiskMB
}

// HostsWithTemplate returns the hosts whose last heartbeat (or a copy or
// import since) listed template agentName.
func (s *Store) HostsWithTemplate(ctx context.Context, agentName string) ([]Host, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+hostColumns+` FROM hosts WHERE $1 = ANY(templates) ORDER BY id`, agentName)
	if err != nil {
		return nil, fmt.Errorf("listing hosts of template: %w", err)
	}
	hosts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Host, error) { return scanHost(row) })
	if err != nil {
		return nil, fmt.Errorf("listing hosts of template: %w", err)
	}
	return hosts, nil
}
