package agentaddr_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/agentaddr"
)

func policy(t *testing.T, list string) *agentaddr.Policy {
	t.Helper()
	p, err := agentaddr.ParseList(list)
	if err != nil {
		t.Fatal(err)
	}
	return agentaddr.New(p)
}

func TestAllowed(t *testing.T) {
	for _, tc := range []struct {
		list string
		ip   string
		ok   bool
	}{
		// Default: private and public ranges yes, the special ones no.
		{"", "10.0.1.5", true},
		{"", "192.168.1.10", true},
		{"", "172.16.0.1", true},
		{"", "100.64.0.1", true},
		{"", "203.0.113.7", true},
		{"", "fd12::1", true},
		{"", "2001:db8::1", true},
		{"", "127.0.0.1", false},
		{"", "127.1.2.3", false},
		{"", "::1", false},
		{"", "::ffff:127.0.0.1", false},
		{"", "0.0.0.0", false},
		{"", "::", false},
		{"", "169.254.169.254", false},
		{"", "::ffff:169.254.169.254", false},
		{"", "64:ff9b::a9fe:a9fe", false}, // 169.254.169.254 through NAT64
		{"", "64:ff9b::a00:105", true},    // 10.0.1.5 through NAT64
		{"", "fe80::1", false},
		{"", "fe80::1%eth0", false},
		{"", "224.0.0.1", false},
		{"", "255.255.255.255", false},
		{"", "ff02::1", false},
		{"", "100.100.100.200", false},
		{"", "168.63.129.16", false},
		{"", "fd00:ec2::254", false},
		// A list is the only ranges allowed.
		{"10.0.0.0/8", "10.9.9.9", true},
		{"10.0.0.0/8", "192.168.1.1", false},
		{"10.0.0.0/8, 192.168.0.0/16", "192.168.1.1", true},
		// Special ranges only when named no wider than themselves.
		{"127.0.0.0/8", "127.0.0.1", true},
		{"127.0.0.1", "127.0.0.1", true},
		{"127.0.0.1", "127.0.0.2", false},
		{"0.0.0.0/0", "127.0.0.1", false},
		{"0.0.0.0/0", "169.254.169.254", false},
		{"0.0.0.0/0", "8.8.8.8", true},
		{"169.254.0.0/16", "169.254.169.254", true},
		{"169.254.0.0/16", "168.63.129.16", false},
		{"::/0", "::1", false},
		{"::1/128", "::1", true},
	} {
		err := policy(t, tc.list).Allowed(netip.MustParseAddr(tc.ip))
		if (err == nil) != tc.ok {
			t.Errorf("list %q, %s: got %v, want allowed %v", tc.list, tc.ip, err, tc.ok)
		}
	}
}

func TestParseList(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "nope", "10.0.0.0/8,x"} {
		if _, err := agentaddr.ParseList(bad); err == nil {
			t.Errorf("ParseList(%q) succeeded", bad)
		}
	}
	got, err := agentaddr.ParseList(" 10.0.0.0/8 ,, ::1 ")
	if err != nil || len(got) != 2 || got[1].Bits() != 128 {
		t.Errorf("ParseList: got %v, %v", got, err)
	}
}

func TestCheckResolvesNames(t *testing.T) {
	ctx := context.Background()
	def := policy(t, "")
	if err := def.Check(ctx, "localhost:50051"); err == nil || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("localhost: got %v, want refused without naming the address it resolves to", err)
	}
	if err := def.Check(ctx, "127.0.0.1:50051"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("127.0.0.1: got %v, want refused as loopback", err)
	}
	if err := def.Check(ctx, "no-such-host.invalid:50051"); err == nil {
		t.Error("an unresolvable name was accepted")
	}
	if err := def.Check(ctx, "10.0.1.5:50051"); err != nil {
		t.Errorf("10.0.1.5: %v", err)
	}
	if err := policy(t, "127.0.0.0/8,::1").Check(ctx, "localhost:50051"); err != nil {
		t.Errorf("localhost with loopback allowed: %v", err)
	}
}

// TestDialerRefuses dials a real listener on loopback by name: the
// dialer's check sees the resolved address, whatever the name.
func TestDialerRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx := context.Background()
	for _, addr := range []string{ln.Addr().String(), net.JoinHostPort("localhost", port)} {
		if c, err := policy(t, "").Dialer().DialContext(ctx, "tcp", addr); err == nil {
			_ = c.Close()
			t.Errorf("dialing %s: connected, want refused", addr)
		} else if !strings.Contains(err.Error(), "refused: ") {
			t.Errorf("dialing %s: %v, want the policy's refusal", addr, err)
		}
		c, err := policy(t, "127.0.0.0/8,::1").Dialer().DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Errorf("dialing %s with loopback allowed: %v", addr, err)
		} else {
			_ = c.Close()
		}
	}
}
