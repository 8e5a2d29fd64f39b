package e2e_test

import (
	"net/http"
	"testing"
	"time"
)

// TestAgentStartsAtNewAddress is the README's later start of an agent,
// `wrenn-agent --address <ip:port>` with the saved credential and no
// --register, with the real binaries: the agent starts, the control plane
// records the new address (and audits it), and capsules are reached there,
// the one that kept running across the move and a new one.
func TestAgentStartsAtNewAddress(t *testing.T) {
	u := startUserStack(t)
	var c struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, &c)
	u.exec(t, c.ID, "echo before > /root/moved")

	u.agent.stop(t)
	oldAddr := u.agentEnv["WRENN_HOST_LISTEN_ADDR"]
	newAddr := freeAddr(t)
	u.agentEnv["WRENN_HOST_LISTEN_ADDR"] = newAddr
	began := time.Now()
	u.agent = start(t, "wrenn-agent", bin.agent, u.agentEnv, "--address", newAddr)
	eventually(t, 30*time.Second, "the host is online at "+newAddr, func() error {
		if u.agent.exited() {
			t.Fatalf("wrenn-agent --address %s exited:\n%s", newAddr, u.agent.logs())
		}
		h, _ := getHost(t, u.api, u.hostID)
		if h.Status != "online" || h.Address != newAddr || h.LastHeartbeatAt == nil || h.LastHeartbeatAt.Before(began) {
			return errorString("host is " + h.Status + " at " + h.Address)
		}
		return nil
	})

	if out := u.exec(t, c.ID, "cat /root/moved"); out.Stdout != "before\n" {
		t.Errorf("the capsule that ran across the move reads %q, want \"before\\n\"", out.Stdout)
	}
	var fresh struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, &fresh)
	if out := u.exec(t, fresh.ID, "echo after"); out.Stdout != "after\n" {
		t.Errorf("a capsule created after the move answers %q", out.Stdout)
	}

	var log []struct {
		Action   string         `json:"action"`
		Metadata map[string]any `json:"metadata"`
	}
	u.api.must(http.StatusOK, "GET", "/v1/audit-log?action=host.address", nil, &log)
	if len(log) != 1 || log[0].Metadata["from"] != oldAddr || log[0].Metadata["to"] != newAddr {
		t.Errorf("audit log of host.address = %+v, want one entry from %s to %s", log, oldAddr, newAddr)
	}

	// The same start once more changes nothing: no second audit entry.
	u.agent.stop(t)
	began = time.Now()
	u.agent = start(t, "wrenn-agent", bin.agent, u.agentEnv, "--address", newAddr)
	u.waitHeartbeatAfter(t, began)
	u.api.must(http.StatusOK, "GET", "/v1/audit-log?action=host.address", nil, &log)
	if len(log) != 1 {
		t.Errorf("after a start at the same address the audit log has %d host.address entries, want 1", len(log))
	}

	for _, id := range []string{c.ID, fresh.ID} {
		u.api.must(http.StatusNoContent, "DELETE", "/v1/capsules/"+id, nil, nil)
	}
}
