package api_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/network/nettest"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

type policyOut struct {
	Internet bool     `json:"internet"`
	Allow    []string `json:"allow"`
	Deny     []string `json:"deny"`
}

type capsuleOut struct {
	ID      string    `json:"id"`
	Status  string    `json:"status"`
	Network policyOut `json:"network"`
}

// egressWorld is a stack whose capsules' DNS goes to an internet of the
// test's own (nettest), with names:
//
//	allowed.test → Addrs[1]    denied.test → Addrs[3]
//	other.test   → Addrs[4]
//
// and a TCP server greeting "ok" on every address.
type egressWorld struct {
	s       *stacktest.Stack
	in      *nettest.Internet
	servers [nettest.Hosts]string
}

func newEgressWorld(t *testing.T) *egressWorld {
	n, err := rand.Int(rand.Reader, big.NewInt(1e6))
	if err != nil {
		t.Fatal(err)
	}
	in := nettest.New(t, fmt.Sprintf("eg%06d", n.Int64()))
	w := &egressWorld{in: in}
	in.SetA("allowed.test", in.Addrs[1])
	in.SetA("denied.test", in.Addrs[3])
	in.SetA("other.test", in.Addrs[4])
	for i, a := range in.Addrs {
		w.servers[i] = in.Serve(t, a)
	}
	w.s = stacktest.Start(t, stacktest.Options{Agent: func(c *config.Agent) {
		c.CapsuleDNSUpstreams = []netip.AddrPort{in.DNS}
	}})
	return w
}

// resolves reports what nslookup in the capsule says name is ("" when it
// does not resolve). The capsule's resolv.conf names public resolvers; the
// host answers in their place.
func (w *egressWorld) resolves(t *testing.T, id, name string) string {
	t.Helper()
	r := stacktest.Run(t, w.s.Envd(t, id), "nslookup "+name)
	if r.ExitCode != 0 {
		return ""
	}
	// busybox: "Name: allowed.test\nAddress: 198.18.x.y" after the server's lines.
	_, after, ok := strings.Cut(r.Stdout, "Name:")
	if !ok {
		return ""
	}
	for _, f := range strings.Fields(after) {
		if a, err := netip.ParseAddr(f); err == nil {
			return a.String()
		}
	}
	return ""
}

// reaches reports whether the capsule connects to hostport and reads the
// server's greeting.
func (w *egressWorld) reaches(t *testing.T, id, hostport string) bool {
	t.Helper()
	host, port, _ := strings.Cut(hostport, ":")
	r := stacktest.Run(t, w.s.Envd(t, id), fmt.Sprintf("nc -w 2 %s %s </dev/null", host, port))
	return r.ExitCode == 0 && strings.TrimSpace(r.Stdout) == "ok"
}

// check asserts the standard policy {allow allowed.test, deny denied.test}
// on capsule id.
func (w *egressWorld) check(t *testing.T, id, when string) {
	t.Helper()
	if got := w.resolves(t, id, "allowed.test"); got != w.in.Addrs[1].String() {
		t.Errorf("%s: allowed.test resolves to %q, want %s", when, got, w.in.Addrs[1])
	}
	if !w.reaches(t, id, w.servers[1]) {
		t.Errorf("%s: allowed.test's server is unreachable", when)
	}
	if got := w.resolves(t, id, "denied.test"); got != "" {
		t.Errorf("%s: denied.test resolves to %q", when, got)
	}
	if w.reaches(t, id, w.servers[3]) {
		t.Errorf("%s: denied.test's address is reachable by IP", when)
	}
	if w.reaches(t, id, w.servers[4]) {
		t.Errorf("%s: an address no lookup produced is reachable under default-deny", when)
	}
}

