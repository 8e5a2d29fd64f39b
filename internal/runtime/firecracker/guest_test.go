package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
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
//
// Then the guest is saved whole (QEMU's migration to a file: memory and
// device state, as a Firecracker snapshot holds them) and brought back in
// another capsule's namespace, at another address, as a launch from a
// snapshot does: the same envd, with the token it was given and the
// process it started, must answer at the new address.
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
	slot := setupSlot(t, nm, id)
	spec := runtime.Spec{ID: id, Dir: dir, Hostname: "capsule-" + id[:8], VCPUs: 1, MemoryMB: 256, DiskMB: 512,
		Network: sandboxNetwork(nm, slot)}
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

	vm := startQEMU(t, slot, m, disk, filepath.Join(dir, "console.log"), filepath.Join(dir, "monitor.sock"))
	start := time.Now()
	client := envdclient.New("http://"+netip.AddrPortFrom(slot.Address.Addr(), runtime.EnvdPort).String(), "")
	defer client.Close()
	vm.waitHealthy(ctx, client, slot.Address.Addr())
	t.Logf("envd answered /health %v after QEMU started (TCG emulation)", time.Since(start).Round(time.Millisecond))

	token := uuid.NewString()
	if err := client.Init(ctx, envdclient.InitRequest{AccessToken: token}); err != nil {
		vm.fail("envd /init: %v", err)
	}
	// The guest holds GuestAddr, whichever the capsule's address.
	got := vm.run(ctx, client, "echo pid1=$(cat /proc/1/comm) kernel=$(uname -r) host=$(hostname) addr=$(ip -4 addr show eth0 2>/dev/null | grep -c "+network.GuestAddr.Addr().String()+"); sleep 100000 >/dev/null 2>&1 & echo sleeper=$!")
	for _, want := range []string{"pid1=envd", "kernel=6.1", "host=" + spec.Hostname, "addr=1"} {
		if !strings.Contains(got, want) {
			vm.fail("exec output %q lacks %q", got, want)
		}
	}
	sleeper := got[strings.Index(got, "sleeper="):]

	// Save the guest whole and stop it, as a snapshot's pause does.
	saved := filepath.Join(dir, "guest.state")
	t0 := time.Now()
	vm.save(saved)
	vm.stop()
	t.Logf("guest saved in %v", time.Since(t0).Round(time.Millisecond))
	if err := nm.Teardown(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Launch it as another capsule: another namespace, another address.
	id2 := uuid.NewString()
	slot2 := setupSlot(t, nm, id2)
	if slot2.Address == slot.Address {
		t.Fatalf("the second capsule got the first one's address %v", slot.Address)
	}
	t0 = time.Now()
	vm2 := startQEMU(t, slot2, m, disk, filepath.Join(dir, "console2.log"), filepath.Join(dir, "monitor2.sock"), "-incoming", "exec:cat "+saved)
	client2 := envdclient.New("http://"+netip.AddrPortFrom(slot2.Address.Addr(), runtime.EnvdPort).String(), token)
	defer client2.Close()
	vm2.waitHealthy(ctx, client2, slot2.Address.Addr())
	t.Logf("the saved guest answered at %v, a new address, %v after QEMU started", slot2.Address.Addr(), time.Since(t0).Round(time.Millisecond))
	pid := strings.TrimSpace(strings.TrimPrefix(sleeper, "sleeper="))
	got = vm2.run(ctx, client2, "cat /proc/"+pid+"/comm; ip -4 addr show eth0 | grep -c "+network.GuestAddr.Addr().String())
	if fields := strings.Fields(got); len(fields) != 2 || fields[0] != "sleep" || fields[1] != "1" {
		vm2.fail("in the restored guest, pid %s and the address: %q, want \"sleep\" and 1", pid, got)
	}
	// A wrong token is refused: envd kept the one it was given, in memory.
	stranger := envdclient.New("http://"+netip.AddrPortFrom(slot2.Address.Addr(), runtime.EnvdPort).String(), "not-"+token)
	defer stranger.Close()
	if _, err := stranger.Process.List(ctx, connect.NewRequest(&envdv1.ListRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		vm2.fail("a call with the wrong token: %v, want unauthenticated", err)
	}
}

// setupSlot sets up capsule id's network and tears it down at the end.
func setupSlot(t *testing.T, nm *network.Manager, id string) network.Slot {
	t.Helper()
	slot, err := nm.Setup(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nm.Teardown(context.Background(), id); err != nil {
			t.Errorf("tearing the capsule network down: %v", err)
		}
	})
	return slot
}

// qemuVM is a guest running under QEMU's microvm machine.
type qemuVM struct {
	t        *testing.T
	cmd      *exec.Cmd
	exited   chan error
	out      *bytes.Buffer
	console  string
	monitor  string
	finished bool
}

