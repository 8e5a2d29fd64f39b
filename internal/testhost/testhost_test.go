package testhost

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIsMountPoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind-mounting needs root; make test runs as root")
	}
	dir := t.TempDir()
	if isMountPoint(dir) {
		t.Fatalf("%s: a plain directory reported as a mount point", dir)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if !isMountPoint(dir) {
		t.Errorf("%s: a self-bind not reported as a mount point", dir)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if isMountPoint(dir) {
		t.Errorf("%s: still a mount point after the unmount", dir)
	}
}
