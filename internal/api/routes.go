package api

import (
	"net/http"
	"strings"
)

// access says who may call a route.
type access int

const (
	// public routes need no credentials (registration and refresh carry
	// their token in the body).
	public access = iota
	// limited routes are public but rate-limited per client IP.
	limited
	// member routes need a user session or an API key.
	member
	// host routes need a host credential, checked by the handler because it
	// must match the host in the path.
	host
	// proxied routes are the port proxy's, which decides itself: a public
	// port needs nothing, an access URL its token, anything else a member
	// of the capsule's team (ports.go).
	proxied
)

// portProxyPattern is the path form of the port proxy.
const portProxyPattern = "/v1/capsules/{id}/ports/{port}/{path...}"

// route is one endpoint. The same table registers the mux and feeds the test
// that keeps openapi.yaml true.
type route struct {
	method  string
	pattern string
	access  access
	handler func(*server) http.Handler
}

// routeTable lists every route of the API, the compatible API's
// (compat.go) last.
func routeTable() []route {
	return append(nativeRoutes(), compatRoutes()...)
}

func nativeRoutes() []route {
	return []route{
		{"GET", "/health", public, (*server).handleHealth},
		{"GET", "/metrics", public, (*server).handleMetrics},
		{"GET", "/openapi.yaml", public, (*server).handleOpenAPI},

		{"POST", "/v1/auth/signup", limited, (*server).handleSignup},
		{"POST", "/v1/auth/login", limited, (*server).handleLogin},
		{"POST", "/v1/auth/logout", public, (*server).handleLogout},
		{"GET", "/v1/me", member, (*server).handleMe},

		{"POST", "/v1/api-keys", member, (*server).handleCreateAPIKey},
		{"GET", "/v1/api-keys", member, (*server).handleListAPIKeys},
		{"DELETE", "/v1/api-keys/{id}", member, (*server).handleDeleteAPIKey},

		{"POST", "/v1/hosts", member, (*server).handleCreateHost},
		{"GET", "/v1/hosts", member, (*server).handleListHosts},
		{"GET", "/v1/hosts/{id}", member, (*server).handleGetHost},
		{"DELETE", "/v1/hosts/{id}", member, (*server).handleDeleteHost},
		{"POST", "/v1/hosts/{id}/token", member, (*server).handleHostToken},

		{"POST", "/v1/hosts/register", public, (*server).handleRegister},
		{"POST", "/v1/hosts/{id}/heartbeat", host, (*server).handleHeartbeat},
		{"POST", "/v1/hosts/auth/refresh", public, (*server).handleRefresh},

		{"POST", "/v1/capsules", member, (*server).handleCreateCapsule},
		{"GET", "/v1/capsules", member, (*server).handleListCapsules},
		{"GET", "/v1/capsules/{id}", member, (*server).handleGetCapsule},
		{"DELETE", "/v1/capsules/{id}", member, (*server).handleDeleteCapsule},
		{"POST", "/v1/capsules/{id}/pause", member, (*server).handlePauseCapsule},
		{"POST", "/v1/capsules/{id}/resume", member, (*server).handleResumeCapsule},
		{"POST", "/v1/capsules/{id}/ping", member, (*server).handlePingCapsule},
		{"PATCH", "/v1/capsules/{id}/network", member, (*server).handleSetCapsuleNetwork},
		{"GET", "/v1/templates", member, (*server).handleListTemplates},
		{"POST", "/v1/templates", member, (*server).handleCreateTemplate},
		{"GET", "/v1/templates/builds", member, (*server).handleListBuilds},
		{"GET", "/v1/templates/builds/{id}", member, (*server).handleGetBuild},
		{"GET", "/v1/templates/builds/{id}/logs", member, (*server).handleBuildLogs},
		{"POST", "/v1/templates/builds/{id}/cancel", member, (*server).handleCancelBuild},
		{"POST", "/v1/snapshots", member, (*server).handleCreateSnapshot},
		{"GET", "/v1/snapshots", member, (*server).handleListSnapshots},
		{"DELETE", "/v1/snapshots/{name}", member, (*server).handleDeleteSnapshot},

		{"POST", "/v1/capsules/{id}/exec", member, (*server).handleExec},
		{"GET", "/v1/capsules/{id}/exec/stream", member, (*server).handleExecStream},
		{"GET", "/v1/capsules/{id}/pty", member, (*server).handlePTY},
		{"GET", "/v1/capsules/{id}/metrics", member, (*server).handleCapsuleMetrics},
		{"GET", "/v1/capsules/{id}/processes", member, (*server).handleListProcesses},
		{"GET", "/v1/capsules/{id}/processes/{selector}", member, (*server).handleGetProcess},
		{"DELETE", "/v1/capsules/{id}/processes/{selector}", member, (*server).handleKillProcess},
		{"GET", "/v1/capsules/{id}/processes/{selector}/stream", member, (*server).handleProcessStream},
		{"POST", "/v1/capsules/{id}/files/write", member, (*server).handleWriteFile},
		{"POST", "/v1/capsules/{id}/files/read", member, (*server).handleReadFile},
		{"POST", "/v1/capsules/{id}/files/stream/write", member, (*server).handleWriteFile},
		{"POST", "/v1/capsules/{id}/files/stream/read", member, (*server).handleReadFile},
		{"POST", "/v1/capsules/{id}/files/list", member, (*server).handleListFiles},
		{"POST", "/v1/capsules/{id}/files/mkdir", member, (*server).handleMakeDir},
		{"POST", "/v1/capsules/{id}/files/remove", member, (*server).handleRemoveFile},
		{"PUT", "/v1/capsules/{id}/files", member, (*server).handlePutFile},
		{"GET", "/v1/capsules/{id}/files", member, (*server).handleGetFile},

		{"GET", "/v1/capsules/{id}/ports", member, (*server).handleListPorts},
		{"PATCH", "/v1/capsules/{id}/ports/{port}", member, (*server).handleUpdatePort},
		{"GET", "/v1/capsules/{id}/ports/{port}", public, (*server).handlePortRedirect},
		{"POST", "/v1/capsules/{id}/ports/{port}/url", member, (*server).handlePortURL},
		{"GET", portProxyPattern, proxied, (*server).handlePortProxy},
		{"POST", portProxyPattern, proxied, (*server).handlePortProxy},
		{"PUT", portProxyPattern, proxied, (*server).handlePortProxy},
		{"PATCH", portProxyPattern, proxied, (*server).handlePortProxy},
		{"DELETE", portProxyPattern, proxied, (*server).handlePortProxy},
		{"OPTIONS", portProxyPattern, proxied, (*server).handlePortProxy},

		{"GET", "/v1/team/members", member, (*server).handleListMembers},
		{"POST", "/v1/team/members", member, (*server).handleAddMember},
		{"PATCH", "/v1/team/members/{user_id}", member, (*server).handleUpdateMember},
		{"DELETE", "/v1/team/members/{user_id}", member, (*server).handleRemoveMember},

		{"GET", "/v1/audit-log", member, (*server).handleAuditLog},

		{"GET", "/v1/team/quota", member, (*server).handleGetTeamQuota},
		{"GET", "/v1/team/network-policy", member, (*server).handleGetTeamNetworkPolicy},
		{"PUT", "/v1/team/network-policy", member, (*server).handleSetTeamNetworkPolicy},
		{"GET", "/v1/admin/teams/{id}/quota", member, (*server).handleGetAdminTeamQuota},
		{"PUT", "/v1/admin/teams/{id}/quota", member, (*server).handleSetAdminTeamQuota},
	}
}

