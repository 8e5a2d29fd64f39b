// Package nettest gives tests a small internet of their own, so that no
// test traffic leaves the machine: a network namespace behind the host,
// reached over a veth pair, with addresses in the benchmark range
// 198.18.0.0/15 (which capsules' firewalls do not block), TCP servers on
// them, and an authoritative DNS server (github.com/miekg/dns) that answers
// the names a test gives it. The namespace is held by a file descriptor,
// never mounted, and everything goes away with the test.
package nettest

import (
	"crypto/rand"
	"io"
	"math/big"
	"net"
	"net/netip"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Hosts is how many addresses the internet has besides its gateway.
const Hosts = 5

// Internet is a test's internet.
type Internet struct {
	ns netns.NsHandle
	// Gateway is the host end of the veth: what the internet sees
	// capsules' masqueraded traffic come from.
	Gateway netip.Addr
	// Addrs are the internet's addresses; the DNS server is on Addrs[0].
	Addrs [Hosts]netip.Addr
	// DNS is the DNS server's address (UDP and TCP).
	DNS netip.AddrPort

	mu      sync.Mutex
	a       map[string]netip.Addr // fqdn (lower case) → address
	cname   map[string]string     // fqdn → fqdn
	ttl     uint32
	queries map[string]int
}

func randInt(n int64) int {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}

// New makes an internet behind host interface hostIface (a name no
// network manager of the test takes for a capsule veth) and starts its DNS
// server, which knows no names yet (SetA, SetCNAME).
func New(t testing.TB, hostIface string) *Internet {
	t.Helper()
	// A random /29 of 198.18.0.0/15: .1 the gateway, .2-.6 the internet.
	n := randInt(1 << 14)
	base := [4]byte{198, 18 + byte(n>>13), byte(n >> 5), byte(n&31) * 8}
	at := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{base[0], base[1], base[2], base[3] + i}) }
	in := &Internet{Gateway: at(1), a: map[string]netip.Addr{}, cname: map[string]string{}, ttl: 60, queries: map[string]int{}}
	for i := range in.Addrs {
		in.Addrs[i] = at(byte(i + 2))
	}

	var err error
	in.ns, err = newNetns()
	if err != nil {
		t.Fatalf("creating the internet's namespace: %v", err)
	}
	t.Cleanup(func() { in.ns.Close() })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostIface}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(in.ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("adding veth %s: %v", hostIface, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(hostIface); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	host, err := netlink.LinkByName(hostIface)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(in.Gateway, 29))}); err != nil {
		t.Fatalf("adding %s: %v", in.Gateway, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(in.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range in.Addrs {
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 29))}); err != nil {
			t.Fatalf("adding %s: %v", a, err)
		}
	}
	for _, l := range []netlink.Link{eth} {
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.IP(in.Gateway.AsSlice())}); err != nil {
		t.Fatalf("adding the internet's default route: %v", err)
	}

	in.DNS = netip.AddrPortFrom(in.Addrs[0], 53)
	var udp net.PacketConn
	var tcp net.Listener
	err = in.Do(func() error {
		var err error
		if udp, err = net.ListenPacket("udp4", in.DNS.String()); err != nil {
			return err
		}
		tcp, err = net.Listen("tcp4", in.DNS.String())
		return err
	})
	if err != nil {
		t.Fatalf("starting the internet's DNS server: %v", err)
	}
	for _, s := range []*dns.Server{{PacketConn: udp, Handler: in}, {Listener: tcp, Handler: in}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() {
			if s.Shutdown() != nil {
				udp.Close()
				tcp.Close()
			}
		})
	}
	return in
}

// newNetns creates a network namespace and returns a handle on it, leaving
// the calling thread where it was.
func newNetns() (netns.NsHandle, error) {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		return 0, err
	}
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: never hand it back.
		goruntime.Goexit()
	}
	return ns, nil
}

// Do runs fn on a thread inside the internet's namespace; sockets fn makes
// stay there.
func (in *Internet) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(in.ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
		if netns.Set(orig) == nil {
			goruntime.UnlockOSThread()
		}
		// Otherwise the locked thread exits with the goroutine.
	}()
	return <-errc
}

// SetA makes the DNS server answer name with addr.
func (in *Internet) SetA(name string, addr netip.Addr) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.a[dns.Fqdn(strings.ToLower(name))] = addr
}

// SetCNAME makes name an alias of target.
func (in *Internet) SetCNAME(name, target string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.cname[dns.Fqdn(strings.ToLower(name))] = dns.Fqdn(strings.ToLower(target))
}

// SetTTL sets the TTL of every answer.
func (in *Internet) SetTTL(ttl uint32) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.ttl = ttl
}

// Queries reports how many queries for name the server has answered.
func (in *Internet) Queries(name string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.queries[dns.Fqdn(strings.ToLower(name))]
}

// ServeDNS answers A queries from the names set; anything else is NXDOMAIN.
func (in *Internet) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg).SetReply(q)
	m.Authoritative = true
	in.mu.Lock()
	name := strings.ToLower(q.Question[0].Name)
	in.queries[name]++
	found := false
	for range 8 {
		if target, ok := in.cname[name]; ok {
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: in.ttl}, Target: target})
			name = target
			continue
		}
		if a, ok := in.a[name]; ok {
			found = true
			if q.Question[0].Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: in.ttl}, A: net.IP(a.AsSlice())})
			}
		}
		break
	}
	in.mu.Unlock()
	if !found {
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}

// Serve starts a TCP server on addr (one of Addrs) that greets every
// connection with "ok" and returns its host:port.
func (in *Internet) Serve(t testing.TB, addr netip.Addr) string {
	t.Helper()
	var ln net.Listener
	err := in.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(addr.String(), "0"))
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s in the internet: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "ok")
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// Port is the port of a host:port Serve returned.
func Port(hostport string) int {
	_, p, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(p)
	return n
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}
