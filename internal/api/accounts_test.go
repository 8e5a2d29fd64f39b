package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/config"
)

func TestSignupLoginMe(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("Admin@Example.com")
	bob := e.signup("bob@example.com")
	if admin.teamID == bob.teamID {
		t.Fatalf("users share team %s, want a team each", admin.teamID)
	}

	tests := []struct {
		email     string
		wantAdmin bool
	}{
		{"admin@example.com", true},
		{"bob@example.com", false},
	}
	for _, tt := range tests {
		r := e.call("POST", "/v1/auth/login", map[string]string{"email": tt.email, "password": "correct horse"}).
			want(t, "login "+tt.email, http.StatusOK)
		if r.str("token") == "" || r.str("expires_at") == "" {
			t.Errorf("login %s: got %s, want token and expires_at", tt.email, r.raw)
		}
		me := e.call("GET", "/v1/me", nil, "Authorization", "Bearer "+r.str("token")).want(t, "me", http.StatusOK)
		user := me.body["user"].(map[string]any)
		if got := user["email"]; got != tt.email {
			t.Errorf("me: got email %v, want %s", got, tt.email)
		}
		if got := me.body["is_platform_admin"]; got != tt.wantAdmin {
			t.Errorf("me %s: got is_platform_admin %v, want %v", tt.email, got, tt.wantAdmin)
		}
		team := me.body["team"].(map[string]any)
		if team["role"] != "owner" {
			t.Errorf("me %s: got role %v, want owner", tt.email, team["role"])
		}
	}

	if got := e.call("POST", "/v1/auth/signup", map[string]string{"email": "BOB@example.com", "password": "whatever123"}); got.status != http.StatusConflict || got.errCode() != "conflict" {
		t.Errorf("duplicate signup: got %d %s, want 409 conflict", got.status, got.raw)
	}
	for _, c := range []struct{ email, password string }{
		{"bob@example.com", "wrong password"},
		{"nobody@example.com", "correct horse"},
	} {
		r := e.call("POST", "/v1/auth/login", map[string]string{"email": c.email, "password": c.password})
		if r.status != http.StatusUnauthorized || r.errCode() != "invalid_credentials" {
			t.Errorf("login %s/%s: got %d %s, want 401 invalid_credentials", c.email, c.password, r.status, r.raw)
		}
	}
	// signup ×2 + login ×2 audited.
	var n int
	if err := e.db.QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE action IN ('auth.signup', 'auth.login')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("got %d auth audit rows, want 4", n)
	}
}

func TestTeamSelection(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	b := e.signup("b@example.com")
	e.exec(`INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'member')`, b.teamID, a.id)

	tests := []struct {
		name       string
		teamHeader string
		wantStatus int
		wantTeam   string
		wantRole   string
	}{
		{"default is own team", "", http.StatusOK, a.teamID, "owner"},
		{"other team a member of", b.teamID, http.StatusOK, b.teamID, "member"},
		{"team not a member of", "00000000-0000-0000-0000-000000000001", http.StatusForbidden, "", ""},
		{"not a uuid", "nope", http.StatusBadRequest, "", ""},
		// What cannot send headers (WebSockets, links) names the team in the query.
		{"query: other team a member of", "?team_id=" + b.teamID, http.StatusOK, b.teamID, "member"},
		{"query: team not a member of", "?team_id=00000000-0000-0000-0000-000000000001", http.StatusForbidden, "", ""},
		{"query: not a uuid", "?team_id=nope", http.StatusBadRequest, "", ""},
		{"query: empty", "?team_id=", http.StatusOK, a.teamID, "owner"},
		{"query and header disagree", "?team_id=" + a.teamID + "&header=" + b.teamID, http.StatusBadRequest, "", ""},
		{"query and header agree", "?team_id=" + b.teamID + "&header=" + b.teamID, http.StatusOK, b.teamID, "member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := a.bearer()
			path := "/v1/me"
			switch query, header, _ := strings.Cut(strings.TrimPrefix(tt.teamHeader, "?"), "&header="); {
			case strings.HasPrefix(tt.teamHeader, "?"):
				path += "?" + query
				if header != "" {
					h = append(h, "X-Team-ID", header)
				}
			case tt.teamHeader != "":
				h = append(h, "X-Team-ID", tt.teamHeader)
			}
			r := e.call("GET", path, nil, h...).want(t, "me", tt.wantStatus)
			if tt.wantStatus != http.StatusOK {
				return
			}
			team := r.body["team"].(map[string]any)
			if team["id"] != tt.wantTeam || team["role"] != tt.wantRole {
				t.Errorf("got team %v role %v, want %s %s", team["id"], team["role"], tt.wantTeam, tt.wantRole)
			}
		})
	}
}

