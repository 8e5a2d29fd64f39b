package api

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// peerAddr returns the address of the connection's other end, unmapped
// (an IPv4 client on a dual-stack socket is IPv4), or the zero Addr.
func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// trustedProxy reports whether a is in WRENN_TRUSTED_PROXIES.
func (s *server) trustedProxy(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fromTrustedProxy reports whether r came from a trusted proxy, whose
// X-Forwarded-* headers may be believed.
func (s *server) fromTrustedProxy(r *http.Request) bool {
	return s.trustedProxy(peerAddr(r))
}

// clientIP returns the caller's IP, "" if unknown. From a trusted proxy it
// walks X-Forwarded-For from the right: each entry was appended by the hop
// before it, so the first one that is not itself a trusted proxy is the
// client; entries further left come from the client and may be forged. An
// entry that is not an address stops the walk at the hop that wrote it.
func (s *server) clientIP(r *http.Request) string {
	client := peerAddr(r)
	if s.trustedProxy(client) {
		entries := forwardedFor(r)
		for i := len(entries) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(entries[i])
			if err != nil {
				break
			}
			client = a.Unmap().WithZone("")
			if !s.trustedProxy(client) {
				break
			}
		}
	}
	if !client.IsValid() {
		return ""
	}
	return client.String()
}

// forwardedFor returns the X-Forwarded-For entries in order, over all the
// header's lines.
func forwardedFor(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for e := range strings.SplitSeq(v, ",") {
			out = append(out, strings.TrimSpace(e))
		}
	}
	return out
}

// ipBucket returns the key the per-IP limits count ip under: an IPv4
// address, or the /64 of an IPv6 one, since a single IPv6 subscriber
// usually holds a whole /64 and could otherwise take a new address for
// every attempt.
func ipBucket(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
