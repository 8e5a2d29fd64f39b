// Package egress is a capsule's egress policy: whether it may reach the
// internet, and which destinations — CIDRs and domain names — it may or may
// not reach. It is the one statement of what a policy may hold and what it
// means, shared by the control plane (which validates and stores it), the
// host protocol and the agent (whose DNS forwarder and firewall enforce it,
// see internal/network and docs/network.md).
//
// Meaning: a deny entry always wins; an allow list, or internet turned off,
// makes the policy default-deny, so that only allowed destinations are
// reachable. A domain entry is an exact name ("example.com") or every name
// below one ("*.example.com", which does not match example.com itself).
package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// MaxEntries bounds each of a policy's allow and deny lists.
const MaxEntries = 64

// maxName is the longest domain name DNS carries (without the final dot).
const maxName = 253

// Policy is a capsule's egress policy as users write it. The zero value
// (internet off, nothing allowed) cuts the capsule off; Open is what a
// capsule gets when nobody says otherwise.
type Policy struct {
	// Internet off makes the policy default-deny: only allowed
	// destinations are reachable.
	Internet bool `json:"internet"`
	// Allow and Deny hold IPv4 CIDRs (a bare address is a /32) and domain
	// names ("example.com", "*.example.com").
	Allow []string `json:"allow"`
	Deny  []string `json:"deny"`
}

// Open is the default policy: the internet, nothing denied.
func Open() Policy { return Policy{Internet: true, Allow: []string{}, Deny: []string{}} }

// IsOpen reports whether p lets a capsule reach the whole internet and
// denies nothing: what every capsule had before policies existed.
func (p Policy) IsOpen() bool { return p.Internet && len(p.Allow) == 0 && len(p.Deny) == 0 }

// DefaultDeny reports whether only allowed destinations are reachable.
func (p Policy) DefaultDeny() bool { return !p.Internet || len(p.Allow) > 0 }

// Normalize returns p with its entries validated, put in canonical form
// (lower-case names, masked "a.b.c.d/n" CIDRs), with duplicates removed
// and nil lists made empty. Its error says what is wrong with which entry,
// in words fit for an API error.
func (p Policy) Normalize() (Policy, error) {
	out := Policy{Internet: p.Internet}
	var err error
	if out.Allow, err = normalizeList("allow", p.Allow); err != nil {
		return Policy{}, err
	}
	if out.Deny, err = normalizeList("deny", p.Deny); err != nil {
		return Policy{}, err
	}
	return out, nil
}

