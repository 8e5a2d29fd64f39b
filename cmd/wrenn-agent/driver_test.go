package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// TestOpenDriverFirecracker: WRENN_RUNTIME=firecracker (or auto on a KVM
// host) builds the Firecracker driver, which attaches capsules to a tap,
// and names what is missing when it cannot.
func TestOpenDriverFirecracker(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Agent{Dir: dir, Runtime: config.RuntimeFirecracker, FirecrackerBin: filepath.Join(t.TempDir(), "firecracker")}
	if _, err := openDriver(cfg, nil); err == nil || !strings.Contains(err.Error(), "firecracker binary") {
		t.Fatalf("openDriver without a firecracker binary = %v, want an error naming it", err)
	}
	if err := os.WriteFile(cfg.FirecrackerBin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := openDriver(cfg, nil); err == nil || !strings.Contains(err.Error(), "make kernel") {
		t.Fatalf("openDriver without a guest kernel = %v, want an error saying to build it", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "kernels"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernels", "vmlinux"), []byte("kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := openDriver(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "firecracker" || runtime.PeerOf(d) != runtime.PeerTap {
		t.Errorf("driver %s with peer %s, want firecracker on a tap", d.Name(), runtime.PeerOf(d))
	}
	if g := runtime.TapGroupOf(d); g != 0 {
		t.Errorf("without a jailer the tap group is %d, want 0 (root only: Firecracker runs as root)", g)
	}
	// With the jailer, the VMs' group is the one their taps are made for.
	cfg.FirecrackerJailer = filepath.Join(t.TempDir(), "jailer")
	if err := os.WriteFile(cfg.FirecrackerJailer, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := openDriver(cfg, nil); err == nil || !strings.Contains(err.Error(), "must be above 0") {
		t.Fatalf("openDriver with a jailer and uid base 0 = %v, want a refusal (VMs would run as root)", err)
	}
	cfg.FirecrackerUIDBase, cfg.FirecrackerGID = config.DefaultFirecrackerID, config.DefaultFirecrackerID+1
	if d, err = openDriver(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if g := runtime.TapGroupOf(d); g != config.DefaultFirecrackerID+1 {
		t.Errorf("with the jailer the tap group is %d, want WRENN_FIRECRACKER_GID %d", g, config.DefaultFirecrackerID+1)
	}
}