func TestAuthRateLimit(t *testing.T) {
	e := newEnv(t, func(c *config.ControlPlane) { c.AuthRateLimit = 3 })
	for i := range 3 {
		e.call("POST", "/v1/auth/login", map[string]string{"email": "x@example.com", "password": "whatever1"}).
			want(t, "login within budget", http.StatusUnauthorized)
		_ = i
	}
	r := e.call("POST", "/v1/auth/signup", map[string]string{"email": "x@example.com", "password": "whatever1"})
	if r.status != http.StatusTooManyRequests || r.errCode() != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("over budget: got %d %s Retry-After=%q, want 429 rate_limited with Retry-After", r.status, r.raw, r.header.Get("Retry-After"))
	}
	if n := e.count("users"); n != 0 {
		t.Errorf("got %d users after a refused signup, want 0", n)
	}
}

func TestRateLimitClientIP(t *testing.T) {
	login := map[string]string{"email": "x@example.com", "password": "whatever1"}
	tests := []struct {
		name       string
		trustProxy bool
		wantSecond int // status of a second login from another forwarded IP
	}{
		{"X-Forwarded-For ignored by default", false, http.StatusTooManyRequests},
		{"X-Forwarded-For trusted", true, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.ControlPlane) { c.AuthRateLimit = 1; trustLoopback(c, tt.trustProxy) })
			e.call("POST", "/v1/auth/login", login, "X-Forwarded-For", "203.0.113.1").want(t, "first login", http.StatusUnauthorized)
			e.call("POST", "/v1/auth/login", login, "X-Forwarded-For", "203.0.113.2").want(t, "second login", tt.wantSecond)
		})
	}
}

func TestAuditLog(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	other := e.signup("other@example.com")
	e.call("POST", "/v1/api-keys", map[string]string{"name": "k"}, other.bearer()...).want(t, "create key", http.StatusCreated)
	e.createHost(admin)

	actions := func(r response) []string {
		var out []string
		for _, ev := range r.list {
			out = append(out, ev.(map[string]any)["action"].(string))
		}
		return out
	}
	got := actions(e.call("GET", "/v1/audit-log", nil, other.bearer()...).want(t, "other's log", http.StatusOK))
	if strings.Join(got, ",") != "api_key.create,auth.signup" {
		t.Errorf("other's log: got %v, want only its own team's events, newest first", got)
	}
	got = actions(e.call("GET", "/v1/audit-log?limit=1", nil, admin.bearer()...).want(t, "admin's log", http.StatusOK))
	if strings.Join(got, ",") != "host.create" {
		t.Errorf("admin's log, limit 1: got %v, want [host.create]", got)
	}
	for _, bad := range []string{"0", "x", "1001"} {
		r := e.call("GET", "/v1/audit-log?limit="+bad, nil, admin.bearer()...)
		if r.status != http.StatusBadRequest || r.errCode() != "invalid_request" {
			t.Errorf("limit=%s: got %d %s, want 400 invalid_request", bad, r.status, r.raw)
		}
	}
	e.call("GET", "/v1/audit-log", nil).want(t, "no auth", http.StatusUnauthorized)
}

func TestAuditLogOfHostActions(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	colleague := e.signup("colleague@example.com") // not an admin, in the admin's team too
	e.exec(`INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, 'member')`, admin.teamID, colleague.id)
	owner := e.signup("owner@example.com")
	e.createHost(admin)
	e.call("POST", "/v1/hosts", map[string]string{"type": "byoc", "team_id": owner.teamID}, admin.bearer()...).want(t, "create byoc host", http.StatusCreated)

	hostEvents := func(who string, headers ...string) []string {
		var out []string
		for _, ev := range e.call("GET", "/v1/audit-log", nil, headers...).want(t, "audit log of "+who, http.StatusOK).list {
			m := ev.(map[string]any)
			if strings.HasPrefix(m["action"].(string), "host.") {
				out = append(out, m["action"].(string)+" "+m["metadata"].(map[string]any)["type"].(string))
			}
		}
		return out
	}
	if got := hostEvents("colleague", append(colleague.bearer(), "X-Team-ID", admin.teamID)...); len(got) != 0 {
		t.Errorf("admin's colleague: got %v, want no host events (a shared host's belong to no team)", got)
	}
	if got := strings.Join(hostEvents("byoc owner", owner.bearer()...), ","); got != "host.create byoc" {
		t.Errorf("byoc owner: got %v, want the creation of its host", got)
	}
	if got := strings.Join(hostEvents("admin", admin.bearer()...), ","); got != "host.create regular" {
		t.Errorf("platform admin: got %v, want the shared host's creation", got)
	}
}

func TestSessionOfUserWithoutTeam(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	e.exec(`DELETE FROM team_members WHERE user_id = $1`, a.id)
	if r := e.call("GET", "/v1/me", nil, a.bearer()...); r.status != http.StatusForbidden || r.errCode() != "forbidden" {
		t.Errorf("got %d %s, want 403 forbidden", r.status, r.raw)
	}
	e.exec(`DELETE FROM users WHERE id = $1`, a.id)
	if r := e.call("GET", "/v1/me", nil, a.bearer()...); r.status != http.StatusUnauthorized || r.errCode() != "unauthenticated" {
		t.Errorf("deleted user: got %d %s, want 401 unauthenticated", r.status, r.raw)
	}
}