func TestEgressPolicyStack(t *testing.T) {
	w := newEgressWorld(t)
	s, tm := w.s, w.s.Team
	policy := map[string]any{"allow": []string{"Allowed.Test."}, "deny": []string{"denied.test"}}
	want := policyOut{Internet: true, Allow: []string{"allowed.test"}, Deny: []string{"denied.test"}}

	// Bad input: 400, and nothing is created.
	for name, bad := range map[string]map[string]any{
		"host bits":    {"allow": []string{"198.51.100.1/24"}},
		"bad name":     {"deny": []string{"exa mple.com"}},
		"ipv6":         {"deny": []string{"2001:db8::/32"}},
		"unknown key":  {"allowed": []string{"a.com"}},
		"too many":     {"allow": slices.Repeat([]string{"a.com"}, 65)},
		"inner wild":   {"allow": []string{"a.*.com"}},
		"not a string": {"allow": []int{1}},
	} {
		resp := tm.Do(t, s, "POST", "/v1/capsules", map[string]any{"template": "minimal", "network": bad})
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("create with %s: status %d, want 400", name, resp.StatusCode)
		}
	}
	var list struct {
		Capsules []capsuleOut `json:"capsules"`
	}
	tm.JSON(t, s, "GET", "/v1/capsules", nil, http.StatusOK, &list)
	if len(list.Capsules) != 0 {
		t.Fatalf("bad creates left %d capsules", len(list.Capsules))
	}

	var c capsuleOut
	tm.JSON(t, s, "POST", "/v1/capsules", map[string]any{"template": "minimal", "network": policy}, http.StatusCreated, &c)
	if !samePolicy(c.Network, want) {
		t.Errorf("created capsule's network = %+v, want %+v", c.Network, want)
	}
	w.check(t, c.ID, "new capsule")

	// A PATCH with bad input changes nothing.
	resp := tm.Do(t, s, "PATCH", "/v1/capsules/"+c.ID+"/network", map[string]any{"allow": []string{"10.0.0.1/8"}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad PATCH: status %d, want 400", resp.StatusCode)
	}
	var got capsuleOut
	tm.JSON(t, s, "GET", "/v1/capsules/"+c.ID, nil, http.StatusOK, &got)
	if !samePolicy(got.Network, want) {
		t.Errorf("after a bad PATCH the network is %+v, want %+v", got.Network, want)
	}

	// A PATCH applies to the running capsule within a second.
	t0 := time.Now()
	tm.JSON(t, s, "PATCH", "/v1/capsules/"+c.ID+"/network", map[string]any{"internet": true, "deny": []string{w.in.Addrs[1].String()}}, http.StatusOK, &got)
	took := time.Since(t0)
	if took > time.Second {
		t.Errorf("the PATCH took %v", took)
	}
	if w.reaches(t, c.ID, w.servers[1]) {
		t.Error("after the PATCH denying it, the address is still reachable")
	}
	if !w.reaches(t, c.ID, w.servers[4]) {
		t.Error("after the PATCH opening the internet, an unlisted address is unreachable")
	}
	// The agent applies the policy before it answers, so the PATCH's
	// answer time is when it holds; the checks above prove it does.
	t.Logf("PATCH answered in %v, both checks done %v after it was sent", took, time.Since(t0))
	tm.JSON(t, s, "PATCH", "/v1/capsules/"+c.ID+"/network", policy, http.StatusOK, &got)

	// A paused capsule's policy changes too, and its resume brings it.
	tm.JSON(t, s, "POST", "/v1/capsules/"+c.ID+"/pause", nil, http.StatusOK, &got)
	tm.JSON(t, s, "PATCH", "/v1/capsules/"+c.ID+"/network", map[string]any{"internet": true}, http.StatusOK, &got)
	if got.Status != "paused" || !got.Network.Internet || len(got.Network.Allow)+len(got.Network.Deny) != 0 {
		t.Errorf("PATCH of a paused capsule answered %+v", got)
	}
	tm.JSON(t, s, "POST", "/v1/capsules/"+c.ID+"/resume", nil, http.StatusOK, &got)
	if !w.reaches(t, c.ID, w.servers[4]) {
		t.Error("the open policy set while paused does not hold after the resume")
	}
	tm.JSON(t, s, "PATCH", "/v1/capsules/"+c.ID+"/network", policy, http.StatusOK, &got)

	// Pause and resume keep it.
	tm.JSON(t, s, "POST", "/v1/capsules/"+c.ID+"/pause", nil, http.StatusOK, &got)
	tm.JSON(t, s, "POST", "/v1/capsules/"+c.ID+"/resume", nil, http.StatusOK, &got)
	if !samePolicy(got.Network, want) {
		t.Errorf("after resume the network is %+v", got.Network)
	}
	w.check(t, c.ID, "after pause and resume")

	// A snapshot passes it on; a create naming a policy overrides it.
	snap := "egress-" + c.ID[:8]
	tm.JSON(t, s, "POST", "/v1/snapshots", map[string]any{"capsule_id": c.ID, "name": snap}, http.StatusCreated, nil)
	var clone, open capsuleOut
	tm.JSON(t, s, "POST", "/v1/capsules", map[string]any{"template": snap}, http.StatusCreated, &clone)
	if !samePolicy(clone.Network, want) {
		t.Errorf("the snapshot's capsule has network %+v, want its source's %+v", clone.Network, want)
	}
	w.check(t, clone.ID, "capsule from a snapshot")
	tm.JSON(t, s, "POST", "/v1/capsules", map[string]any{"template": snap, "network": map[string]any{}}, http.StatusCreated, &open)
	if !open.Network.Internet || len(open.Network.Allow)+len(open.Network.Deny) != 0 {
		t.Errorf("a snapshot's capsule created with {} has network %+v, want the open policy", open.Network)
	}
	if !w.reaches(t, open.ID, w.servers[4]) {
		t.Error("the open capsule cannot reach the internet")
	}
	for _, id := range []string{clone.ID, open.ID} {
		tm.JSON(t, s, "DELETE", "/v1/capsules/"+id, nil, http.StatusNoContent, nil)
	}

	// The team's default: owners (signed in) and platform admins may set
	// it; new capsules get it.
	other := s.NewTeam(t)
	resp = other.Do(t, s, "PUT", "/v1/team/network-policy", map[string]any{"network": policy})
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("PUT team policy with an API key: status %d, want 403", resp.StatusCode)
	}
	var team struct {
		Network policyOut `json:"network"`
	}
	tm.JSON(t, s, "GET", "/v1/team/network-policy", nil, http.StatusOK, &team)
	if !team.Network.Internet || len(team.Network.Allow) != 0 {
		t.Errorf("a new team's default is %+v, want the open policy", team.Network)
	}
	tm.JSON(t, s, "PUT", "/v1/team/network-policy", map[string]any{"network": map[string]any{"internet": false, "allow": []string{"other.test"}}}, http.StatusOK, &team)
	var def capsuleOut
	tm.JSON(t, s, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, http.StatusCreated, &def)
	if def.Network.Internet || !slices.Equal(def.Network.Allow, []string{"other.test"}) {
		t.Errorf("a capsule created without a policy has %+v, want the team's default", def.Network)
	}
	if w.resolves(t, def.ID, "allowed.test") != "" || w.resolves(t, def.ID, "other.test") != w.in.Addrs[4].String() {
		t.Error("the team default is not what the capsule's DNS answers by")
	}
	tm.JSON(t, s, "DELETE", "/v1/capsules/"+def.ID, nil, http.StatusNoContent, nil)

	// An agent restart keeps it: a second manager on the agent's
	// directory reinstalls the firewall and starts its own forwarder.
	cfg := s.AgentConfig
	cfg.WarmPool = 0
	restarted, err := stacktest.OpenCapsules(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("reopening capsules: %v", err)
	}
	defer func() { _ = restarted.Close() }()
	w.check(t, c.ID, "after an agent restart")
}

func samePolicy(a, b policyOut) bool {
	return a.Internet == b.Internet && slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny)
}
