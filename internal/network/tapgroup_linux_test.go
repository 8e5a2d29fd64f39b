package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// attachEnv makes the test binary attach to TapIface in its network
// namespace through the tun device node the variable names, print what
// happened and exit (TestMain): the unprivileged child of TestTapGroup.
const attachEnv = "WRENN_TEST_ATTACH_TAP"

func TestMain(m *testing.M) {
	if tun := os.Getenv(attachEnv); tun != "" {
		fmt.Println(attachTap(tun))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// attachTap attaches to TapIface through the tun device node tun, the way
// Firecracker does, and returns a line with this process's credentials and
// capabilities and the outcome: "ok" or the errno's name.
func attachTap(tun string) string {
	status, _ := os.ReadFile("/proc/self/status")
	var capEff string
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			capEff = strings.TrimSpace(v)
		}
	}
	groups, _ := unix.Getgroups()
	who := fmt.Sprintf("euid=%d egid=%d groups=%v capeff=%s", unix.Geteuid(), unix.Getegid(), groups, capEff)
	fd, err := unix.Open(tun, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return who + " open: " + err.Error()
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(TapIface)
	if err != nil {
		return who + " " + err.Error()
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return who + " result=" + unix.ErrnoName(errno)
		}
		return who + " result=" + err.Error()
	}
	return who + " result=ok"
}

// Credentials of the test's unprivileged processes, far from real users:
// vmGroup and vmUID are the agent's default Firecracker gid and a uid of
// its default range.
const (
	vmGroup    = 2000000000
	vmUID      = 2000000007
	otherUID   = 1400000001
	otherGroup = 1400000001
)

// attachAs runs the test binary, as cred, in the network namespace at
// nsPath and returns its report (attachTap). The binary is copied where
// any uid may run it: go test builds it in a directory only root enters.
// The child opens a tun device node of its own, 0600 and owned by cred, as
// the jailer makes one in each VM's chroot (dev/net/tun): the host's may
// be root's alone (it is 0600 on some hosts), and what is tested is the
// tap's own check, which applies whatever node it is reached through.
func attachAs(t *testing.T, nsPath string, cred *syscall.Credential) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is 0700.
	dir, err := os.MkdirTemp("", "wrenn-tap-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "network.test")
	copyFile(t, self, bin, 0o755)
	tun := filepath.Join(dir, "tun")
	if err := unix.Mknod(tun, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatalf("making a tun device node: %v", err)
	}
	if err := os.Chown(tun, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin)
	cmd.Env = []string{attachEnv + "=" + tun}
	cmd.Dir = "/"
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	// A process inherits the network namespace of the thread that forks
	// it: the child starts inside the capsule's namespace with no right to
	// enter or leave one.
	if err := inNetns(nsPath, cmd.Start); err != nil {
		t.Fatalf("starting the unprivileged child: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the unprivileged child: %v\n%s", err, out.String())
	}
	return strings.TrimSpace(out.String())
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestTapGroup attaches to a capsule's tap from real unprivileged
// processes (another uid, no capabilities) inside the capsule's namespace,
// as a jailed Firecracker does: with Config.TapGroup a member of that group
// may, by its primary or a supplementary group; a process of another uid
// and group may not (EPERM). Without a TapGroup nobody but root may: the
// tap is not left open to everyone.
func TestTapGroup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		tapGroup int
		cred     syscall.Credential
		want     string
	}{
		{"member by its gid", vmGroup, syscall.Credential{Uid: vmUID, Gid: vmGroup}, "ok"},
		{"member by a supplementary group", vmGroup, syscall.Credential{Uid: vmUID, Gid: otherGroup, Groups: []uint32{vmGroup}}, "ok"},
		{"another uid and group", vmGroup, syscall.Credential{Uid: otherUID, Gid: otherGroup}, "EPERM"},
		{"no tap group, a would-be member", 0, syscall.Credential{Uid: vmUID, Gid: vmGroup}, "EPERM"},
	}
	// One manager per tap group, one capsule per case.
	managers := map[int]*Manager{}
	for _, tt := range tests {
		if managers[tt.tapGroup] == nil {
			cfg := newTestConfig(t)
			cfg.Peer = PeerTap
			cfg.TapGroup = tt.tapGroup
			managers[tt.tapGroup] = newTestManager(t, cfg)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := managers[tt.tapGroup]
			id := uuid.NewString()
			slot, err := m.Setup(context.Background(), id)
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			defer func() {
				if err := m.Teardown(context.Background(), id); err != nil {
					t.Errorf("Teardown: %v", err)
				}
			}()
			cred := tt.cred
			got := attachAs(t, slot.NetnsPath, &cred)
			t.Log(got)
			if !strings.Contains(got, fmt.Sprintf("euid=%d egid=%d ", cred.Uid, cred.Gid)) || !strings.Contains(got, "capeff=0000000000000000") {
				t.Fatalf("the child is not the unprivileged process asked for: %s", got)
			}
			if !strings.HasSuffix(got, "result="+tt.want) {
				t.Fatalf("attaching to %s as uid %d gid %d groups %v: %s; want %s", TapIface, cred.Uid, cred.Gid, cred.Groups, got, tt.want)
			}
			// Root still attaches (it has CAP_NET_ADMIN), and the child
			// that did attach has let go of the tap.
			openTap(t, slot.NetnsPath).Close()
		})
	}
}

// TestTapGroupChangedOnRenew: a capsule's tap was made for one group, and
// the agent's VMs now run in another (WRENN_FIRECRACKER_GID changed, or the
// jailer was added). Its resume (Renew, with no VMM attached) makes the tap
// again for the new group, so the VMM can attach; the old group cannot.
func TestTapGroupChangedOnRenew(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	cfg.Peer = PeerTap
	cfg.TapGroup = otherGroup
	m := newTestManager(t, cfg)
	id := uuid.NewString()
	slot, err := m.Setup(context.Background(), id)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer func() { _ = m.Teardown(context.Background(), id) }()
	member := syscall.Credential{Uid: vmUID, Gid: vmGroup}
	if got := attachAs(t, slot.NetnsPath, &member); !strings.HasSuffix(got, "result=EPERM") {
		t.Fatalf("before the change a member of %d attached to a tap made for %d: %s", vmGroup, otherGroup, got)
	}
	m.cfg.TapGroup = vmGroup
	if _, err := m.Renew(context.Background(), id); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if got := attachAs(t, slot.NetnsPath, &member); !strings.HasSuffix(got, "result=ok") {
		t.Fatalf("after Renew for group %d its member could not attach: %s", vmGroup, got)
	}
	old := syscall.Credential{Uid: otherUID, Gid: otherGroup}
	if got := attachAs(t, slot.NetnsPath, &old); !strings.HasSuffix(got, "result=EPERM") {
		t.Fatalf("after Renew a member of the old group %d still attached: %s", otherGroup, got)
	}
	checkRouted(t, slot, "after Renew for another group")
}
