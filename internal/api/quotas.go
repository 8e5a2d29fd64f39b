package api

import (
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// This file serves team quotas: what a team may hold at once. Every team
// has the control plane's defaults (WRENN_QUOTA_*); a platform admin may
// set other limits for one team. The capsule service enforces them.

// defaultQuota is every team's quota as the configuration sets it.
func (s *server) defaultQuota() store.Quota {
	c := s.cfg
	return store.Quota{
		RunningCapsules: c.QuotaRunningCapsules, VCPUs: c.QuotaVCPUs, MemoryMB: int64(c.QuotaMemoryMB),
		DiskMB: int64(c.QuotaDiskMB), PausedCapsules: c.QuotaPausedCapsules, Snapshots: c.QuotaSnapshots,
		ConcurrentCreates: c.QuotaConcurrentCreates,
	}
}

// quotaJSON is a team's quota: its limits (0: none), what it uses, and
// which limits a platform admin set for it (the others are the defaults).
type quotaJSON struct {
	TeamID   string              `json:"team_id"`
	Limits   store.Quota         `json:"limits"`
	Usage    store.Usage         `json:"usage"`
	Override store.QuotaOverride `json:"override"`
}

func (s *server) teamQuotaJSON(r *http.Request, teamID string) (quotaJSON, error) {
	q, o, u, err := s.store.TeamQuota(r.Context(), teamID, s.defaultQuota())
	if err != nil {
		return quotaJSON{}, err
	}
	return quotaJSON{TeamID: teamID, Limits: q, Usage: u, Override: o}, nil
}

func (s *server) handleGetTeamQuota() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		out, err := s.teamQuotaJSON(r, caller(r).TeamID)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

// adminTeam returns the team {id} of an admin route; only platform admins
// may use them.
func (s *server) adminTeam(r *http.Request, what string) (string, error) {
	if err := requireAdmin(caller(r), what); err != nil {
		return "", err
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return "", errorf(codeNotFound, "no team with id %q", r.PathValue("id"))
	}
	return id.String(), nil
}

func (s *server) handleGetAdminTeamQuota() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		teamID, err := s.adminTeam(r, "read another team's quota")
		if err != nil {
			return err
		}
		ok, err := s.store.TeamExists(r.Context(), teamID)
		if err != nil {
			return err
		}
		if !ok {
			return errorf(codeNotFound, "no team with id %q", teamID)
		}
		out, err := s.teamQuotaJSON(r, teamID)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

func (s *server) handleSetAdminTeamQuota() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		teamID, err := s.adminTeam(r, "set a team's quota")
		if err != nil {
			return err
		}
		o, err := decode[store.QuotaOverride](w, r, maxBody)
		if err != nil {
			return err
		}
		for name, v := range map[string]int64{
			"running_capsules": deref(o.RunningCapsules), "vcpus": deref(o.VCPUs), "memory_mb": deref64(o.MemoryMB),
			"disk_mb": deref64(o.DiskMB), "paused_capsules": deref(o.PausedCapsules), "snapshots": deref(o.Snapshots),
			"concurrent_creates": deref(o.ConcurrentCreates),
		} {
			if v < 0 || v > 1<<40 {
				return errorf(codeInvalid, "%s must be 0 (no limit) to %d, or null for the default; not %d", name, int64(1)<<40, v)
			}
		}
		p := caller(r)
		ev := s.event(r, p, "team.quota", map[string]any{"override": o})
		ev.TeamID = teamID
		err = s.store.SetTeamQuota(r.Context(), teamID, o, ev)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "no team with id %q", teamID)
		}
		if err != nil {
			return err
		}
		out, err := s.teamQuotaJSON(r, teamID)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

func deref(p *int) int64 {
	if p == nil {
		return 0
	}
	return int64(*p)
}

func deref64(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
