package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

// Bounds of how long a looked-up address stays reachable: the answer's
// TTL, but at least minLearnTTL (a TTL of 0 or 1 would expire before the
// program that asked has connected) and at most maxLearnTTL.
const (
	minLearnTTL = 30 * time.Second
	maxLearnTTL = 24 * time.Hour
)

// upstreamTimeout bounds one exchange with an upstream resolver.
const upstreamTimeout = 3 * time.Second

// forwarder is the capsules' DNS resolver: every query a capsule sends to
// port 53 is redirected to it (see firewall_linux.go). It answers a name
// the capsule's policy denies with NXDOMAIN, forwards the rest to the
// upstream resolvers, and before answering adds the A records' addresses
// to the capsule's learned set, so that a default-deny policy lets the
// capsule connect to what it looked up, for the records' TTL. It is safe
// for concurrent use.
type forwarder struct {
	m         *Manager
	fw        *firewall
	log       *slog.Logger
	port      uint16
	upstreams []string // host:port
	udp, tcp  *dns.Server
	closeOnce sync.Once
}

// startForwarder listens on port (0: a free one, the same for UDP and
// TCP) on every IPv4 address and serves.
func startForwarder(m *Manager, fw *firewall, port uint16, upstreams []netip.AddrPort) (*forwarder, error) {
	f := &forwarder{m: m, fw: fw, log: m.log}
	for _, u := range upstreams {
		f.upstreams = append(f.upstreams, u.String())
	}
	if len(f.upstreams) == 0 {
		cc, err := dns.ClientConfigFromFile(m.cfg.ResolvConf)
		if err != nil {
			// Capsules still get answers: SERVFAIL, at once.
			m.log.Warn("no upstream resolver for capsules' DNS", "resolv_conf", m.cfg.ResolvConf, "error", err)
		} else {
			for _, s := range cc.Servers {
				f.upstreams = append(f.upstreams, net.JoinHostPort(s, cc.Port))
			}
		}
	}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(int(port))))
		if err != nil {
			return nil, fmt.Errorf("starting capsule DNS forwarder: %w", err)
		}
		got := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(got)))
		if err == nil {
			f.port = uint16(got)
			break
		}
		pc.Close()
		if port != 0 {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("starting capsule DNS forwarder: %w", err)
	}
	f.udp = &dns.Server{PacketConn: pc, Handler: f}
	f.tcp = &dns.Server{Listener: ln, Handler: f}
	for _, s := range []*dns.Server{f.udp, f.tcp} {
		go func() {
			if err := s.ActivateAndServe(); err != nil {
				f.log.Error("capsule DNS forwarder stopped", "error", err)
			}
		}()
	}
	return f, nil
}

func (f *forwarder) upstreamList() string { return strings.Join(f.upstreams, ",") }

func (f *forwarder) close() {
	if f == nil {
		return
	}
	f.closeOnce.Do(func() {
		// Shutdown of a server that has not started yet fails; closing
		// its socket ends it either way.
		for _, s := range []*dns.Server{f.udp, f.tcp} {
			if err := s.Shutdown(); err != nil {
				if s.PacketConn != nil {
					s.PacketConn.Close()
				}
				if s.Listener != nil {
					s.Listener.Close()
				}
			}
		}
	})
}

// ServeDNS answers one query of a capsule.
func (f *forwarder) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	src := addrOf(w.RemoteAddr())
	slot, rules, ok := f.m.policyOf(src)
	if !ok || len(q.Question) != 1 || q.Response || q.Opcode != dns.OpcodeQuery {
		// Not a capsule's, or not a plain query.
		f.reply(w, q, new(dns.Msg).SetRcode(q, dns.RcodeRefused))
		return
	}
	name := q.Question[0].Name
	if rules != nil && rules.Name(name) == egress.Denied {
		if !rules.DefaultDeny() {
			// With the internet open, the addresses of a denied name
			// would be reachable by address: they are denied too.
			if resp, err := f.exchange(q, false); err == nil {
				f.learn(slot, resp, true)
			}
		}
		f.log.Debug("capsule lookup denied", "capsule_id", slot.CapsuleID, "name", name)
		f.reply(w, q, nxdomain(q))
		return
	}
	_, overTCP := w.RemoteAddr().(*net.TCPAddr)
	resp, err := f.exchange(q, overTCP)
	if err != nil {
		f.log.Warn("capsule lookup failed upstream", "capsule_id", slot.CapsuleID, "name", name, "error", err)
		f.reply(w, q, new(dns.Msg).SetRcode(q, dns.RcodeServerFailure))
		return
	}
	if rules != nil {
		for _, rr := range resp.Answer {
			if c, ok := rr.(*dns.CNAME); ok && rules.DeniesName(c.Target) {
				f.reply(w, q, nxdomain(q))
				return
			}
		}
		f.learn(slot, resp, false)
	}
	if !overTCP {
		size := dns.MinMsgSize
		if opt := q.IsEdns0(); opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		resp.Truncate(size)
	}
	f.reply(w, q, resp)
}

func nxdomain(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg).SetRcode(q, dns.RcodeNameError)
	m.RecursionAvailable = true
	return m
}

func (f *forwarder) reply(w dns.ResponseWriter, q, resp *dns.Msg) {
	resp.Id = q.Id
	if err := w.WriteMsg(resp); err != nil {
		f.log.Debug("answering a capsule's lookup", "error", err)
	}
}

// exchange asks the upstream resolvers q, one after the other, over TCP
// when tcp or when a UDP answer came back truncated.
func (f *forwarder) exchange(q *dns.Msg, tcp bool) (*dns.Msg, error) {
	if len(f.upstreams) == 0 {
		return nil, errors.New("no upstream resolver configured")
	}
	var errs []error
	for _, u := range f.upstreams {
		resp, err := exchangeOne(q, u, tcp)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return nil, errors.Join(errs...)
}

func exchangeOne(q *dns.Msg, upstream string, tcp bool) (*dns.Msg, error) {
	if !tcp {
		c := &dns.Client{Net: "udp", Timeout: upstreamTimeout, UDPSize: dns.DefaultMsgSize}
		resp, _, err := c.Exchange(q, upstream)
		if err != nil || !resp.Truncated {
			return resp, err
		}
	}
	c := &dns.Client{Net: "tcp", Timeout: upstreamTimeout}
	resp, _, err := c.Exchange(q, upstream)
	return resp, err
}

// learn adds the IPv4 addresses of resp's A records to slot's allowed (or
// denied) learned set, for the shortest TTL among them.
func (f *forwarder) learn(slot Slot, resp *dns.Msg, deny bool) {
	var addrs []netip.Addr
	ttl := maxLearnTTL
	for _, rr := range resp.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
			addrs = append(addrs, ip)
			ttl = min(ttl, time.Duration(a.Hdr.Ttl)*time.Second)
		}
	}
	if len(addrs) == 0 {
		return
	}
	ttl = max(ttl, minLearnTTL)
	if err := f.fw.learn(slot, addrs, ttl, deny); err != nil {
		// A policy changed meanwhile; the capsule's next lookup learns
		// under the new one.
		f.log.Warn("recording a capsule's looked-up addresses", "capsule_id", slot.CapsuleID, "error", err)
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
