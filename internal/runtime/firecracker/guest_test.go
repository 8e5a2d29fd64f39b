package firecracker

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/network"
	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// guestArtifacts returns the guest kernel and the minimal template's ext4
// image that `make test` builds (WRENN_TEST_KERNEL, WRENN_TEST_IMAGES).
func guestArtifacts(t *testing.T) (kernel, image string) {
	t.Helper()
	kernel, images := os.Getenv("WRENN_TEST_KERNEL"), os.Getenv("WRENN_TEST_IMAGES")
	if kernel == "" || images == "" {
		t.Fatal("WRENN_TEST_KERNEL and WRENN_TEST_IMAGES are not set: run the tests with `make test`, which builds the guest kernel and the minimal template's ext4 image")
	}
	image = filepath.Join(images, "minimal.ext4")
	for _, f := range []string{kernel, image} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v: run the tests with `make test`, which builds it", err)
		}
	}
	return kernel, image
}

// TestGuestBootsUnderQEMU boots the guest a Firecracker capsule gets — the
// project's vmlinux, a capsule disk made from the minimal template's ext4
// image as the driver makes it, the driver's own boot arguments — with
// QEMU's microvm machine under TCG emulation (no KVM needed), its
// virtio-mmio net on the tap of a capsule namespace set up by the network
// package. envd must come up as init at the capsule's address: /health,
// /init, then one command through envd's client. This proves the kernel,
// the image, init and the network; only Firecracker itself is not in it.
func TestGuestBootsUnderQEMU(t *testing.T) {
	kernel, image := guestArtifacts(t)
	needTools(t, "qemu-system-x86_64", "nsenter", "resize2fs")
	ctx := context.Background()

	prefix, cidr := stacktest.NetworkPool(t)
	dir := t.TempDir()
	ncfg := network.Config{CIDR: cidr, StateDir: filepath.Join(dir, "network"), NetnsDir: filepath.Join(dir, "netns"), Prefix: prefix, Peer: network.PeerTap}
	nm, err := network.New(ctx, ncfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nm.Uninstall(context.Background()); err != nil {
			t.Errorf("removing the test network: %v", err)
		}
	})
	id := uuid.NewString()
	slot, err := nm.Setup(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{ID: id, Dir: dir, Hostname: "capsule-" + id[:8], VCPUs: 1, MemoryMB: 256, DiskMB: 512,
		Network: runtime.Network{NetnsPath: slot.NetnsPath, Device: nm.Device(), Address: slot.Address, Gateway: slot.HostAddr}}
	m, err := machineFor(spec, kernel, true)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, diskFile)
	if err := copyDisk(ctx, image, disk); err != nil {
		t.Fatal(err)
	}
	if err := growDisk(ctx, disk, spec.DiskMB); err != nil {
		t.Fatal(err)
	}

	console := filepath.Join(dir, "console.log")
	// QEMU's microvm with ACPI off describes its virtio-mmio devices on the
	// kernel command line, as Firecracker does.
	qemu := exec.Command("nsenter", "--net="+slot.NetnsPath, "--", "qemu-system-x86_64",
		"-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max",
		"-m", fmt.Sprint(*m.Machine.MemSizeMib), "-smp", fmt.Sprint(*m.Machine.VcpuCount),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:"+console,
		"-kernel", *m.Boot.KernelImagePath, "-append", m.Boot.BootArgs,
		"-drive", "id=root,file="+disk+",format=raw,if=none", "-device", "virtio-blk-device,drive=root",
		"-netdev", "tap,id=net0,ifname="+*m.Net.HostDevName+",script=no,downscript=no",
		"-device", "virtio-net-device,netdev=net0,mac="+m.Net.GuestMac)
	var qemuOut bytes.Buffer
	qemu.Stdout, qemu.Stderr = &qemuOut, &qemuOut
	qemu.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	t.Cleanup(func() {
		_ = qemu.Process.Kill()
		t.Logf("qemu ended: %v", <-exited)
		if err := nm.Teardown(context.Background(), id); err != nil {
			t.Errorf("tearing the capsule network down: %v", err)
		}
	})
	failf := func(format string, args ...any) {
		t.Helper()
		b, _ := os.ReadFile(console)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Fatalf(format+"\nqemu: %s\nguest console (end):\n%s", append(args, qemuOut.String(), b)...)
	}

	start := time.Now()
	addr := netip.AddrPortFrom(slot.Address.Addr(), runtime.EnvdPort)
	client := envdclient.New("http://"+addr.String(), "")
	defer client.Close()
	for {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := client.Health(hctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case err := <-exited:
			failf("qemu exited before envd answered: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
		if time.Since(start) > 4*time.Minute {
			failf("envd did not answer /health at %s within %v: %v", addr, time.Since(start), err)
		}
	}
	t.Logf("envd answered /health %v after QEMU started (TCG emulation)", time.Since(start).Round(time.Millisecond))

	token := uuid.NewString()
	if err := client.Init(ctx, envdclient.InitRequest{AccessToken: token}); err != nil {
		failf("envd /init: %v", err)
	}
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	stream, err := client.Process.Start(ectx, connect.NewRequest(&envdv1.StartRequest{
		Process: &envdv1.ProcessConfig{Shell: "echo pid1=$(cat /proc/1/comm) kernel=$(uname -r) host=$(hostname); ip addr 2>/dev/null | grep -c " + slot.Address.Addr().String()},
	}))
	if err != nil {
		failf("exec through envd: %v", err)
	}
	defer func() { _ = stream.Close() }()
	var out bytes.Buffer
	exit := int32(-1)
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		out.Write(ev.GetData().GetStderr())
		if end := ev.GetEnd(); end != nil {
			exit = end.GetExitCode()
			break
		}
	}
	got := out.String()
	t.Logf("in the guest: %s", strings.TrimSpace(got))
	if exit != 0 {
		failf("exec exit code %d (stream: %v), output %q", exit, stream.Err(), got)
	}
	for _, want := range []string{"pid1=envd", "kernel=6.1", "host=" + spec.Hostname} {
		if !strings.Contains(got, want) {
			failf("exec output %q lacks %q", got, want)
		}
	}
}
