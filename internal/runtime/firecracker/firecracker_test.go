package firecracker

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/network"
	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/runtimetest"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		if err := fakeFirecracker(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "fake firecracker:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestMachineFor(t *testing.T) {
	base := runtime.Spec{
		ID: "0f8e7a1c-1b2d-4e5f-8a9b-0c1d2e3f4a5b", Dir: "/var/lib/wrenn/sandboxes/0f8e7a1c-1b2d-4e5f-8a9b-0c1d2e3f4a5b",
		Image: "/var/lib/wrenn/images/minimal", Hostname: "capsule-0f8e7a1c", VCPUs: 2, MemoryMB: 512, DiskMB: 1024,
		Network: runtime.Network{
			NetnsPath: "/var/lib/wrenn/netns/wr-0f8e7a1c", Device: "tap0",
			Address: netip.MustParsePrefix("10.88.0.6/30"), Gateway: netip.MustParseAddr("10.88.0.5"),
		},
	}
	noNet := base
	noNet.Network = runtime.Network{}
	noNet.Hostname = ""
	tests := []struct {
		name     string
		spec     runtime.Spec
		serial   bool
		vcpus    int64
		memMiB   int64
		bootArgs string
		mac      string // "" = no network interface
	}{
		{
			name: "capsule with network", spec: base, vcpus: 2, memMiB: 512,
			bootArgs: "reboot=k panic=1 pci=off rw root=/dev/vda rootfstype=ext4 8250.nr_uarts=0 quiet " +
				"ip=10.88.0.6::10.88.0.5:255.255.255.252:capsule-0f8e7a1c:eth0:off init=/usr/bin/envd",
			mac: "06:00:0a:58:00:06",
		},
		{
			name: "serial console", spec: base, serial: true, vcpus: 2, memMiB: 512,
			bootArgs: "reboot=k panic=1 pci=off rw root=/dev/vda rootfstype=ext4 console=ttyS0 " +
				"ip=10.88.0.6::10.88.0.5:255.255.255.252:capsule-0f8e7a1c:eth0:off init=/usr/bin/envd",
			mac: "06:00:0a:58:00:06",
		},
		{
			name: "no network, no hostname", spec: noNet, vcpus: 2, memMiB: 512,
			bootArgs: "reboot=k panic=1 pci=off rw root=/dev/vda rootfstype=ext4 8250.nr_uarts=0 quiet init=/usr/bin/envd",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := machineFor(tt.spec, "/var/lib/wrenn/kernels/vmlinux", tt.serial)
			if err != nil {
				t.Fatal(err)
			}
			if *m.Machine.VcpuCount != tt.vcpus || *m.Machine.MemSizeMib != tt.memMiB || *m.Machine.Smt {
				t.Errorf("machine config = %d vcpus, %d MiB, smt %v; want %d, %d, false", *m.Machine.VcpuCount, *m.Machine.MemSizeMib, *m.Machine.Smt, tt.vcpus, tt.memMiB)
			}
			if got := m.Boot.BootArgs; got != tt.bootArgs {
				t.Errorf("boot args\n got %s\nwant %s", got, tt.bootArgs)
			}
			if *m.Boot.KernelImagePath != "/var/lib/wrenn/kernels/vmlinux" {
				t.Errorf("kernel = %s", *m.Boot.KernelImagePath)
			}
			if len(m.Drives) != 1 || *m.Drives[0].DriveID != "rootfs" || *m.Drives[0].PathOnHost != "rootfs.ext4" ||
				!*m.Drives[0].IsRootDevice || *m.Drives[0].IsReadOnly {
				t.Errorf("drives = %+v, want one writable root drive rootfs.ext4 (relative: a snapshot keeps the name)", m.Drives)
			}
			switch {
			case tt.mac == "" && m.Net != nil:
				t.Errorf("network interface %+v for a capsule without a network", m.Net)
			case tt.mac != "" && (m.Net == nil || *m.Net.IfaceID != "eth0" || *m.Net.HostDevName != "tap0" || m.Net.GuestMac != tt.mac):
				t.Errorf("network interface = %+v, want eth0 on tap0 with MAC %s", m.Net, tt.mac)
			}
			for _, v := range []validator{&m.Machine, &m.Boot, &m.Drives[0]} {
				if err := v.Validate(nil); err != nil {
					t.Errorf("the SDK's models refuse %T: %v", v, err)
				}
			}
		})
	}
}

