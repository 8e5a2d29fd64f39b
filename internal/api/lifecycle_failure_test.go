package api_test

import (
	"crypto/ed25519"
	"net/http"
	"strings"
	"testing"
)

// TestPauseFailureTellsTheTruth checks what a failed pause leaves behind.
// The agent here is the fake one, because the failures are made on
// purpose: an agent that refuses (the fake has no PauseCapsule), then one
// that cannot be reached at all.
func TestPauseFailureTellsTheTruth(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	ag := newFakeAgent(t, e.key.Public().(ed25519.PublicKey), reg.hostID, "minimal")
	body := registerBody(reg.token)
	body["address"], body["cpus"], body["memory_mb"] = ag.url, 4, 8000
	cred := e.call("POST", "/v1/hosts/register", body).want(t, "register", http.StatusCreated).str("credential")
	beat := func(capsules []any) {
		t.Helper()
		hb := with(with(heartbeatBody(), "templates", []string{"minimal"}), "capsules", capsules)
		e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", hb, "Authorization", "Bearer "+cred).want(t, "heartbeat", http.StatusOK)
	}
	beat([]any{})
	id := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...).want(t, "create", http.StatusCreated).str("id")
	get := func() response {
		t.Helper()
		return e.call("GET", "/v1/capsules/"+id, nil, admin.bearer()...).want(t, "get", http.StatusOK)
	}
	errStatus := func(r response) string {
		m, _ := r.body["error"].(map[string]any)
		s, _ := m["status"].(string)
		return s
	}

	// The agent refuses, and says the capsule still runs: it is running,
	// and says why the pause failed.
	r := e.call("POST", "/v1/capsules/"+id+"/pause", nil, admin.bearer()...)
	if r.status != http.StatusBadGateway || r.errCode() != "agent_error" || errStatus(r) != "running" {
		t.Errorf("pause refused by the agent: got %d %s, want 502 agent_error with status running", r.status, r.raw)
	}
	if c := get(); c.str("status") != "running" || !strings.Contains(c.str("status_reason"), "pause failed") {
		t.Errorf("after a refused pause: %s, want running with the failure as reason", c.raw)
	}

	// The agent is gone: nobody knows what became of the capsule, so it
	// stays pausing until the host reports it.
	ag.srv.Close()
	r = e.call("POST", "/v1/capsules/"+id+"/pause", nil, admin.bearer()...)
	if r.status != http.StatusBadGateway || errStatus(r) != "pausing" {
		t.Errorf("pause with the agent gone: got %d %s, want 502 with status pausing", r.status, r.raw)
	}
	if c := get(); c.str("status") != "pausing" || !strings.Contains(c.str("status_reason"), "heartbeat") {
		t.Errorf("after a pause that could not reach the agent: %s, want pausing, left to the next heartbeat", c.raw)
	}
	r = e.call("DELETE", "/v1/capsules/"+id, nil, admin.bearer()...)
	if r.status != http.StatusConflict || errStatus(r) != "pausing" {
		t.Errorf("destroy of a pausing capsule: got %d %s, want 409 with status pausing", r.status, r.raw)
	}
	// A report received within seconds of the failure may have been made
	// before it, and is not taken; a later one is.
	beat([]any{map[string]any{"id": id, "status": "running"}})
	if c := get(); c.str("status") != "pausing" {
		t.Errorf("a report received right after the failure settled the capsule: %s", c.raw)
	}
	e.exec(`UPDATE capsules SET updated_at = now() - interval '10 seconds' WHERE id = $1`, id)
	beat([]any{map[string]any{"id": id, "status": "paused"}})
	if c := get(); c.str("status") != "paused" {
		t.Errorf("after the host reported it paused: %s", c.raw)
	}
}
