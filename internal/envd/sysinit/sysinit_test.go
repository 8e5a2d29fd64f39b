package sysinit

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		"/proc":         "/proc",
		`/mnt/a\040b`:   "/mnt/a b",
		`/x\134y`:       `/x\y`,
		`/bad\04`:       `/bad\04`,
		`/not\999octal`: `/not\999octal`,
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsMountPoint(t *testing.T) {
	if ok, err := isMountPoint("/proc"); err != nil || !ok {
		t.Errorf("isMountPoint(/proc) = %v, %v; want true", ok, err)
	}
	if ok, err := isMountPoint("/proc/self"); err != nil || ok {
		t.Errorf("isMountPoint(/proc/self) = %v, %v; want false", ok, err)
	}
}

// TestOwnTasksFile finds envd's own cgroup both where the whole hierarchy
// is mounted (a VM's or this host's) and where only the container's part
// is, as gVisor mounts it: there the path /proc/self/cgroup gives names no
// directory, and moving a thread back through it failed, leaving envd's
// thread counted in the capsule's pids limit.
func TestOwnTasksFile(t *testing.T) {
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// gVisor: the sandbox's cgroup /4553fb44 is the mount's root, and the
	// capsule's cgroup made inside it lists other tasks.
	sandbox := t.TempDir()
	write(filepath.Join(sandbox, "tasks"), "1\n5\n10\n")
	write(filepath.Join(sandbox, "capsule", "tasks"), "13\n14\n")
	// The whole hierarchy: the path as given.
	whole := t.TempDir()
	write(filepath.Join(whole, "tasks"), "2\n3\n")
	write(filepath.Join(whole, "system.slice", "wrenn", "tasks"), "1\n7\n")
	for _, c := range []struct {
		root, own string
		pid       int
		want      string
	}{
		{sandbox, "/4553fb44", 1, filepath.Join(sandbox, "tasks")},
		{whole, "/system.slice/wrenn", 1, filepath.Join(whole, "system.slice", "wrenn", "tasks")},
		{whole, "/", 2, filepath.Join(whole, "tasks")},
		{sandbox, "/4553fb44", 13, ""}, // 13 is in capsule/, not in any suffix of /4553fb44
		{whole, "/system.slice/wrenn", 99, ""},
	} {
		got, err := ownTasksFile(c.root, c.own, c.pid)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("ownTasksFile(%s, %s, %d) = %q, %v; want %q", c.root, c.own, c.pid, got, err, c.want)
		}
	}

	// This machine's own pids hierarchy, when it has a v1 one.
	const hostRoot = "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(hostRoot, "tasks")); err != nil {
		t.Logf("no cgroup v1 pids hierarchy at %s on this machine (%v): checked the layouts above only", hostRoot, err)
		return
	}
	own, err := ownCgroup("pids")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ownTasksFile(hostRoot, own, os.Getpid())
	if want := filepath.Join(hostRoot, own, "tasks"); err != nil || got != want {
		t.Errorf("on this machine: ownTasksFile(%s, %s) = %q, %v; want %q", hostRoot, own, got, err, want)
	}
}
