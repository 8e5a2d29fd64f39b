package egress

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	got, err := Policy{
		Internet: true,
		Allow:    []string{"Example.COM.", "*.example.com", " 203.0.113.7 ", "198.51.100.0/24", "example.com"},
		Deny:     nil,
	}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"example.com", "*.example.com", "203.0.113.7/32", "198.51.100.0/24"}
	if !slices.Equal(got.Allow, want) || got.Deny == nil || len(got.Deny) != 0 {
		t.Errorf("Normalize = %+v, want allow %v and an empty deny", got, want)
	}
}

func TestNormalizeRejects(t *testing.T) {
	many := make([]string, MaxEntries+1)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example.com", i)
	}
	for _, tc := range []struct {
		name  string
		entry []string
		want  string
	}{
		{"host bits", []string{"10.0.0.1/8"}, "host bits set (did you mean 10.0.0.0/8?)"},
		{"bad cidr", []string{"300.1.1.1/24"}, "not a CIDR"},
		{"bad prefix length", []string{"1.2.3.4/33"}, "not a CIDR"},
		{"ipv6", []string{"2001:db8::/32"}, "IPv6"},
		{"bad address", []string{"1.2.3"}, "not an IPv4 address"},
		{"empty", []string{""}, "empty entry"},
		{"one label", []string{"localhost"}, "two labels"},
		{"inner wildcard", []string{"a.*.example.com"}, "wildcard"},
		{"bare wildcard", []string{"*"}, "two labels"},
		{"bad char", []string{"exa mple.com"}, "not a letter"},
		{"dash", []string{"-a.example.com"}, "start or end"},
		{"long label", []string{strings.Repeat("a", 64) + ".com"}, "1-63"},
		{"long name", []string{strings.Repeat("abcdefghi.", 26) + "com"}, "longer than 253"},
		{"too many", many, "at most 64 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Policy{Allow: tc.entry}.Normalize()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "network.allow: ") {
				t.Errorf("Normalize(%q) = %v, want an error about %q", tc.entry, err, tc.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	r, err := Compile(Policy{Internet: true, Allow: []string{"example.com", "*.pkg.dev", "1.2.3.0/24"}, Deny: []string{"*.evil.pkg.dev", "bad.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Verdict{
		"example.com":        Allowed,
		"EXAMPLE.com.":       Allowed,
		"www.example.com":    Denied, // not listed, default-deny
		"bad.example.com":    Denied,
		"pkg.dev":            Denied, // the wildcard is below, not at
		"go.pkg.dev":         Allowed,
		"a.b.pkg.dev":        Allowed,
		"x.evil.pkg.dev":     Denied, // deny beats allow
		"evil.pkg.dev":       Allowed,
		"example.com.evil.x": Denied,
	} {
		if got := r.Name(name); got != want {
			t.Errorf("Name(%q) = %v, want %v", name, got, want)
		}
	}
	if len(r.AllowNets()) != 1 || !r.DefaultDeny() {
		t.Errorf("nets %v default-deny %v", r.AllowNets(), r.DefaultDeny())
	}

	open, _ := Compile(Policy{Internet: true, Deny: []string{"bad.com"}})
	if open.DefaultDeny() || open.Name("any.org") != Unlisted || open.Name("bad.com") != Denied || !open.DeniesName("BAD.com.") {
		t.Error("a deny-only policy with the internet on is not default-allow")
	}
	off, _ := Compile(Policy{})
	if !off.DefaultDeny() || off.Name("any.org") != Denied {
		t.Error("internet off is not default-deny")
	}
	if !Open().IsOpen() || (Policy{Internet: true, Deny: []string{"a.com"}}).IsOpen() {
		t.Error("IsOpen")
	}
}