func TestMachineForRefuses(t *testing.T) {
	good := runtime.Spec{ID: "c1", Dir: "/d", VCPUs: 1, MemoryMB: 128, DiskMB: 256}
	tests := []struct {
		name string
		edit func(*runtime.Spec)
		want string
	}{
		{"no memory", func(s *runtime.Spec) { s.MemoryMB = 0 }, "memory and disk must be positive"},
		{"no disk", func(s *runtime.Spec) { s.DiskMB = 0 }, "memory and disk must be positive"},
		{"no vcpu", func(s *runtime.Spec) { s.VCPUs = 0 }, "vcpus 0"},
		{"too many vcpus", func(s *runtime.Spec) { s.VCPUs = 33 }, "vcpus 33"},
		{"relative dir", func(s *runtime.Spec) { s.Dir = "d" }, "not absolute"},
		{"id with a slash", func(s *runtime.Spec) { s.ID = "../x" }, "invalid capsule id"},
		{"hostname with a space", func(s *runtime.Spec) { s.Hostname = "a b" }, "kernel command line"},
		{"ipv6 address", func(s *runtime.Spec) {
			s.Network = runtime.Network{NetnsPath: "/n", Device: "tap0", Address: netip.MustParsePrefix("fd00::2/126"), Gateway: netip.MustParseAddr("fd00::1")}
		}, "needs an IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := good
			tt.edit(&spec)
			_, err := machineFor(spec, "/k", false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("machineFor = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	spec := runtime.Spec{ID: "c1", Dir: "/w/sandboxes/c1", VCPUs: 2, MemoryMB: 256, DiskMB: 512,
		Network: runtime.Network{NetnsPath: "/w/netns/wr-c1", Device: "tap0"}}
	noNet := spec
	noNet.Network = runtime.Network{}
	direct := Config{Firecracker: "/usr/local/bin/firecracker", Kernel: "/w/kernels/vmlinux", StateDir: "/w/firecracker", ChrootBase: "/w/firecracker/jail"}
	jailed := direct
	jailed.Jailer = "/usr/local/bin/jailer"
	jailed.UIDBase, jailed.UIDCount, jailed.GID = 1500000000, 65536, 1400000000
	tests := []struct {
		name     string
		cfg      Config
		spec     runtime.Spec
		uid      int // the VM's own uid (reserveUID)
		v2       bool
		bin      string
		args     string
		root     string
		sock     string
		sockArg  string
		kernel   string
		jailPath string
	}{
		{
			name: "direct, in the capsule's namespace", cfg: direct, spec: spec, bin: "nsenter",
			args: "--net=/w/netns/wr-c1 -- /usr/local/bin/firecracker --api-sock /w/sandboxes/c1/api.sock --id c1 --level Warning",
			root: "/w/sandboxes/c1", sock: "/w/sandboxes/c1/api.sock", sockArg: "/w/sandboxes/c1/api.sock", kernel: "/w/kernels/vmlinux",
		},
		{
			name: "direct, no network", cfg: direct, spec: noNet, bin: "/usr/local/bin/firecracker",
			args: "--api-sock /w/sandboxes/c1/api.sock --id c1 --level Warning",
			root: "/w/sandboxes/c1", sock: "/w/sandboxes/c1/api.sock", sockArg: "/w/sandboxes/c1/api.sock", kernel: "/w/kernels/vmlinux",
		},
		{
			name: "jailer, cgroup v2", cfg: jailed, spec: spec, uid: 1500000000, v2: true, bin: "/usr/local/bin/jailer",
			args: "--id c1 --exec-file /usr/local/bin/firecracker --uid 1500000000 --gid 1400000000 --chroot-base-dir /w/firecracker/jail --new-pid-ns " +
				"--netns /w/netns/wr-c1 --cgroup-version 2 --cgroup memory.max=335544320 --cgroup cpu.max=200000 100000 " +
				"-- --api-sock /api.sock --id c1 --level Warning",
			root: "/w/firecracker/jail/firecracker/c1/root", sock: "/w/firecracker/jail/firecracker/c1/root/api.sock", sockArg: "/api.sock",
			kernel: "vmlinux", jailPath: "/w/firecracker/jail/firecracker/c1",
		},
		{
			name: "jailer, cgroup v1, no network", cfg: jailed, spec: noNet, uid: 1500065535, bin: "/usr/local/bin/jailer",
			args: "--id c1 --exec-file /usr/local/bin/firecracker --uid 1500065535 --gid 1400000000 --chroot-base-dir /w/firecracker/jail --new-pid-ns " +
				"--cgroup-version 1 --cgroup memory.limit_in_bytes=335544320 --cgroup cpu.cfs_period_us=100000 --cgroup cpu.cfs_quota_us=200000 " +
				"-- --api-sock /api.sock --id c1 --level Warning",
			root: "/w/firecracker/jail/firecracker/c1/root", sock: "/w/firecracker/jail/firecracker/c1/root/api.sock", sockArg: "/api.sock",
			kernel: "vmlinux", jailPath: "/w/firecracker/jail/firecracker/c1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := layoutOf(tt.cfg, tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if l.Root != tt.root || l.Socket != tt.sock || l.SocketArg != tt.sockArg || l.Kernel != tt.kernel || l.Jail != tt.jailPath || l.UID != 0 {
				t.Errorf("layout = %+v", l)
			}
			l.UID = tt.uid
			bin, args := command(tt.cfg, tt.spec, l, tt.v2)
			if bin != tt.bin || strings.Join(args, " ") != tt.args {
				t.Errorf("command\n got %s %s\nwant %s %s", bin, strings.Join(args, " "), tt.bin, tt.args)
			}
		})
	}
	long := direct
	longSpec := spec
	longSpec.Dir = "/" + strings.Repeat("x", 100)
	if _, err := layoutOf(long, longSpec); err == nil || !strings.Contains(err.Error(), "Unix socket") {
		t.Errorf("layout with a 110-byte socket path: %v, want an error", err)
	}
}

// fakeSetup is a driver whose firecracker is the fake (fake_test.go), a
// kernel file, and a template image made by scripts/build-ext4.sh from a
// small tree.
type fakeSetup struct {
	cfg    Config
	images string
}

func newFakeSetup(t *testing.T) fakeSetup {
	t.Helper()
	needTools(t, "mkfs.ext4", "resize2fs", "debugfs", "nsenter")
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fc := filepath.Join(dir, "firecracker")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec %s \"$@\"\n", fakeEnv, self)
	if err := os.WriteFile(fc, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not a kernel: the fake boots nothing"), 0o644); err != nil {
		t.Fatal(err)
	}
	images := filepath.Join(dir, "images")
	makeTemplate(t, images, "tiny")
	return fakeSetup{
		cfg:    Config{Firecracker: fc, Kernel: kernel, StateDir: filepath.Join(dir, "state"), BootTimeout: 20 * time.Second, DiffSnapshots: true},
		images: images,
	}
}

