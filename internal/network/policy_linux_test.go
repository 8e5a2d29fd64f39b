package network

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/network/nettest"
)

// lookup asks name's A records from the capsule in namespace nsPath, of a
// resolver at an arbitrary public address: the firewall sends every
// capsule query to the agent's forwarder whatever its destination.
func lookup(nsPath, name string, tcp bool) ([]netip.Addr, int, error) {
	var resp *dns.Msg
	err := inNetns(nsPath, func() error {
		c := &dns.Client{Timeout: 3 * time.Second}
		if tcp {
			c.Net = "tcp"
		}
		var err error
		resp, _, err = c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA), "192.0.2.53:53")
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	var out []netip.Addr
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A.To4())
			out = append(out, ip)
		}
	}
	return out, resp.Rcode, nil
}

// policyWorld is a manager whose capsules' DNS goes to an internet of the
// test's own, with names:
//
//	allowed.test      → Addrs[1]
//	www.allowed.test  → Addrs[2]
//	denied.test       → Addrs[3]
//	other.test        → Addrs[4]
//	alias.test        → CNAME denied.test
type policyWorld struct {
	cfg     Config
	m       *Manager
	in      *nettest.Internet
	servers [nettest.Hosts]string // a TCP server on each internet address
}

func newPolicyWorld(t *testing.T) *policyWorld { return newPolicyWorldB(t) }

