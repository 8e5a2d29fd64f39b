// Package testhost holds test helpers that change the host itself and
// leave it as they found it. It imports nothing of Wrenn's, so that every
// package's tests (network's own included) can use it.
package testhost

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

const runNetns = "/run/netns"

// IPNetnsAdd runs `ip netns add name`, as an operator or a CNI plugin
// would, and removes the namespace when the test ends. The first `ip netns
// add` on a host bind-mounts /run/netns onto itself; when it was not a
// mount point (or did not exist) before, the cleanup undoes that too once
// no namespace is left in it, so a fresh machine stays fresh.
func IPNetnsAdd(t testing.TB, name string) {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal("iproute2's ip is not installed (scripts/test.sh installs it)")
	}
	_, statErr := os.Stat(runNetns)
	existed := statErr == nil
	wasMount := existed && isMountPoint(runNetns)
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
		if wasMount {
			return
		}
		if entries, err := os.ReadDir(runNetns); err != nil || len(entries) > 0 {
			return // another test's namespace is still there; its cleanup does this
		}
		for isMountPoint(runNetns) {
			if err := unix.Unmount(runNetns, unix.MNT_DETACH); err != nil {
				t.Errorf("unmounting the self-bind ip made of %s: %v", runNetns, err)
				return
			}
		}
		if !existed {
			if err := os.Remove(runNetns); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("removing %s, which ip created: %v", runNetns, err)
			}
		}
	})
}

// isMountPoint reports whether path is a mount point: its device differs
// from its parent's, or (a bind mount of a directory onto itself, same
// device) its mount id does.
func isMountPoint(path string) bool {
	var self, parent unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &self) != nil ||
		unix.Statx(unix.AT_FDCWD, path+"/..", 0, unix.STATX_MNT_ID, &parent) != nil {
		return false
	}
	return self.Mnt_id != parent.Mnt_id
}
