package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// TestCapsuleLifecycleStack runs capsuleFlow against the real stack: a
// control plane and a registered agent that starts gVisor capsules.
func TestCapsuleLifecycleStack(t *testing.T) {
	s := stacktest.Start(t)
	e := &env{t: t, url: s.URL}
	a := account{token: s.Team.APIKey, teamID: s.Team.ID}
	b := s.NewTeam(t)
	capsuleFlow(t, e, a, account{token: b.APIKey, teamID: b.ID}, "minimal")
	if infos, err := s.Capsules.List(t.Context()); err != nil || len(infos) != 0 {
		t.Errorf("after every capsule was destroyed, the agent still has %d (%v)", len(infos), err)
	}

	// What the API was given reaches the capsule: its envs, on the host
	// the control plane recorded, at the address it recorded.
	c := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal", "envs": map[string]string{"GREETING": "hello there"}},
		a.bearer()...).want(t, "create", http.StatusCreated)
	t.Cleanup(func() {
		e.call("DELETE", "/v1/capsules/"+c.str("id"), nil, a.bearer()...).want(t, "destroy", http.StatusNoContent)
	})
	if c.str("host_id") != s.HostID {
		t.Errorf("host_id: got %s, want the stack's host %s", c.str("host_id"), s.HostID)
	}
	if r := stacktest.Run(t, s.Envd(t, c.str("id")), `echo "$GREETING"`); strings.TrimSpace(r.Stdout) != "hello there" {
		t.Errorf("GREETING in the capsule: got %q (stderr %q), want %q", r.Stdout, r.Stderr, "hello there")
	}
	rec, err := s.Store.GetCapsule(t.Context(), a.teamID, c.str("id"))
	if err != nil {
		t.Fatal(err)
	}
	infos, err := s.Capsules.List(t.Context())
	if err != nil || len(infos) != 1 || infos[0].Address.String() != rec.Address {
		t.Errorf("recorded address %q; the agent has %v (%v), want one capsule at that address", rec.Address, infos, err)
	}
}
