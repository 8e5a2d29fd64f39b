package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
)

const envdPort = "49983"

// setupMany sets up n capsules concurrently and returns their slots.
func setupMany(t *testing.T, m *Manager, n int) []Slot {
	t.Helper()
	slots := make([]Slot, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			slots[i], errs[i] = m.Setup(context.Background(), fmt.Sprintf("capsule-%d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Setup capsule-%d: %v", i, err)
		}
	}
	return slots
}

func TestSetupConcurrent(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	m := newTestManager(t, cfg)
	slots := setupMany(t, m, 10)

	addrs := map[netip.Addr]bool{}
	ifaces := map[string]bool{}
	entries := srcEntries(t, cfg.Prefix)
	for _, s := range slots {
		if addrs[s.Address.Addr()] || ifaces[s.HostIface] {
			t.Fatalf("slot %+v reuses an address or interface", s)
		}
		addrs[s.Address.Addr()], ifaces[s.HostIface] = true, true
		if !cfg.CIDR.Contains(s.Address.Addr()) || s.Address.Bits() != 30 {
			t.Errorf("%s: address %s, want a /30 in %s", s.CapsuleID, s.Address, cfg.CIDR)
		}
		if !netnsMounted(s.NetnsPath) {
			t.Errorf("%s: netns %s not mounted", s.CapsuleID, s.NetnsPath)
		}
		if _, err := netlink.LinkByName(s.HostIface); err != nil {
			t.Errorf("%s: host veth: %v", s.CapsuleID, err)
		}
		if !entries[entryOf(s)] {
			t.Errorf("%s: no firewall entry %s in %v", s.CapsuleID, entryOf(s), entries)
		}
		if got, ok := m.Lookup(s.CapsuleID); !ok || got != s {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", s.CapsuleID, got, ok, s)
		}
		addr := serve(t, s.NetnsPath, net.JoinHostPort(s.Address.Addr().String(), envdPort))
		if err := dial("", addr); err != nil {
			t.Errorf("%s: host to capsule %s: %v", s.CapsuleID, addr, err)
		}
	}
}

func TestTeardown(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	m := newTestManager(t, cfg)
	ctx := context.Background()
	s, err := m.Setup(ctx, "gone")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	keep, err := m.Setup(ctx, "stays")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if err := m.Teardown(ctx, "gone"); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if exists(s.NetnsPath) {
		t.Errorf("netns %s still exists", s.NetnsPath)
	}
	if _, err := netlink.LinkByName(s.HostIface); err == nil {
		t.Errorf("veth %s still exists", s.HostIface)
	}
	if exists(recordPath(cfg.StateDir, "gone")) {
		t.Errorf("allocation file of %s still exists", s.CapsuleID)
	}
	entries := srcEntries(t, cfg.Prefix)
	if entries[entryOf(s)] {
		t.Errorf("firewall entry %s still present", entryOf(s))
	}
	if !entries[entryOf(keep)] {
		t.Errorf("firewall entry %s of the other capsule gone", entryOf(keep))
	}
	if _, ok := m.Lookup("gone"); ok {
		t.Errorf("Lookup finds a torn-down capsule")
	}
	if err := m.Teardown(ctx, "gone"); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if err := m.Teardown(ctx, "never-existed"); err != nil {
		t.Errorf("Teardown of an unknown id: %v", err)
	}
}

