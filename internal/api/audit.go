package api

import (
	"net/http"
	"strconv"
	"time"
)

// Audit log page sizes.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

type auditJSON struct {
	ID         string         `json:"id"`
	TeamID     *string        `json:"team_id"`
	ActorType  string         `json:"actor_type"`
	ActorID    *string        `json:"actor_id"`
	Action     string         `json:"action"`
	ResourceID *string        `json:"resource_id"`
	Metadata   map[string]any `json:"metadata"`
	IP         *string        `json:"ip"`
	CreatedAt  time.Time      `json:"created_at"`
}

func (s *server) handleAuditLog() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		limit := defaultAuditLimit
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxAuditLimit {
				return errorf(codeInvalid, "limit must be an integer from 1 to %d", maxAuditLimit)
			}
			limit = n
		}
		entries, err := s.store.AuditLog(r.Context(), p.TeamID, p.PlatformAdmin, limit)
		if err != nil {
			return err
		}
		out := make([]auditJSON, 0, len(entries))
		for _, e := range entries {
			meta := e.Metadata
			if meta == nil {
				meta = map[string]any{}
			}
			out = append(out, auditJSON{
				ID: e.ID, TeamID: ptr(e.TeamID), ActorType: e.ActorType, ActorID: ptr(e.ActorID),
				Action: e.Action, ResourceID: ptr(e.ResourceID), Metadata: meta, IP: ptr(e.IP), CreatedAt: e.CreatedAt,
			})
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}