// startQEMU starts machine m on disk in slot's namespace, with its serial
// console in console and its human monitor on the socket monitor; extra
// are further QEMU arguments. QEMU's microvm with ACPI off describes its
// virtio-mmio devices on the kernel command line, as Firecracker does.
func startQEMU(t *testing.T, slot network.Slot, m machine, disk, console, monitor string, extra ...string) *qemuVM {
	t.Helper()
	args := []string{"--net=" + slot.NetnsPath, "--", "qemu-system-x86_64",
		"-M", "microvm,acpi=off", "-accel", "tcg", "-cpu", "max",
		"-m", fmt.Sprint(*m.Machine.MemSizeMib), "-smp", fmt.Sprint(*m.Machine.VcpuCount),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "file:" + console, "-monitor", "unix:" + monitor + ",server=on,wait=off",
		"-kernel", *m.Boot.KernelImagePath, "-append", m.Boot.BootArgs,
		"-drive", "id=root,file=" + disk + ",format=raw,if=none", "-device", "virtio-blk-device,drive=root",
		"-netdev", "tap,id=net0,ifname=" + *m.Net.HostDevName + ",script=no,downscript=no",
		"-device", "virtio-net-device,netdev=net0,mac=" + m.Net.GuestMac}
	vm := &qemuVM{t: t, cmd: exec.Command("nsenter", append(args, extra...)...), exited: make(chan error, 1),
		out: &bytes.Buffer{}, console: console, monitor: monitor}
	vm.cmd.Stdout, vm.cmd.Stderr = vm.out, vm.out
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := vm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { vm.exited <- vm.cmd.Wait() }()
	t.Cleanup(vm.stop)
	return vm
}

// stop kills QEMU and waits for it, once.
func (vm *qemuVM) stop() {
	if vm.finished {
		return
	}
	vm.finished = true
	_ = vm.cmd.Process.Kill()
	vm.t.Logf("qemu ended: %v", <-vm.exited)
}

// fail ends the test with QEMU's output and the end of the guest's console.
func (vm *qemuVM) fail(format string, args ...any) {
	vm.t.Helper()
	b, _ := os.ReadFile(vm.console)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	vm.t.Fatalf(format+"\nqemu: %s\nguest console (end):\n%s", append(args, vm.out.String(), b)...)
}

// waitHealthy waits (up to 4 minutes: TCG is slow) for envd to answer
// /health at addr.
func (vm *qemuVM) waitHealthy(ctx context.Context, client *envdclient.Client, addr netip.Addr) {
	vm.t.Helper()
	start := time.Now()
	for {
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := client.Health(hctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case err := <-vm.exited:
			vm.finished = true
			vm.fail("qemu exited before envd answered: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
		if time.Since(start) > 4*time.Minute {
			vm.fail("envd did not answer /health at %s within %v: %v", addr, time.Since(start), err)
		}
	}
}

// run runs shell in the guest through envd and returns its output; a
// non-zero exit fails the test.
func (vm *qemuVM) run(ctx context.Context, client *envdclient.Client, shell string) string {
	vm.t.Helper()
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	stream, err := client.Process.Start(ectx, connect.NewRequest(&envdv1.StartRequest{Process: &envdv1.ProcessConfig{Shell: shell}}))
	if err != nil {
		vm.fail("exec through envd: %v", err)
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
	vm.t.Logf("in the guest: %s", strings.TrimSpace(got))
	if exit != 0 {
		vm.fail("exec exit code %d (stream: %v), output %q", exit, stream.Err(), got)
	}
	return got
}

// save writes the whole guest (memory and device state) to path through
// QEMU's migration, and waits until it is complete; QEMU then holds the
// guest stopped.
func (vm *qemuVM) save(path string) {
	vm.t.Helper()
	vm.hmp(`migrate "exec:cat > ` + path + `"`)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		status := vm.hmp("info migrate")
		switch {
		case strings.Contains(status, "Migration status: completed"):
			return
		case strings.Contains(status, "Migration status: failed"), time.Now().After(deadline):
			vm.fail("saving the guest: %s", status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hmp sends one command to QEMU's human monitor and returns its answer.
func (vm *qemuVM) hmp(cmd string) string {
	vm.t.Helper()
	c, err := net.Dial("unix", vm.monitor)
	if err != nil {
		vm.fail("connecting to the monitor: %v", err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	readPrompt := func() string {
		var b strings.Builder
		for !strings.HasSuffix(b.String(), "(qemu) ") {
			by, err := r.ReadByte()
			if err != nil {
				vm.fail("reading the monitor after %q: %v (so far %q)", cmd, err, b.String())
			}
			b.WriteByte(by)
		}
		return b.String()
	}
	readPrompt() // the banner
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		vm.fail("writing to the monitor: %v", err)
	}
	return readPrompt()
}
