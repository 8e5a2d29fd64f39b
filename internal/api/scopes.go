package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/auth"
)

// routeScope says which API key scope each member route needs, by
// "METHOD pattern". A member route missing here refuses every API key
// (TestEveryMemberRouteHasAScope keeps the table complete); /v1/me needs
// none. Sessions hold every scope.
var routeScope = map[string]auth.Scope{
	"GET /v1/me": "",

	"POST /v1/api-keys":        auth.ScopeKeysManage,
	"GET /v1/api-keys":         auth.ScopeKeysManage,
	"DELETE /v1/api-keys/{id}": auth.ScopeKeysManage,

	"POST /v1/hosts":            auth.ScopeHosts,
	"GET /v1/hosts":             auth.ScopeHosts,
	"GET /v1/hosts/{id}":        auth.ScopeHosts,
	"DELETE /v1/hosts/{id}":     auth.ScopeHosts,
	"POST /v1/hosts/{id}/token": auth.ScopeHosts,

	"POST /v1/capsules":                                 auth.ScopeCapsules,
	"GET /v1/capsules":                                  auth.ScopeCapsules,
	"GET /v1/capsules/{id}":                             auth.ScopeCapsules,
	"DELETE /v1/capsules/{id}":                          auth.ScopeCapsules,
	"POST /v1/capsules/{id}/pause":                      auth.ScopeCapsules,
	"POST /v1/capsules/{id}/resume":                     auth.ScopeCapsules,
	"POST /v1/capsules/{id}/ping":                       auth.ScopeCapsules,
	"PATCH /v1/capsules/{id}/network":                   auth.ScopeCapsules,
	"GET /v1/capsules/{id}/metrics":                     auth.ScopeCapsules,
	"GET /v1/templates":                                 auth.ScopeTemplates,
	"POST /v1/templates":                                auth.ScopeTemplates,
	"GET /v1/templates/builds":                          auth.ScopeTemplates,
	"GET /v1/templates/builds/{id}":                     auth.ScopeTemplates,
	"GET /v1/templates/builds/{id}/logs":                auth.ScopeTemplates,
	"POST /v1/templates/builds/{id}/cancel":             auth.ScopeTemplates,
	"POST /v1/snapshots":                                auth.ScopeSnapshots,
	"GET /v1/snapshots":                                 auth.ScopeSnapshots,
	"DELETE /v1/snapshots/{name}":                       auth.ScopeSnapshots,
	"POST /v1/capsules/{id}/exec":                       auth.ScopeExec,
	"GET /v1/capsules/{id}/exec/stream":                 auth.ScopeExec,
	"GET /v1/capsules/{id}/pty":                         auth.ScopeExec,
	"GET /v1/capsules/{id}/processes":                   auth.ScopeExec,
	"GET /v1/capsules/{id}/processes/{selector}":        auth.ScopeExec,
	"DELETE /v1/capsules/{id}/processes/{selector}":     auth.ScopeExec,
	"GET /v1/capsules/{id}/processes/{selector}/stream": auth.ScopeExec,
	"POST /v1/capsules/{id}/files/write":                auth.ScopeFiles,
	"POST /v1/capsules/{id}/files/read":                 auth.ScopeFiles,
	"POST /v1/capsules/{id}/files/stream/write":         auth.ScopeFiles,
	"POST /v1/capsules/{id}/files/stream/read":          auth.ScopeFiles,
	"POST /v1/capsules/{id}/files/list":                 auth.ScopeFiles,
	"POST /v1/capsules/{id}/files/mkdir":                auth.ScopeFiles,
	"POST /v1/capsules/{id}/files/remove":               auth.ScopeFiles,
	"PUT /v1/capsules/{id}/files":                       auth.ScopeFiles,
	"GET /v1/capsules/{id}/files":                       auth.ScopeFiles,
	"GET /v1/capsules/{id}/ports":                       auth.ScopeCapsules,
	"PATCH /v1/capsules/{id}/ports/{port}":              auth.ScopeCapsules,
	"POST /v1/capsules/{id}/ports/{port}/url":           auth.ScopeExec,

	"GET /v1/team/members":              auth.ScopeTeam,
	"POST /v1/team/members":             auth.ScopeTeam,
	"PATCH /v1/team/members/{user_id}":  auth.ScopeTeam,
	"DELETE /v1/team/members/{user_id}": auth.ScopeTeam,
	"GET /v1/audit-log":                 auth.ScopeTeam,
	"GET /v1/team/quota":                auth.ScopeTeam,
	"GET /v1/team/network-policy":       auth.ScopeTeam,
	"PUT /v1/team/network-policy":       auth.ScopeTeam,

	"GET /v1/admin/teams/{id}/quota": auth.ScopePlatformAdmin,
	"PUT /v1/admin/teams/{id}/quota": auth.ScopePlatformAdmin,
}

// The compatible API's routes (/api/v1/…, compat.go) need what the route
// they answer through needs (/v1/…).
func init() {
	for _, rt := range compatRoutes() {
		native := rt.method + " " + strings.TrimPrefix(rt.pattern, "/api")
		if sc, ok := routeScope[native]; ok && rt.access == member {
			routeScope[rt.method+" "+rt.pattern] = sc
		}
	}
}

// has reports whether p holds scope: a session always does; a key when
// the scope is stored with it.
func (p principal) has(scope auth.Scope) bool {
	return p.APIKeyID == "" || slices.Contains(p.Scopes, scope)
}

// heldScopes returns the scopes p could give a key it creates: its own, for
// a key; for a session every scope but platform:admin, which only platform
// admins hold.
func (p principal) heldScopes() []auth.Scope {
	var out []auth.Scope
	for _, sc := range auth.AllScopes {
		switch {
		case sc == auth.ScopePlatformAdmin && !p.PlatformAdmin:
		case p.has(sc):
			out = append(out, sc)
		}
	}
	return out
}

// requireScope refuses an API key without the scope that route (method +
// pattern) needs, with 403 naming it.
func (s *server) requireScope(route string, next http.Handler) http.Handler {
	scope, known := routeScope[route]
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		switch {
		case p.APIKeyID == "":
		case !known:
			return errorf(codeForbidden, "API keys cannot call %s; use a session", route)
		case scope != "" && !p.has(scope):
			return errorf(codeForbidden, "this API key lacks the %s scope", scope)
		}
		next.ServeHTTP(w, r)
		return nil
	})
}
