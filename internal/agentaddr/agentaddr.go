// Package agentaddr decides which network addresses the control plane may
// reach agents at. An agent chooses its own address when it registers or
// heartbeats, and a BYOC agent is a team's own machine: without a policy it
// could point the control plane's signed requests at the control plane's
// own loopback services or at a cloud metadata endpoint, and read the
// answers back through the API (server-side request forgery).
//
// A Policy is checked twice: when an address is accepted (registration,
// heartbeat), with every address its host name resolves to, and at every
// dial, through a net.Dialer Control function that sees the address
// actually connected to, so that a name that resolves elsewhere later (DNS
// rebinding) gains nothing.
package agentaddr

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// EnvVar is the setting that lists the allowed ranges.
const EnvVar = "WRENN_AGENT_ALLOWED_CIDRS"

// special is a range refused unless an allowed range at least as narrow
// names it.
type special struct {
	prefix netip.Prefix
	what   string
}

// specials are the ranges no agent needs in production and an attacker
// wants: the control plane's own machine, link-local (where cloud
// metadata lives), and addresses that are not one machine's.
var specials = func() []special {
	var s []special
	for _, r := range []struct{ cidr, what string }{
		{"0.0.0.0/8", "unspecified (this network)"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local (cloud metadata lives at 169.254.169.254)"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved (or broadcast)"},
		{"100.100.100.200/32", "a cloud metadata endpoint (Alibaba Cloud)"},
		{"168.63.129.16/32", "a cloud platform endpoint (Azure)"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"fe80::/10", "link-local"},
		{"ff00::/8", "multicast"},
		{"fd00:ec2::254/128", "a cloud metadata endpoint (AWS)"},
	} {
		s = append(s, special{netip.MustParsePrefix(r.cidr), r.what})
	}
	return s
}()

// nat64 is the well-known NAT64 prefix: its addresses reach the IPv4
// address in their last 32 bits, which is checked as well.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Policy says which agent addresses are allowed. The zero value allows
// every address outside the special ranges. It is safe for concurrent use.
type Policy struct {
	// allowed, when not empty, are the only ranges allowed.
	allowed []netip.Prefix
}

// New returns the policy that allows only the ranges in allowed, or, when
// allowed is empty, every address except loopback, link-local,
// unspecified, multicast, reserved and cloud metadata addresses. Those
// special ranges are allowed only by an entry of allowed that is no wider
// than the special range itself (127.0.0.0/8 or 127.0.0.1/32 allows
// loopback; 0.0.0.0/0 does not).
func New(allowed []netip.Prefix) *Policy {
	p := &Policy{}
	for _, a := range allowed {
		p.allowed = append(p.allowed, a.Masked())
	}
	return p
}

// ParseList reads a comma-separated list of CIDRs ("10.0.0.0/8, fd00::/8");
// a bare address is its own /32 or /128.
func ParseList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a CIDR nor an address", f)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		pf, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: %w", f, err)
		}
		out = append(out, pf)
	}
	return out, nil
}

// Allowed reports whether ip may be an agent's address; the error says
// why not.
func (p *Policy) Allowed(ip netip.Addr) error {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return fmt.Errorf("not an IP address")
	}
	if err := p.allowed1(ip); err != nil {
		return err
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		v4 := netip.AddrFrom4([4]byte(b[12:]))
		if err := p.allowed1(v4); err != nil {
			return fmt.Errorf("%s reaches %s through NAT64: %w", ip, v4, err)
		}
	}
	return nil
}

func (p *Policy) allowed1(ip netip.Addr) error {
	var by *netip.Prefix
	for i, a := range p.allowed {
		if a.Contains(ip) {
			if by == nil || a.Bits() > by.Bits() {
				by = &p.allowed[i]
			}
		}
	}
	if len(p.allowed) > 0 && by == nil {
		// The list itself is not told: an agent may be a team's own
		// machine, and the ranges describe the operator's network.
		return fmt.Errorf("%s is outside the ranges the operator allows for agents (%s)", ip, EnvVar)
	}
	for _, s := range specials {
		if s.prefix.Contains(ip) && (by == nil || by.Bits() < s.prefix.Bits()) {
			return fmt.Errorf("%s is %s, which agents may use only if %s names it (e.g. %s, for development)",
				ip, s.what, EnvVar, s.prefix)
		}
	}
	return nil
}

// resolveTimeout bounds the name lookup of Check.
const resolveTimeout = 5 * time.Second

// Check reports whether hostport (host:port, the host an IP address or a
// name) may be an agent's address: a name must resolve, and to allowed
// addresses only.
func (p *Policy) Check(ctx context.Context, hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("address %q is not host:port", hostport)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := p.Allowed(ip); err != nil {
			return fmt.Errorf("address %s is refused: %w", hostport, err)
		}
		return nil
	}
	// One answer for a name that does not resolve and one that resolves
	// to a refused address, without the addresses: otherwise whoever
	// registers could read the control plane's DNS through it.
	refused := fmt.Errorf("address %s is refused: %s does not resolve, or resolves to an address agents may not use; give an IP address to be told why", hostport, host)
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return refused
	}
	for _, ip := range ips {
		if p.Allowed(ip) != nil {
			return refused
		}
	}
	return nil
}

// Control is a net.Dialer Control function that refuses connections to
// addresses the policy does not allow; it sees the resolved address of
// each attempt.
func (p *Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialing %s: not an IP address and port", address)
	}
	if err := p.Allowed(ap.Addr()); err != nil {
		return fmt.Errorf("dialing %s: agent address refused: %w", address, err)
	}
	return nil
}

// Dialer returns a dialer that connects only to allowed addresses.
func (p *Policy) Dialer() *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: p.Control}
}
