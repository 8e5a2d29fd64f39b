package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRunRefusesBadStarts(t *testing.T) {
	dir := t.TempDir()
	runsc, _ := stacktest.Env(t)
	prefix, cidr := stacktest.NetworkPool(t)
	base := map[string]string{
		"WRENN_CP_URL": "http://127.0.0.1:1", "WRENN_DIR": dir, "WRENN_HOST_LISTEN_ADDR": "127.0.0.1:0",
		"WRENN_RUNSC": runsc, "WRENN_NETWORK_PREFIX": prefix, "WRENN_CAPSULE_CIDR": cidr.String(),
	}
	// A registration that fails does so after the capsule network is set
	// up (so that a host that cannot run capsules keeps its token); the
	// network is what remove-capsules takes away.
	t.Cleanup(func() {
		if err := run(context.Background(), []string{"wrenn-agent", "remove-capsules"}, getenv(base), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
			t.Errorf("remove-capsules: %v", err)
		}
	})
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"not registered", nil, base, "register it once with `wrenn-agent --register"},
		{"register without address", []string{"--register", "wrnreg_x"}, base, "--register needs --address"},
		{"address without register, not registered", []string{"--address", "10.0.0.5:50051"}, base, "register it once with `wrenn-agent --register"},
		{"address without register, port 0", []string{"--address", "10.0.0.5:0"}, base, "port must be"},
		{"address without host", []string{"--register", "wrnreg_x", "--address", ":50051"}, base, "host is missing"},
		{"address with port 0", []string{"--register", "wrnreg_x", "--address", "10.0.0.5:0"}, base, "port must be"},
		{"stray argument", []string{"serve"}, base, `unexpected argument "serve"`},
		{"no control plane URL", nil, map[string]string{"WRENN_DIR": dir}, "WRENN_CP_URL is required"},
		{"control plane down at registration", []string{"--register", "wrnreg_x", "--address", "127.0.0.1:5"}, base, "registering host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"wrenn-agent"}, tt.args...), getenv(tt.env), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if strings.Contains(stderr.String(), "wrnreg_x") || (err != nil && strings.Contains(err.Error(), "wrnreg_x")) {
				t.Errorf("the registration token appears in the output")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "host-token")); err == nil {
		t.Error("a failed start wrote a credential file")
	}
}

func TestRunRefusesCredentialOfAnotherControlPlane(t *testing.T) {
	dir := t.TempDir()
	b, _ := json.Marshal(map[string]string{
		"host_id": "h", "cp_url": "https://old.example.com", "credential": "wrnh_x",
		"refresh_token": "wrnr_x", "cp_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	})
	if err := os.WriteFile(filepath.Join(dir, "host-token"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"WRENN_CP_URL": "https://new.example.com", "WRENN_DIR": dir, "WRENN_HOST_LISTEN_ADDR": "127.0.0.1:0"}
	err := run(context.Background(), []string{"wrenn-agent"}, getenv(env), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "https://old.example.com") {
		t.Errorf("run = %v, want an error naming the control plane the host was registered with", err)
	}
}

// TestRunStopsCleanly starts a registered agent whose control plane is down
// and cancels it: run must return nil promptly, having served on its port.
func TestRunStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	b, _ := json.Marshal(map[string]string{
		"host_id": "h", "cp_url": "http://127.0.0.1:1", "credential": "wrnh_x",
		"refresh_token": "wrnr_x", "cp_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
	})
	if err := os.WriteFile(filepath.Join(dir, "host-token"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	runsc, _ := stacktest.Env(t)
	prefix, cidr := stacktest.NetworkPool(t)
	env := map[string]string{
		"WRENN_CP_URL": "http://127.0.0.1:1", "WRENN_DIR": dir, "WRENN_HOST_LISTEN_ADDR": addr,
		"WRENN_RUNSC": runsc, "WRENN_NETWORK_PREFIX": prefix, "WRENN_CAPSULE_CIDR": cidr.String(),
	}
	// The agent leaves its network in place when it stops, as it must for
	// its capsules; remove-capsules takes it away.
	t.Cleanup(func() {
		if err := run(context.Background(), []string{"wrenn-agent", "remove-capsules"}, getenv(env), &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
			t.Errorf("remove-capsules: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, []string{"wrenn-agent"}, getenv(env), &bytes.Buffer{}, &stderr) }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never listened on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestRunRuntime: `wrenn-agent runtime` prints the runtime the agent would
// run, with no other setting needed, and refuses an unknown one.
func TestRunRuntime(t *testing.T) {
	for rt, want := range map[string]string{"gvisor": "gvisor\n", "firecracker": "firecracker\n"} {
		var stdout bytes.Buffer
		if err := run(context.Background(), []string{"wrenn-agent", "runtime"}, getenv(map[string]string{"WRENN_RUNTIME": rt}), &stdout, &bytes.Buffer{}); err != nil {
			t.Fatalf("WRENN_RUNTIME=%s: %v", rt, err)
		}
		if stdout.String() != want {
			t.Errorf("WRENN_RUNTIME=%s printed %q, want %q", rt, stdout.String(), want)
		}
	}
	err := run(context.Background(), []string{"wrenn-agent", "runtime"}, getenv(map[string]string{"WRENN_RUNTIME": "kvm"}), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "WRENN_RUNTIME") {
		t.Errorf("WRENN_RUNTIME=kvm: %v, want an error naming it", err)
	}
}