func normalizeList(field string, in []string) ([]string, error) {
	if len(in) > MaxEntries {
		return nil, fmt.Errorf("network.%s: at most %d entries, not %d", field, MaxEntries, len(in))
	}
	out := make([]string, 0, len(in))
	seen := map[string]bool{}
	for _, e := range in {
		n, err := normalizeEntry(e)
		if err != nil {
			return nil, fmt.Errorf("network.%s: %q: %w", field, e, err)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

// normalizeEntry is the canonical form of one entry.
func normalizeEntry(e string) (string, error) {
	e = strings.TrimSpace(e)
	if e == "" {
		return "", errors.New("empty entry")
	}
	if looksLikeAddress(e) {
		p, err := parseCIDR(e)
		if err != nil {
			return "", err
		}
		return p.String(), nil
	}
	name := strings.ToLower(strings.TrimSuffix(e, "."))
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}

// looksLikeAddress reports whether e is meant as an address or CIDR rather
// than a name: it has a '/' or a ':', or it is digits and dots only.
func looksLikeAddress(e string) bool {
	if strings.ContainsAny(e, "/:") {
		return true
	}
	return strings.Trim(e, "0123456789.") == ""
}

func parseCIDR(e string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(e, "/") {
		var err error
		if p, err = netip.ParsePrefix(e); err != nil {
			return netip.Prefix{}, errors.New("not a CIDR (like 203.0.113.0/24) or an address")
		}
	} else {
		a, err := netip.ParseAddr(e)
		if err != nil {
			return netip.Prefix{}, errors.New("not an IPv4 address or CIDR")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, errors.New("IPv6 is not supported: capsules have IPv4 only")
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("host bits set (did you mean %s?)", p.Masked())
	}
	return p, nil
}

// checkName reports what is wrong with a lower-case domain name or
// wildcard pattern.
func checkName(name string) error {
	rest, wild := strings.CutPrefix(name, "*.")
	if len(name) > maxName {
		return fmt.Errorf("longer than %d characters", maxName)
	}
	labels := strings.Split(rest, ".")
	if len(labels) < 2 && !wild {
		return errors.New("not a domain name with at least two labels (like example.com), a wildcard (*.example.com) or a CIDR")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return errors.New("not a domain name: every label is 1-63 characters")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("not a domain name: a label may not start or end with '-'")
		}
		for _, r := range l {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
				if r == '*' {
					return errors.New("a wildcard is only allowed as the whole first label (*.example.com)")
				}
				return fmt.Errorf("not a domain name: %q is not a letter, digit, '-' or '_'", r)
			}
		}
	}
	return nil
}

// Rules is a normalized policy ready to be enforced. It is immutable and
// safe for concurrent use.
type Rules struct {
	defaultDeny bool
	allowNets   []netip.Prefix
	denyNets    []netip.Prefix
	allowNames  []string
	denyNames   []string
}

// Compile turns p into Rules. p must be normalized (Normalize); an entry
// that is not is an error.
func Compile(p Policy) (Rules, error) {
	r := Rules{defaultDeny: p.DefaultDeny()}
	add := func(list []string, nets *[]netip.Prefix, names *[]string) error {
		for _, e := range list {
			n, err := normalizeEntry(e)
			if err != nil {
				return fmt.Errorf("egress entry %q: %w", e, err)
			}
			if pr, err := netip.ParsePrefix(n); err == nil {
				*nets = append(*nets, pr)
			} else {
				*names = append(*names, n)
			}
		}
		return nil
	}
	if err := add(p.Allow, &r.allowNets, &r.allowNames); err != nil {
		return Rules{}, err
	}
	if err := add(p.Deny, &r.denyNets, &r.denyNames); err != nil {
		return Rules{}, err
	}
	return r, nil
}

// DefaultDeny reports whether only allowed destinations are reachable.
func (r Rules) DefaultDeny() bool { return r.defaultDeny }

// AllowNets and DenyNets are the policy's CIDRs.
func (r Rules) AllowNets() []netip.Prefix { return r.allowNets }

// DenyNets are the CIDRs the capsule may never reach.
func (r Rules) DenyNets() []netip.Prefix { return r.denyNets }

// Verdict is what a policy says of a domain name.
type Verdict int

const (
	// Denied: the name matches a deny entry, or the policy is
	// default-deny and it matches no allow entry.
	Denied Verdict = iota
	// Allowed: the name matches an allow entry (and no deny entry).
	Allowed
	// Unlisted: the name matches nothing and the policy lets the capsule
	// reach the internet.
	Unlisted
)

// Name says what r makes of a domain name (any case, with or without the
// final dot).
func (r Rules) Name(name string) Verdict {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	switch {
	case matchAny(r.denyNames, name):
		return Denied
	case matchAny(r.allowNames, name):
		return Allowed
	case r.defaultDeny:
		return Denied
	}
	return Unlisted
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if suffix, wild := strings.CutPrefix(p, "*"); wild {
			// suffix is ".example.com": one or more labels before it.
			if len(name) > len(suffix) && strings.HasSuffix(name, suffix) {
				return true
			}
		} else if p == name {
			return true
		}
	}
	return false
}

// DeniesName reports whether name matches a deny entry: what a name met
// on the way to an answer (a CNAME target) is checked against, since
// only the name asked for needs to be allowed.
func (r Rules) DeniesName(name string) bool {
	return matchAny(r.denyNames, strings.ToLower(strings.TrimSuffix(name, ".")))
}
