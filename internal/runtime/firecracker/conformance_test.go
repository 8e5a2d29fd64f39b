package firecracker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/runtimetest"
)

// TestConformance runs the shared conformance suite against real
// Firecracker microVMs: the binary at WRENN_TEST_FIRECRACKER (default
// /usr/local/bin/firecracker), the kernel and image `make test` builds. It
// needs /dev/kvm with hardware virtualization, and skips with one line
// saying which of the two is missing where they are not.
func TestConformance(t *testing.T) {
	bin := os.Getenv("WRENN_TEST_FIRECRACKER")
	if bin == "" {
		bin = "/usr/local/bin/firecracker"
	}
	if missing := Unusable(bin); missing != "" {
		t.Skipf("FIRECRACKER CONFORMANCE NOT RUN: %s (the driver is tested here with a fake Firecracker process and its guest under QEMU)", missing)
	}
	kernel, image := guestArtifacts(t)
	d, err := New(Config{Firecracker: bin, Kernel: kernel, StateDir: filepath.Join(t.TempDir(), "state"), BootTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, d, func(t *testing.T, id string) runtime.Spec {
		dir := filepath.Join(t.TempDir(), id)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return runtime.Spec{ID: id, Dir: dir, Image: strings.TrimSuffix(image, ".ext4"), Hostname: "conformance",
			VCPUs: 1, MemoryMB: 256, DiskMB: 256}
	})
}

func TestUnusable(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kvm := write("kvm", "", 0o600)
	vmx := write("cpuinfo-vmx", "processor\t: 0\nflags\t\t: fpu vme vmx sse\n", 0o644)
	plain := write("cpuinfo", "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n", 0o644)
	bin := write("firecracker", "#!/bin/sh\n", 0o755)
	tests := []struct {
		name, kvm, cpuinfo, bin, want string
	}{
		{"usable", kvm, vmx, bin, ""},
		{"no kvm", filepath.Join(dir, "none"), vmx, bin, "no " + filepath.Join(dir, "none")},
		{"paravirtual kvm", kvm, plain, bin, "no hardware virtualization"},
		{"no binary", kvm, vmx, filepath.Join(dir, "fc"), "no firecracker binary at " + filepath.Join(dir, "fc")},
		{"neither", kvm, plain, filepath.Join(dir, "fc"), "no hardware virtualization (no vmx or svm flag in " + plain + "); no firecracker binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := unusable(tt.kvm, tt.cpuinfo, tt.bin)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("unusable = %q, want %q", got, tt.want)
			}
		})
	}
}
