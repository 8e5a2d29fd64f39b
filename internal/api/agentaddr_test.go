package api_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/config"
)

// TestAgentAddressPolicy registers agents at addresses that would point the
// control plane's signed requests at itself or at cloud metadata: with the
// default policy (no WRENN_AGENT_ALLOWED_CIDRS) they are refused, at
// registration, at heartbeat, and at dial time for an address already
// stored.
func TestAgentAddressPolicy(t *testing.T) {
	e := newEnv(t, func(c *config.ControlPlane) { c.AgentAllowedCIDRs = nil })
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	for _, addr := range []string{"127.0.0.1:50051", "[::1]:50051", "169.254.169.254:80", "[fe80::1]:80",
		"0.0.0.0:50051", "[::ffff:127.0.0.1]:50051", "localhost:50051", "224.0.0.1:50051"} {
		body := registerBody(reg.token)
		body["address"] = addr
		got := e.call("POST", "/v1/hosts/register", body)
		if got.status != http.StatusBadRequest || got.errCode() != "invalid_request" || !strings.Contains(string(got.raw), "refused") {
			t.Errorf("register at %s: got %d %s, want 400 invalid_request saying refused", addr, got.status, got.raw)
		}
	}
	// The refusals did not use the token up; a private address is fine.
	body := registerBody(reg.token)
	body["address"] = "10.0.1.5:50051"
	r := e.call("POST", "/v1/hosts/register", body).want(t, "register at 10.0.1.5", http.StatusCreated)
	cred := r.str("credential")

	hb := heartbeatBody()
	hb["address"] = "169.254.169.254:80"
	got := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", hb, "Authorization", "Bearer "+cred)
	if got.status != http.StatusBadRequest || !strings.Contains(string(got.raw), "link-local") {
		t.Errorf("heartbeat to 169.254.169.254: got %d %s, want 400 naming link-local", got.status, got.raw)
	}
	host := e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK)
	if host.str("address") != "10.0.1.5:50051" {
		t.Errorf("address after a refused heartbeat: %s, want 10.0.1.5:50051", host.str("address"))
	}

	// An address stored before the policy (here written directly) is
	// refused when dialled: the agent never sees a request.
	var calls atomic.Int32
	_, agentAddr := newAgentServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	e.exec(`UPDATE hosts SET address = $2 WHERE id = $1`, reg.hostID, agentAddr)
	host = e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host at loopback", http.StatusOK)
	if host.body["agent"] != nil || host.str("agent_error") == "" || calls.Load() != 0 {
		t.Errorf("dial to loopback: got %s and %d calls at the agent, want agent_error and none", host.raw, calls.Load())
	}
}

// TestAgentAddressAllowList: with WRENN_AGENT_ALLOWED_CIDRS set, only its
// ranges are accepted.
func TestAgentAddressAllowList(t *testing.T) {
	e := newEnv(t) // the test default allows 127.0.0.0/8 and 10.0.0.0/8
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	body := registerBody(reg.token)
	body["address"] = "192.168.1.5:50051"
	got := e.call("POST", "/v1/hosts/register", body)
	if got.status != http.StatusBadRequest || !strings.Contains(string(got.raw), "outside") || strings.Contains(string(got.raw), "127.0.0.0/8") {
		t.Errorf("register outside the list: got %d %s, want 400 that does not quote the list", got.status, got.raw)
	}
	e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register at 127.0.0.1", http.StatusCreated)
}
