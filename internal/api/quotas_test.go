package api_test

import (
	"net/http"
	"testing"
)

// TestAdminTeamQuota sets a team's own limits as a platform admin: only a
// platform admin may, bad values and unknown teams are refused and change
// nothing, null restores the default, and the team sees its new limits.
func TestAdminTeamQuota(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com") // the platform admin
	member := e.signup("member@example.com")
	path := "/v1/admin/teams/" + member.teamID + "/quota"

	e.call("PUT", path, map[string]any{"running_capsules": 5}, member.bearer()...).
		wantError(t, "set as a non-admin", http.StatusForbidden, "forbidden")
	e.call("GET", path, nil, member.bearer()...).wantError(t, "read as a non-admin", http.StatusForbidden, "forbidden")
	e.call("PUT", path, map[string]any{"running_capsules": -1}, admin.bearer()...).
		wantError(t, "negative limit", http.StatusBadRequest, "invalid_request")
	e.call("PUT", path, map[string]any{"running_capsule": 5}, admin.bearer()...).
		wantError(t, "unknown field", http.StatusBadRequest, "invalid_request")
	e.call("PUT", "/v1/admin/teams/00000000-0000-0000-0000-000000000000/quota", map[string]any{}, admin.bearer()...).
		wantError(t, "unknown team", http.StatusNotFound, "not_found")
	e.call("PUT", "/v1/admin/teams/nope/quota", map[string]any{}, admin.bearer()...).
		wantError(t, "non-uuid team", http.StatusNotFound, "not_found")
	if n := e.count("team_quotas"); n != 0 {
		t.Fatalf("%d team_quotas rows after refused calls, want 0", n)
	}

	got := e.call("PUT", path, map[string]any{"running_capsules": 5, "snapshots": 0}, admin.bearer()...).want(t, "set", http.StatusOK)
	limits := got.body["limits"].(map[string]any)
	if limits["running_capsules"] != 5.0 || limits["snapshots"] != 0.0 {
		t.Errorf("limits after the override: %s", got.raw)
	}
	mine := e.call("GET", "/v1/team/quota", nil, member.bearer()...).want(t, "own quota", http.StatusOK)
	if mine.body["limits"].(map[string]any)["running_capsules"] != 5.0 {
		t.Errorf("the team does not see its override: %s", mine.raw)
	}
	def := e.call("PUT", path, map[string]any{"running_capsules": nil}, admin.bearer()...).want(t, "back to the default", http.StatusOK)
	if o := def.body["override"].(map[string]any); o["running_capsules"] != nil {
		t.Errorf("override after null: %s", def.raw)
	}
}

// wantError fails the test unless r is an error answer with status and code.
func (r response) wantError(t *testing.T, what string, status int, code string) {
	t.Helper()
	if r.status != status || r.errCode() != code {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.status, r.raw, status, code)
	}
}
