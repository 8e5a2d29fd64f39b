package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// TestTeamQuotaStack runs one team into its quota with real capsules:
// the capsule, pause and snapshot past a limit are refused with 403 naming
// the limit and leave nothing behind, another team is not affected, and
// GET /v1/team/quota shows limits and usage.
func TestTeamQuotaStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ControlPlane: func(c *config.ControlPlane) {
		c.QuotaRunningCapsules, c.QuotaPausedCapsules, c.QuotaSnapshots = 2, 1, 1
	}})
	other := st.NewTeam(t)
	wantQuota := func(what string, a answer, limit string) {
		t.Helper()
		e, _ := a.body["error"].(map[string]any)
		msg, _ := e["message"].(string)
		if a.status != http.StatusForbidden || e["code"] != "quota_exceeded" || !strings.Contains(msg, limit) {
			t.Fatalf("%s: got %d %s, want 403 quota_exceeded naming %s", what, a.status, a.raw, limit)
		}
	}
	create := func(tm stacktest.Team) answer {
		return teamCall(t, st, tm, "POST", "/v1/capsules", map[string]any{"template": "minimal"})
	}
	c1 := create(st.Team).want(t, "first capsule", http.StatusCreated).str("id")
	c2 := create(st.Team).want(t, "second capsule", http.StatusCreated).str("id")
	wantQuota("third capsule", create(st.Team), "running_capsules")
	list := teamCall(t, st, st.Team, "GET", "/v1/capsules", nil).want(t, "list", http.StatusOK)
	if n := len(list.body["capsules"].([]any)); n != 2 {
		t.Errorf("the team has %d capsules after a refused create, want 2", n)
	}
	create(other).want(t, "another team's capsule", http.StatusCreated)

	teamCall(t, st, st.Team, "POST", "/v1/capsules/"+c1+"/pause", nil).want(t, "pause", http.StatusOK)
	wantQuota("second paused capsule", teamCall(t, st, st.Team, "POST", "/v1/capsules/"+c2+"/pause", nil), "paused_capsules")
	if s := teamCall(t, st, st.Team, "GET", "/v1/capsules/"+c2, nil).want(t, "get", http.StatusOK).str("status"); s != "running" {
		t.Errorf("capsule whose pause was refused is %s, want running", s)
	}
	teamCall(t, st, st.Team, "POST", "/v1/snapshots", map[string]any{"capsule_id": c2, "name": "one"}).want(t, "snapshot", http.StatusCreated)
	wantQuota("second snapshot", teamCall(t, st, st.Team, "POST", "/v1/snapshots", map[string]any{"capsule_id": c2, "name": "two"}), "snapshots")

	q := teamCall(t, st, st.Team, "GET", "/v1/team/quota", nil).want(t, "quota", http.StatusOK)
	limits, _ := q.body["limits"].(map[string]any)
	usage, _ := q.body["usage"].(map[string]any)
	if limits["running_capsules"] != 2.0 || usage["running_capsules"] != 1.0 || usage["paused_capsules"] != 1.0 || usage["snapshots"] != 1.0 {
		t.Errorf("GET /v1/team/quota = %s; want limit 2 running, and 1 running, 1 paused, 1 snapshot in use", q.raw)
	}
}