func newPolicyWorldB(t testing.TB) *policyWorld {
	t.Helper()
	cfg := newTestConfig(t)
	in := nettest.New(t, cfg.Prefix+"in0")
	cfg.DNSUpstreams = []netip.AddrPort{in.DNS}
	if _, bench := t.(*testing.B); bench {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	w := &policyWorld{cfg: cfg, in: in}
	w.m = newTestManager(t, cfg)
	in.SetA("allowed.test", in.Addrs[1])
	in.SetA("www.allowed.test", in.Addrs[2])
	in.SetA("denied.test", in.Addrs[3])
	in.SetA("other.test", in.Addrs[4])
	in.SetCNAME("alias.test", "denied.test")
	for i, a := range in.Addrs {
		w.servers[i] = in.Serve(t, a)
	}
	return w
}

func (w *policyWorld) capsule(t *testing.T, id string, p egress.Policy) Slot {
	t.Helper()
	s, err := w.m.Setup(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.m.SetPolicy(context.Background(), id, p); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	return s
}

func wantResolves(t *testing.T, s Slot, name string, want netip.Addr) {
	t.Helper()
	got, rcode, err := lookup(s.NetnsPath, name, false)
	if err != nil || rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != want {
		t.Errorf("lookup %s from %s: %v %s %v, want %s", name, s.CapsuleID, got, dns.RcodeToString[rcode], err, want)
	}
}

func wantNXDomain(t *testing.T, s Slot, name string) {
	t.Helper()
	got, rcode, err := lookup(s.NetnsPath, name, false)
	if err != nil || rcode != dns.RcodeNameError || len(got) != 0 {
		t.Errorf("lookup %s from %s: %v %s %v, want NXDOMAIN", name, s.CapsuleID, got, dns.RcodeToString[rcode], err)
	}
}

func wantReach(t *testing.T, s Slot, addr string) {
	t.Helper()
	if err := dial(s.NetnsPath, addr); err != nil {
		t.Errorf("%s could not reach %s: %v", s.CapsuleID, addr, err)
	}
}

func wantBlocked(t *testing.T, s Slot, addr string) {
	t.Helper()
	if _, err := dialFrom(s.NetnsPath, netip.Addr{}, addr, blockedTimeout); err == nil {
		t.Errorf("%s reached %s", s.CapsuleID, addr)
	}
}

func TestPolicyDomains(t *testing.T) {
	t.Parallel()
	w := newPolicyWorld(t)
	s := w.capsule(t, "dom", egress.Policy{Internet: true, Allow: []string{"allowed.test", "*.allowed.test"}, Deny: []string{"denied.test"}})

	// Nothing looked up yet: even allowed names' addresses are closed.
	wantBlocked(t, s, w.servers[1])
	wantResolves(t, s, "allowed.test", w.in.Addrs[1])
	wantReach(t, s, w.servers[1])
	wantResolves(t, s, "WWW.Allowed.Test.", w.in.Addrs[2])
	wantReach(t, s, w.servers[2])
	// Over TCP too.
	if got, rcode, err := lookup(s.NetnsPath, "www.allowed.test", true); err != nil || rcode != dns.RcodeSuccess || len(got) != 1 {
		t.Errorf("TCP lookup: %v %d %v", got, rcode, err)
	}

	// Denied: no answer, and its address is closed too.
	wantNXDomain(t, s, "denied.test")
	wantBlocked(t, s, w.servers[3])
	// Unlisted, under an allow list: default-deny.
	wantNXDomain(t, s, "other.test")
	wantBlocked(t, s, w.servers[4])
	// An allowed-looking name whose answer goes through a denied one.
	w.in.SetCNAME("cdn.allowed.test", "denied.test")
	wantNXDomain(t, s, "cdn.allowed.test")
	wantBlocked(t, s, w.servers[3])
	if n := w.in.Queries("denied.test"); n != 0 {
		t.Errorf("the upstream was asked denied.test %d times, want 0", n)
	}

	// Another capsule with the open policy is unaffected; the first's
	// lookups opened nothing for it beyond what it has anyway.
	open := w.capsule(t, "open", egress.Open())
	wantResolves(t, open, "denied.test", w.in.Addrs[3])
	wantReach(t, open, w.servers[3])
	wantReach(t, open, w.servers[4])

	// The fixed protections stay: an allowed name that answers with the
	// host's own gateway address gets nowhere.
	w.in.SetA("sneaky.allowed.test", s.HostAddr)
	wantResolves(t, s, "sneaky.allowed.test", s.HostAddr)
	gw := serve(t, "", net.JoinHostPort(s.HostAddr.String(), "0"))
	wantBlocked(t, s, gw)
}

func TestPolicyDenyWithInternet(t *testing.T) {
	t.Parallel()
	w := newPolicyWorld(t)
	s := w.capsule(t, "deny", egress.Policy{Internet: true, Deny: []string{"denied.test"}})
	// Default-allow: an unlisted address is reachable without a lookup.
	wantReach(t, s, w.servers[4])
	wantResolves(t, s, "other.test", w.in.Addrs[4])
	// A denied name does not resolve, and once looked up its addresses
	// are closed even though the internet is open.
	wantNXDomain(t, s, "denied.test")
	wantBlocked(t, s, w.servers[3])
	wantNXDomain(t, s, "alias.test")
}

func TestPolicyCIDRs(t *testing.T) {
	t.Parallel()
	w := newPolicyWorld(t)
	net29 := netip.PrefixFrom(w.in.Addrs[0], 29).Masked()
	s := w.capsule(t, "cidr", egress.Policy{Internet: true,
		Allow: []string{net29.String()},
		Deny:  []string{w.in.Addrs[2].String()}})
	wantReach(t, s, w.servers[1])
	wantReach(t, s, w.servers[3])
	wantBlocked(t, s, w.servers[2]) // deny beats allow
	// Names outside the allow list do not resolve, even when their
	// addresses are allowed.
	wantNXDomain(t, s, "allowed.test")

	// Internet off, nothing allowed: cut off, DNS included.
	off := w.capsule(t, "off", egress.Policy{})
	for _, srv := range w.servers {
		wantBlocked(t, off, srv)
	}
	wantNXDomain(t, off, "other.test")
}

// TestPolicyChange changes a running capsule's policy back and forth and
// checks that each change holds for the next connection, within a second.
func TestPolicyChange(t *testing.T) {
	t.Parallel()
	w := newPolicyWorld(t)
	s := w.capsule(t, "chg", egress.Open())
	wantReach(t, s, w.servers[1])
	ctx := context.Background()
	for i, p := range []egress.Policy{
		{Internet: true, Deny: []string{w.in.Addrs[1].String()}},
		egress.Open(),
		{Internet: false},
	} {
		t0 := time.Now()
		if err := w.m.SetPolicy(ctx, "chg", p); err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		if took > time.Second {
			t.Errorf("change %d took %v, more than a second", i, took)
		}
		t.Logf("change %d applied in %v", i, took)
		if p.IsOpen() {
			wantReach(t, s, w.servers[1])
		} else {
			wantBlocked(t, s, w.servers[1])
		}
		got, ok := w.m.Policy("chg")
		want, _ := p.Normalize()
		if !ok || !samePolicy(&got, &want) {
			t.Errorf("Policy = %+v, want %+v", got, want)
		}
	}
	if err := w.m.SetPolicy(ctx, "chg", egress.Policy{Allow: []string{"10.0.0.1/8"}}); err == nil {
		t.Error("SetPolicy with a bad CIDR succeeded")
	}
	if err := w.m.SetPolicy(ctx, "nope", egress.Open()); err == nil {
		t.Error("SetPolicy of a capsule without a slot succeeded")
	}
}

// TestPolicyRestart is an agent restart: a new manager on the same state
// keeps every capsule's policy and what its lookups opened.
func TestPolicyRestart(t *testing.T) {
	t.Parallel()
	w := newPolicyWorld(t)
	s := w.capsule(t, "rst", egress.Policy{Internet: true, Allow: []string{"allowed.test"}, Deny: []string{"denied.test"}})
	wantResolves(t, s, "allowed.test", w.in.Addrs[1])
	w.m.Close()

	m2 := newTestManager(t, w.cfg)
	w.m = m2
	if p, _ := m2.Policy("rst"); !p.DefaultDeny() || len(p.Deny) != 1 {
		t.Errorf("policy after restart: %+v", p)
	}
	if err := m2.Cleanup(context.Background(), func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	// Looked up before the restart, still open; the rest still closed.
	wantReach(t, s, w.servers[1])
	wantBlocked(t, s, w.servers[4])
	// The new forwarder answers (on its own port) by the same policy.
	wantNXDomain(t, s, "denied.test")
	wantResolves(t, s, "allowed.test", w.in.Addrs[1])

	// Teardown takes the policy with it; the next capsule on any slot
	// starts open.
	if err := m2.Teardown(context.Background(), "rst"); err != nil {
		t.Fatal(err)
	}
	s2 := w.capsule(t, "next", egress.Open())
	wantReach(t, s2, w.servers[4])
}

// TestForwarderOnlyForCapsules: the forwarder listens on every address,
// but only capsules reach it.
func TestForwarderOnlyForCapsules(t *testing.T) {
	t.Parallel()
	w := newPolicyWorld(t)
	c := &dns.Client{Timeout: time.Second}
	_, _, err := c.Exchange(new(dns.Msg).SetQuestion("other.test.", dns.TypeA),
		net.JoinHostPort("127.0.0.1", strconv.Itoa(int(w.m.dns.port))))
	if err == nil {
		t.Errorf("the host's own lookup through the forwarder got an answer")
	}
}