// makeTemplate writes a template directory with a tiny rootfs and its
// ext4 image (scripts/build-ext4.sh), as `make images` does.
func makeTemplate(t *testing.T, images, name string) {
	t.Helper()
	rootfs := filepath.Join(images, name, "rootfs")
	for _, d := range []string{"usr/bin", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "usr/bin/envd"), []byte("#!/bin/sh\necho old envd\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/hostname"), []byte("capsule\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script(t, "build-ext4.sh", name, images)
}

// script runs one of the project's scripts.
func script(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join("..", "..", "..", "scripts", name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the driver starts VM processes in network namespaces and chowns jails")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: `make test` installs it (e2fsprogs, util-linux)", tool)
		}
	}
}

func (s fakeSetup) spec(t *testing.T, id string) runtime.Spec {
	dir := filepath.Join(t.TempDir(), id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return runtime.Spec{ID: id, Dir: dir, Image: filepath.Join(s.images, "tiny"), Hostname: "conformance",
		VCPUs: 1, MemoryMB: 128, DiskMB: 64}
}

// TestDriverWithFakeFirecracker runs the conformance suite against the
// driver with the fake Firecracker process: everything of the driver but
// the guest — disks, processes, the API calls through the SDK, records,
// saved state — for real.
func TestDriverWithFakeFirecracker(t *testing.T) {
	s := newFakeSetup(t)
	d, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, d, s.spec)
	leftovers(t, s.cfg)
}

