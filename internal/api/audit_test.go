package api_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestAuditLogFilters(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com") // auth.signup
	k1 := e.call("POST", "/v1/api-keys", map[string]string{"name": "one"}, a.bearer()...).want(t, "key one", http.StatusCreated)
	k2 := e.call("POST", "/v1/api-keys", map[string]any{"name": "two", "scopes": []string{"keys:manage"}}, a.bearer()...).want(t, "key two", http.StatusCreated)
	e.call("DELETE", "/v1/api-keys/"+k1.str("id"), nil, "X-API-Key", k2.str("key")).want(t, "delete key one by key", http.StatusNoContent)
	e.call("POST", "/v1/auth/login", map[string]string{"email": "a@example.com", "password": "correct horse"}).want(t, "login", http.StatusOK)
	// Log, newest first: auth.login, api_key.delete (by key), api_key.create ×2, auth.signup.

	log := func(query string) []map[string]any {
		t.Helper()
		var out []map[string]any
		for _, ev := range e.call("GET", "/v1/audit-log?"+query, nil, a.bearer()...).want(t, "audit log ?"+query, http.StatusOK).list {
			out = append(out, ev.(map[string]any))
		}
		return out
	}
	actions := func(query string) string {
		t.Helper()
		var out []string
		for _, ev := range log(query) {
			out = append(out, ev["action"].(string))
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		query, want string
	}{
		{"", "auth.login,api_key.delete,api_key.create,api_key.create,auth.signup"},
		{"action=api_key.create", "api_key.create,api_key.create"},
		{"action=api_key.*", "api_key.delete,api_key.create,api_key.create"},
		{"action=auth.*&limit=1", "auth.login"},
		{"action=api_key", ""},
		{"action=api.*", ""},
		{"actor_type=api_key", "api_key.delete"},
		{"actor_type=user&action=auth.*", "auth.login,auth.signup"},
		{"actor_type=host", ""},
		{"resource_id=" + a.id, "auth.login,auth.signup"},
	}
	for _, tt := range tests {
		if got := actions(tt.query); got != tt.want {
			t.Errorf("?%s: got %q, want %q", tt.query, got, tt.want)
		}
	}

	// Paging with before: every entry once, in order.
	all := log("")
	var paged []string
	before := ""
	for range 10 {
		q := "limit=2"
		if before != "" {
			q += "&before=" + before
		}
		page := log(q)
		if len(page) == 0 {
			break
		}
		for _, ev := range page {
			paged = append(paged, ev["id"].(string))
		}
		before = page[len(page)-1]["id"].(string)
	}
	var want []string
	for _, ev := range all {
		want = append(want, ev["id"].(string))
	}
	if strings.Join(paged, ",") != strings.Join(want, ",") {
		t.Errorf("paged ids %v, want %v", paged, want)
	}
	if got := actions("action=api_key.*&before=" + all[1]["id"].(string)); got != "api_key.create,api_key.create" {
		t.Errorf("filtered page: got %q", got)
	}

	other := e.signup("other@example.com")
	otherID := e.call("GET", "/v1/audit-log", nil, other.bearer()...).want(t, "other's log", http.StatusOK).list[0].(map[string]any)["id"].(string)
	for _, bad := range []string{
		"action=", "action=*", "action=.*", "action=Capsule.Create", "action=capsule.", "action=capsule.*.*", "action=a%25", "action=" + strings.Repeat("a", 101),
		"actor_type=robot", "actor_type=",
		"resource_id=nope", "resource_id=",
		"before=nope", "before=2026-01-01T00:00:00Z", "before=00000000-0000-0000-0000-000000000001", "before=" + otherID,
	} {
		r := e.call("GET", "/v1/audit-log?"+bad, nil, a.bearer()...)
		if r.status != http.StatusBadRequest || r.errCode() != "invalid_request" {
			u, _ := url.QueryUnescape(bad)
			t.Errorf("?%s: got %d %s, want 400 invalid_request", u, r.status, r.raw)
		}
	}
}