func TestPersistence(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	ctx := context.Background()
	m1 := newTestManager(t, cfg)
	slots := setupMany(t, m1, 3)
	m1.Close()

	// An agent restart: a new manager on the same state.
	m2 := newTestManager(t, cfg)
	for _, s := range slots {
		got, ok := m2.Lookup(s.CapsuleID)
		if !ok || got != s {
			t.Errorf("after restart Lookup(%s) = %+v, %v; want %+v", s.CapsuleID, got, ok, s)
		}
		if !srcEntries(t, cfg.Prefix)[entryOf(s)] {
			t.Errorf("after restart no firewall entry for %s", s.CapsuleID)
		}
	}
	// Re-adoption returns the same slot, and a new capsule gets a new address.
	again, err := m2.Setup(ctx, slots[0].CapsuleID)
	if err != nil {
		t.Fatalf("Setup of an existing id: %v", err)
	}
	if again != slots[0] {
		t.Errorf("Setup of an existing id = %+v, want %+v", again, slots[0])
	}
	fresh, err := m2.Setup(ctx, "fresh")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	for _, s := range slots {
		if fresh.Address == s.Address || fresh.HostIface == s.HostIface {
			t.Errorf("new capsule got %s/%s, already held by %s", fresh.Address, fresh.HostIface, s.CapsuleID)
		}
	}

	// A capsule whose namespace vanished is rebuilt with the same address.
	broken := slots[1]
	if err := deleteNetns(broken.NetnsPath); err != nil {
		t.Fatal(err)
	}
	repaired, err := m2.Setup(ctx, broken.CapsuleID)
	if err != nil {
		t.Fatalf("Setup of a broken slot: %v", err)
	}
	if repaired != broken {
		t.Errorf("repaired slot = %+v, want %+v", repaired, broken)
	}
	addr := serve(t, repaired.NetnsPath, net.JoinHostPort(repaired.Address.Addr().String(), envdPort))
	if err := dial("", addr); err != nil {
		t.Errorf("host to repaired capsule: %v", err)
	}
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	ctx := context.Background()
	m1 := newTestManager(t, cfg)
	slots := setupMany(t, m1, 4)

	// Leftovers without an allocation: a namespace and a veth named with
	// the prefix, as a crash between creating them and persisting could
	// leave (or a state directory lost with the disk).
	strayNS := filepath.Join(cfg.NetnsDir, netnsName(cfg.Prefix, "stray"))
	if err := createNetns(strayNS); err != nil {
		t.Fatal(err)
	}
	strayIf := hostIface(cfg.Prefix, slotCount(cfg.CIDR)-1)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: strayIf}, PeerName: strayIf + "p"}); err != nil {
		t.Fatal(err)
	}

	m2 := newTestManager(t, cfg)
	running := map[string]bool{slots[0].CapsuleID: true, slots[2].CapsuleID: true}
	if err := m2.Cleanup(ctx, func(id string) bool { return running[id] }); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	entries := srcEntries(t, cfg.Prefix)
	for _, s := range slots {
		_, linkErr := netlink.LinkByName(s.HostIface)
		_, ok := m2.Lookup(s.CapsuleID)
		state := []bool{exists(s.NetnsPath), linkErr == nil, exists(recordPath(cfg.StateDir, s.CapsuleID)), entries[entryOf(s)], ok}
		for i, present := range state {
			if present != running[s.CapsuleID] {
				t.Errorf("%s (running %v): [netns veth file fw lookup][%d] = %v", s.CapsuleID, running[s.CapsuleID], i, present)
			}
		}
	}
	if exists(strayNS) {
		t.Errorf("leftover netns %s still exists", strayNS)
	}
	if _, err := netlink.LinkByName(strayIf); err == nil {
		t.Errorf("leftover veth %s still exists", strayIf)
	}
	// What was kept still works.
	addr := serve(t, slots[0].NetnsPath, net.JoinHostPort(slots[0].Address.Addr().String(), envdPort))
	if err := dial("", addr); err != nil {
		t.Errorf("host to kept capsule: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string // in the error; "" for none
	}{
		{"ok", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x", NetnsDir: "/n"}, ""},
		{"smallest", Config{CIDR: netip.MustParsePrefix("10.88.0.0/30"), StateDir: "/x", NetnsDir: "/n", Prefix: "abcde"}, ""},
		{"too small", Config{CIDR: netip.MustParsePrefix("10.88.0.0/31"), StateDir: "/x", NetnsDir: "/n"}, "too small"},
		{"too large", Config{CIDR: netip.MustParsePrefix("0.0.0.0/0"), StateDir: "/x", NetnsDir: "/n", Prefix: "abcde"}, "too large"},
		{"ipv6", Config{CIDR: netip.MustParsePrefix("fd00::/64"), StateDir: "/x", NetnsDir: "/n"}, "IPv4"},
		{"host bits", Config{CIDR: netip.MustParsePrefix("10.88.0.1/16"), StateDir: "/x", NetnsDir: "/n"}, "host bits"},
		{"no cidr", Config{StateDir: "/x", NetnsDir: "/n"}, "CIDR: not set"},
		{"no state dir", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), NetnsDir: "/n"}, "state directory"},
		{"no netns dir", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x"}, "namespace directory: not set"},
		{"relative netns dir", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x", NetnsDir: "netns"}, "not an absolute path"},
		{"shared netns dir", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x", NetnsDir: "/run/netns/"}, "shared with iproute2"},
		{"prefix too long", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x", NetnsDir: "/n", Prefix: "abcdef"}, "longer than 5"},
		{"prefix chars", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x", NetnsDir: "/n", Prefix: "w-r"}, "a-z and 0-9"},
		{"prefix upper", Config{CIDR: netip.MustParsePrefix("10.88.0.0/16"), StateDir: "/x", NetnsDir: "/n", Prefix: "WR"}, "a-z and 0-9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// New reports the same errors before touching anything.
	if _, err := New(context.Background(), Config{CIDR: netip.MustParsePrefix("fd00::/64"), StateDir: t.TempDir(), NetnsDir: t.TempDir()}); err == nil {
		t.Errorf("New with an IPv6 pool succeeded")
	}
}

func TestSetupInvalidID(t *testing.T) {
	t.Parallel()
	m := newTestManager(t, newTestConfig(t))
	for _, id := range []string{"", "../etc", "a/b", ".hidden", strings.Repeat("x", 65)} {
		if _, err := m.Setup(context.Background(), id); err == nil {
			t.Errorf("Setup(%q) succeeded", id)
		}
	}
}

func TestSlotAddressing(t *testing.T) {
	t.Parallel()
	cidr := netip.MustParsePrefix("10.88.0.0/16")
	s := newSlot(cidr, "wr", "/var/lib/wrenn/netns", "abc", 5)
	if s.HostAddr != netip.MustParseAddr("10.88.0.21") || s.Address != netip.MustParsePrefix("10.88.0.22/30") {
		t.Errorf("slot 5: host %s capsule %s, want 10.88.0.21 and 10.88.0.22/30", s.HostAddr, s.Address)
	}
	if s.HostIface != "wr-5" || s.NetnsName != "wr-abc" || s.NetnsPath != "/var/lib/wrenn/netns/wr-abc" {
		t.Errorf("slot 5 names: %+v", s)
	}
	last := slotCount(cidr) - 1
	ls := newSlot(cidr, "wr", "/n", "x", last)
	if ls.Address != netip.MustParsePrefix("10.88.255.254/30") {
		t.Errorf("last slot address %s", ls.Address)
	}
	for _, idx := range []int{0, 5, last} {
		got, ok := slotIndex(cidr, newSlot(cidr, "wr", "/n", "x", idx).Address.Addr())
		if !ok || got != idx {
			t.Errorf("slotIndex(slot %d) = %d, %v", idx, got, ok)
		}
	}
	if _, ok := slotIndex(cidr, netip.MustParseAddr("10.88.0.21")); ok {
		t.Errorf("slotIndex accepts a host address")
	}
}