// TestReadoptAfterRestart starts a VM with one driver and hands it to a new
// driver over the same state directory, as an agent started again does:
// the new one lists it, pauses and thaws it, and destroys it, leaving no
// process and no file.
func TestReadoptAfterRestart(t *testing.T) {
	s := newFakeSetup(t)
	ctx := context.Background()
	first, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec := s.spec(t, uuid.NewString())
	if _, err := first.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	rec, err := first.readRecord(spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kill(rec, time.Second) })

	second, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := second.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(list, func(i runtime.Info) bool { return i.ID == spec.ID && i.State == runtime.StateRunning }) {
		t.Fatalf("List of a new driver = %+v, want %s running", list, spec.ID)
	}
	if err := second.Checkpoint(ctx, spec.ID, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if info, _ := second.Info(ctx, spec.ID); info.State != runtime.StateFrozen {
		t.Fatalf("after Checkpoint Info = %+v, want frozen", info)
	}
	if err := second.Thaw(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	// A pid the kernel reused for another process is not the VM.
	stale := rec
	stale.PIDStart++
	if alive(stale) {
		t.Error("a record with another start time counts as alive")
	}
	if err := second.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if alive(rec) {
		t.Fatalf("firecracker (pid %d) still runs after Destroy", rec.PID)
	}
	for _, f := range []string{diskFile, socketFile} {
		if _, err := os.Stat(filepath.Join(spec.Dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left after Destroy: %v", f, err)
		}
	}
	leftovers(t, s.cfg)

	// A VM whose process died on its own is stopped, and Destroy removes it.
	spec = s.spec(t, uuid.NewString())
	if _, err := second.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	rec, _ = second.readRecord(spec.ID)
	if err := kill(rec, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if info, _ := second.Info(ctx, spec.ID); info.State != runtime.StateStopped {
		t.Fatalf("Info of a VM whose process died = %+v, want stopped", info)
	}
	if err := second.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	leftovers(t, s.cfg)
}

// TestRestoreAtAnotherAddress: a saved guest keeps its address, so a
// restore into a network with another one is refused, not half-done.
func TestRestoreAtAnotherAddress(t *testing.T) {
	s := newFakeSetup(t)
	d, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	image := t.TempDir()
	if err := os.WriteFile(filepath.Join(image, addressFile), []byte("10.88.0.2/30\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{memFile, vmstateFile, diskFile} {
		if err := os.WriteFile(filepath.Join(image, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	spec := s.spec(t, uuid.NewString())
	spec.Network = runtime.Network{NetnsPath: "/nonexistent", Device: "tap0",
		Address: netip.MustParsePrefix("10.88.0.6/30"), Gateway: netip.MustParseAddr("10.88.0.5")}
	_, err = d.Restore(context.Background(), spec, image)
	if err == nil || !strings.Contains(err.Error(), "keeps its address") {
		t.Fatalf("Restore at another address = %v, want a refusal", err)
	}
	if _, err := d.Info(context.Background(), spec.ID); err == nil {
		t.Fatal("a refused Restore left a record")
	}
}

// sandboxNetwork is the runtime.Network the agent gives the capsule of
// slot (agent's networkOf).
func sandboxNetwork(nm *network.Manager, slot network.Slot) runtime.Network {
	addr, gw := nm.Sandbox(slot)
	return runtime.Network{NetnsPath: slot.NetnsPath, Device: nm.Device(), Address: addr, Gateway: gw}
}

// leftovers fails t if the driver's state directory still holds a record.
func leftovers(t *testing.T, cfg Config) {
	t.Helper()
	entries, _ := os.ReadDir(cfg.StateDir)
	for _, e := range entries {
		if e.Name() != "jail" {
			t.Errorf("left in the state directory: %s", e.Name())
		}
	}
}

// TestPauseResumeInNamespace runs a VM in a capsule namespace made by the
// network package (a tap routed to the veth): the fake Firecracker, put
// there by nsenter, must find the tap by name, at boot and when loading the
// saved state. A pause (Checkpoint, Destroy) and resume (Restore in the same
// namespace) then work as the agent does them, and so does a launch of the
// saved state as another capsule, in another namespace at another address
// (the guest's own address is the same in both: network.GuestAddr).
func TestPauseResumeInNamespace(t *testing.T) {
	s := newFakeSetup(t)
	ctx := context.Background()
	prefix, cidr := stacktest.NetworkPool(t)
	dir := t.TempDir()
	nm, err := network.New(ctx, network.Config{CIDR: cidr, StateDir: filepath.Join(dir, "network"), NetnsDir: filepath.Join(dir, "netns"), Prefix: prefix, Peer: network.PeerTap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nm.Uninstall(context.Background()); err != nil {
			t.Errorf("removing the test network: %v", err)
		}
	})
	d, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec := s.spec(t, uuid.NewString())
	slot, err := nm.Setup(ctx, spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	spec.Network = sandboxNetwork(nm, slot)
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	image := t.TempDir()
	if err := d.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Restore(ctx, spec, image); err != nil {
		t.Fatalf("Restore at the same address: %v", err)
	}
	if info, err := d.Info(ctx, spec.ID); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("after Restore Info = %+v, %v; want running", info, err)
	}
	clone := s.spec(t, uuid.NewString())
	slot2, err := nm.Setup(ctx, clone.ID)
	if err != nil {
		t.Fatal(err)
	}
	clone.Network = sandboxNetwork(nm, slot2)
	if slot2.Address == slot.Address || clone.Network.Address != spec.Network.Address {
		t.Fatalf("capsule addresses %v and %v, guest addresses %v and %v: want two capsule addresses, one guest address",
			slot.Address, slot2.Address, spec.Network.Address, clone.Network.Address)
	}
	if _, err := d.Restore(ctx, clone, image); err != nil {
		t.Fatalf("Restore as another capsule at another address: %v", err)
	}
	if info, err := d.Info(ctx, clone.ID); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("after Restore of the clone Info = %+v, %v; want running", info, err)
	}
	if err := d.Destroy(ctx, clone.ID); err != nil {
		t.Fatal(err)
	}
	if err := nm.Teardown(ctx, clone.ID); err != nil {
		t.Fatal(err)
	}
	// Without the tap (another namespace's peer, or none), Firecracker
	// cannot attach the guest's network: Create fails and leaves nothing.
	other := s.spec(t, uuid.NewString())
	other.Network = spec.Network
	other.Network.Device = "tap9"
	if _, err := d.Create(ctx, other); err == nil || !strings.Contains(err.Error(), "tap9") {
		t.Fatalf("Create on a missing tap = %v, want an error naming it", err)
	}
	if _, err := d.Info(ctx, other.ID); err == nil {
		t.Fatal("a failed Create left a record")
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := nm.Teardown(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	leftovers(t, s.cfg)
}