// routes builds the mux. Paths that exist with other methods answer 405,
// everything else under /v1/ 404, both in the JSON error shape. Other GET
// and HEAD requests go to the dashboard, which answers its files or the
// app's index.html; other methods there get the JSON 404.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	paths := http.NewServeMux() // method-less patterns, to tell 405 from 404
	seen := map[string]bool{}
	for _, rt := range routeTable() {
		h := rt.handler(s)
		switch rt.access {
		case limited:
			h = s.rateLimit(h)
		case member:
			h = s.authenticate(s.requireScope(rt.method+" "+rt.pattern, h))
		}
		mux.Handle(rt.method+" "+rt.pattern, s.instrument(rt.pattern, h))
		if !seen[rt.pattern] {
			seen[rt.pattern] = true
			paths.Handle(rt.pattern, http.NotFoundHandler())
		}
	}
	dashboard := s.instrument("dashboard", s.dashboard)
	unmatched := s.instrument("unmatched", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if _, pattern := paths.Handler(r); pattern != "" {
			return errorf(codeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path)
		}
		return errorf(codeNotFound, "no route for %s %s", r.Method, r.URL.Path)
	}))
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isDashboard(r) {
			if _, pattern := paths.Handler(r); pattern == "" {
				dashboard.ServeHTTP(w, r)
				return
			}
		}
		unmatched.ServeHTTP(w, r)
	}))
	return mux
}

// isDashboard reports whether r may be for the dashboard: a GET or HEAD
// outside the API's /v1/ and the compatible API's /api/.
func isDashboard(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	for _, prefix := range []string{"/v1", compatPrefix} {
		if r.URL.Path == prefix || strings.HasPrefix(r.URL.Path, prefix+"/") {
			return false
		}
	}
	return true
}
