package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/store"
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

// maxActionLen bounds the action filter; actions are short dotted names.
const maxActionLen = 100

// auditFilter reads the audit log's filters from the query: action (exact,
// or a prefix with a trailing ".*"), actor_type, resource_id, and before
// (the id of the last entry of the previous page).
func auditFilter(r *http.Request) (store.AuditFilter, error) {
	q := r.URL.Query()
	var f store.AuditFilter
	if q.Has("action") {
		a := q.Get("action")
		name, prefix := strings.CutSuffix(a, ".*")
		if !validAction(name) || len(a) > maxActionLen {
			return f, errorf(codeInvalid, "action %q is not an action name (like capsule.create) or a prefix of one ending in .* (like capsule.*)", q.Get("action"))
		}
		f.Action, f.ActionPrefix = name, prefix
		if prefix {
			f.Action += "."
		}
	}
	if q.Has("actor_type") {
		switch t := q.Get("actor_type"); t {
		case store.ActorUser, store.ActorAPIKey, store.ActorHost, store.ActorSystem:
			f.ActorType = t
		default:
			return f, errorf(codeInvalid, "actor_type must be user, api_key, host or system, not %q", t)
		}
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"resource_id", &f.ResourceID}, {"before", &f.Before}} {
		if !q.Has(p.name) {
			continue
		}
		id, err := uuid.Parse(q.Get(p.name))
		if err != nil {
			return f, errorf(codeInvalid, "%s must be a UUID, not %q", p.name, q.Get(p.name))
		}
		*p.dst = id.String()
	}
	return f, nil
}

// validAction reports whether a is dotted lower-case words: capsule.create.
func validAction(a string) bool {
	if a == "" {
		return false
	}
	for part := range strings.SplitSeq(a, ".") {
		if part == "" {
			return false
		}
		for _, c := range part {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
				return false
			}
		}
	}
	return true
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
		f, err := auditFilter(r)
		if err != nil {
			return err
		}
		entries, err := s.store.AuditLog(r.Context(), p.TeamID, p.PlatformAdmin, f, limit)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeInvalid, "before=%s names no entry of this audit log", f.Before)
		}
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
