// Package config loads the settings of each Wrenn binary from environment
// variables, once, at start-up. Load functions take getenv so that tests can
// pass their own; a bad value fails fast with an error naming the variable.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// reader reads typed values from getenv and remembers the first error.
type reader struct {
	getenv func(string) string
	err    error
}

func (r *reader) fail(name, value, why string) {
	if r.err == nil {
		r.err = fmt.Errorf("config: %s=%q: %s", name, value, why)
	}
}

func (r *reader) string(name, def string) string {
	if v := r.getenv(name); v != "" {
		return v
	}
	return def
}

func (r *reader) required(name string) string {
	v := r.getenv(name)
	if v == "" && r.err == nil {
		r.err = fmt.Errorf("config: %s is required", name)
	}
	return v
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, v, "not a duration (examples: 90s, 5m, 24h)")
		return def
	}
	if d <= 0 {
		r.fail(name, v, "must be positive")
		return def
	}
	return d
}

func (r *reader) int(name string, def int) int {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.fail(name, v, "not an integer")
		return def
	}
	return n
}

// intIn reads an integer that must lie in min..max.
func (r *reader) intIn(name string, def, min, max int) int {
	n := r.int(name, def)
	if n < min || n > max {
		r.fail(name, strconv.Itoa(n), fmt.Sprintf("must be %d..%d", min, max))
		return def
	}
	return n
}

func (r *reader) bool(name string, def bool) bool {
	v := r.getenv(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, v, "not a boolean (true or false)")
		return def
	}
	return b
}

// url reads a required http:// or https:// base URL and returns it without a
// trailing slash.
func (r *reader) url(name string) string {
	v := r.required(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail(name, v, "must be an http:// or https:// URL, like https://wrenn.example.com")
		return ""
	}
	if u.RawQuery != "" || u.Fragment != "" {
		r.fail(name, v, "must not have a query or fragment")
		return ""
	}
	return strings.TrimRight(v, "/")
}

// dir reads a directory path and makes it absolute.
func (r *reader) dir(name, def string) string {
	v := r.string(name, def)
	abs, err := filepath.Abs(v)
	if err != nil {
		r.fail(name, v, "not a usable path: "+err.Error())
		return ""
	}
	return abs
}

// listenAddr reads an address to listen on, host:port or :port. Port 0 is
// allowed: the kernel picks one and the program logs it.
func (r *reader) listenAddr(name, def string) string {
	v := r.string(name, def)
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		r.fail(name, v, "must be host:port or :port")
		return ""
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		r.fail(name, v, "port must be a number from 0 to 65535")
		return ""
	}
	return v
}

// logLevel reads a slog level: debug, info, warn or error (default info).
// prefix reads an IPv4 network of at least /24 in CIDR notation.
func (r *reader) prefix(name, def string) netip.Prefix {
	v := r.string(name, def)
	p, err := netip.ParsePrefix(v)
	switch {
	case err != nil:
		r.fail(name, v, "must be an IPv4 network in CIDR notation, like 10.88.0.0/16")
	case !p.Addr().Is4() || p.Bits() > 24:
		r.fail(name, v, "must be an IPv4 network of /24 or larger")
	case p.Masked() != p:
		r.fail(name, v, "has host bits set; did you mean "+p.Masked().String()+"?")
	}
	return p
}

// addrPorts reads a comma-separated list of "ip" or "ip:port" (IPv6 in
// brackets with a port); a bare address takes port def.
func (r *reader) addrPorts(name string, def uint16) []netip.AddrPort {
	v := r.getenv(name)
	var out []netip.AddrPort
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), def))
			continue
		}
		ap, err := netip.ParseAddrPort(f)
		if err != nil {
			r.fail(name, v, fmt.Sprintf("%q is not an IP address or IP:port, like 192.0.2.53 or 192.0.2.53:5353", f))
			return nil
		}
		out = append(out, ap)
	}
	return out
}

// prefixes reads a comma-separated list of networks in CIDR notation; a
// bare address stands for itself (/32 or /128).
func (r *reader) prefixes(name string) []netip.Prefix {
	v := r.getenv(name)
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			r.fail(name, v, fmt.Sprintf("%q is not an address or a network in CIDR notation, like 10.0.0.0/8", f))
			return nil
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

func (r *reader) logLevel(name string) slog.Level {
	v := r.string(name, "info")
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.fail(name, v, "must be debug, info, warn or error")
		return slog.LevelInfo
	}
	return l
}

// logFormat reads a log format, text or json in any case (default text).
func (r *reader) logFormat(name string) string {
	v := strings.ToLower(r.string(name, "text"))
	if v != "text" && v != "json" {
		r.fail(name, v, "must be text or json")
		return "text"
	}
	return v
}

// NewLogger returns the logger a binary writes to w with the level and
// format ("text" or "json") its settings chose.
func NewLogger(level slog.Level, format string, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
