package network

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// hostIPv4 returns a global IPv4 address of the host outside pool, the kind
// of address a control plane or any other service listens on.
func hostIPv4(t *testing.T, pool netip.Prefix) netip.Addr {
	t.Helper()
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatalf("listing addresses: %v", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Is4() && ip.IsGlobalUnicast() && !ip.IsLinkLocalUnicast() && !pool.Contains(ip) {
			return ip
		}
	}
	t.Skip("the host has no global IPv4 address to test against")
	return netip.Addr{}
}

// addVeth creates a veth pair host/peer on the host, moves peer into the
// namespace at nsPath unless it is "", and gives host the address hostAddr.
func addVeth(t *testing.T, host, peer string, hostAddr netip.Prefix, nsPath string, peerAddr netip.Prefix) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: peer}
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		veth.PeerNamespace = netlink.NsFd(int(ns))
	}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("adding veth %s: %v", host, err)
	}
	t.Cleanup(func() { _ = deleteLink(host) })
	link, err := netlink.LinkByName(host)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(hostAddr)}); err != nil {
		t.Fatalf("adding %s: %v", hostAddr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	h := &netlink.Handle{}
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
		if h, err = netlink.NewHandleAt(ns); err != nil {
			t.Fatal(err)
		}
		defer h.Close()
	}
	p, err := h.LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	if peerAddr.IsValid() {
		if err := h.AddrAdd(p, &netlink.Addr{IPNet: ipNet(peerAddr)}); err != nil {
			t.Fatalf("adding %s: %v", peerAddr, err)
		}
	}
	if err := h.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	m := newTestManager(t, cfg)
	ctx := context.Background()
	a, err := m.Setup(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Setup(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}

	// No dummy interfaces in every kernel: a veth pair carries the cloud
	// metadata address instead. Its names have no dash after the prefix, so
	// the firewall does not take them for capsule veths.
	addVeth(t, cfg.Prefix+"md0", cfg.Prefix+"md1", netip.MustParsePrefix("169.254.169.254/32"), "", netip.Prefix{})

	// The internet, as far as the capsule can tell: a namespace behind the
	// host on a benchmark-range address the firewall does not block.
	outNS := filepath.Join(cfg.NetnsDir, cfg.Prefix+"out")
	if err := createNetns(outNS); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNetns(outNS) })
	third := byte(randInt(256))
	gwOut := netip.AddrFrom4([4]byte{198, 18, third, 1})
	outAddr := netip.AddrFrom4([4]byte{198, 18, third, 2})
	addVeth(t, cfg.Prefix+"o0", "eth0", netip.PrefixFrom(gwOut, 30), outNS, netip.PrefixFrom(outAddr, 30))
	internet := serveFunc(t, outNS, net.JoinHostPort(outAddr.String(), "0"), func(c net.Conn) string {
		return c.RemoteAddr().(*net.TCPAddr).IP.String()
	})

	gateway := serve(t, "", net.JoinHostPort(a.HostAddr.String(), "0"))
	anyAddr := serve(t, "", "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(anyAddr)
	other := serve(t, b.NetnsPath, net.JoinHostPort(b.Address.Addr().String(), "0"))
	blocked := map[string]string{
		"veth gateway":               gateway,
		"host IP (0.0.0.0 listener)": net.JoinHostPort(hostIPv4(t, cfg.CIDR).String(), port),
		"metadata address":           net.JoinHostPort("169.254.169.254", port),
		"own gateway, other port":    net.JoinHostPort(a.HostAddr.String(), port),
		"other capsule's gateway":    net.JoinHostPort(b.HostAddr.String(), port),
		"other capsule":              other,
	}

	// Controls: everything is reachable from the host, so a failure from
	// the capsule is the firewall's doing.
	for name, addr := range blocked {
		if err := dial("", addr); err != nil {
			t.Fatalf("control: host to %s (%s): %v", name, addr, err)
		}
	}
	// And the capsule does reach the internet, masqueraded behind the host.
	got, err := dialFrom(a.NetnsPath, netip.Addr{}, internet, dialTimeout)
	if err != nil {
		t.Fatalf("capsule to the internet (%s): %v", internet, err)
	}
	if got != gwOut.String() {
		t.Errorf("the internet saw the capsule as %s, want the host's %s (masquerade)", got, gwOut)
	}

	var wg sync.WaitGroup
	for name, addr := range blocked {
		wg.Go(func() {
			if _, err := dialFrom(a.NetnsPath, netip.Addr{}, addr, blockedTimeout); err == nil {
				t.Errorf("capsule reached %s (%s)", name, addr)
			}
		})
	}
	wg.Wait()

	// Spoofing: the capsule sends from an address that is not its own. The
	// network address of its own /30 is used because the answer to it is
	// routed back to the same veth: without the anti-spoofing entry the
	// connection would succeed. Last, because the extra address changes
	// where the capsule's packets come from.
	spoofed := a.Address.Masked().Addr()
	err = inNetns(a.NetnsPath, func() error {
		eth, err := netlink.LinkByName(PeerIface)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(spoofed, 32))})
	})
	if err != nil {
		t.Fatalf("adding a spoofed address: %v", err)
	}
	if _, err := dialFrom(a.NetnsPath, spoofed, internet, blockedTimeout); err == nil {
		t.Errorf("capsule reached the internet from spoofed address %s", spoofed)
	}
}
