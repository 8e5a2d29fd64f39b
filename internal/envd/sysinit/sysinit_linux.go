// Package sysinit does what envd must do when it is a capsule's init (PID 1):
// mount the filesystems a Linux userland expects and set the hostname.
// Reaping and signal forwarding live with the process table and the server.
package sysinit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mount is one filesystem init provides.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	fallback               *mount // tried when this one fails (e.g. no devtmpfs)
}

var mounts = []mount{
	{source: "proc", target: "/proc", fstype: "proc", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{source: "sysfs", target: "/sys", fstype: "sysfs", flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
	{source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: unix.MS_NOSUID, data: "mode=0755",
		fallback: &mount{source: "tmpfs", target: "/dev", fstype: "tmpfs", flags: unix.MS_NOSUID, data: "mode=0755"}},
	{source: "devpts", target: "/dev/pts", fstype: "devpts", flags: unix.MS_NOSUID | unix.MS_NOEXEC, data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
	{source: "tmpfs", target: "/dev/shm", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777"},
	{source: "tmpfs", target: "/tmp", fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV, data: "mode=1777"},
}

// Mount mounts /proc, /sys, /dev (devtmpfs, else tmpfs), /dev/pts, /dev/shm
// and /tmp, skipping each one that is already a mount point, and makes sure
// /dev/ptmx and the standard /dev links exist. It logs and continues past a
// mount that fails, returning the joined errors, so that init can still serve.
func Mount(log *slog.Logger) error {
	var errs []error
	for _, m := range mounts {
		mounted, err := isMountPoint(m.target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if mounted {
			log.Debug("already mounted", "target", m.target)
			continue
		}
		fstype := m.fstype
		if err := m.mount(); err != nil {
			if m.fallback == nil {
				errs = append(errs, err)
				log.Warn("mount failed", "target", m.target, "err", err)
				continue
			}
			if err2 := m.fallback.mount(); err2 != nil {
				errs = append(errs, err, err2)
				log.Warn("mount failed", "target", m.target, "err", err2)
				continue
			}
			fstype = m.fallback.fstype
		}
		log.Info("mounted", "target", m.target, "fstype", fstype)
	}
	for name, target := range map[string]string{
		"/dev/ptmx":   "pts/ptmx",
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
	} {
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			if err := os.Symlink(target, name); err != nil {
				errs = append(errs, fmt.Errorf("linking %s: %w", name, err))
			}
		}
	}
	if _, err := os.Lstat("/dev/null"); errors.Is(err, fs.ErrNotExist) {
		// A tmpfs /dev has no device nodes: make the one every program needs.
		if err := unix.Mknod("/dev/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			errs = append(errs, fmt.Errorf("creating /dev/null: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (m mount) mount() error {
	if err := os.MkdirAll(m.target, 0o755); err != nil {
		return fmt.Errorf("mounting %s: %w", m.target, err)
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

// isMountPoint reports whether target is listed as a mount point in
// /proc/self/mountinfo (or, before /proc exists, whether it is /proc itself
// that is missing).
func isMountPoint(target string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		if target == "/proc" {
			return false, nil
		}
		return false, fmt.Errorf("reading mount table: %w", err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescape(fields[4]) == target {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// SetHostname sets the kernel hostname (of envd's UTS namespace).
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("setting hostname: %w", err)
	}
	return nil
}

// processCgroupDir is the pids cgroup of the processes envd starts, in the
// cgroup file system the runtime mounts at /sys/fs/cgroup (gVisor's own,
// inside the capsule).
const processCgroupDir = "/sys/fs/cgroup/pids/capsule"

// ProcessCgroup makes the pids cgroup of the processes envd starts, limited
// to max tasks, and returns the tasks files of that cgroup and of envd's
// own: envd forks each process from a thread it moved into the first, so
// that the process is born there (a move after the fork would let what it
// forks at once escape), and moves the thread back. envd stays outside: at
// the limit it can still start threads and answer.
//
// Why: gVisor's systrap platform gives every task inside a host task of
// its own, and a sandbox whose host cgroup refuses one dies ("createStub:
// failed to get clone"); a limit inside, below the host's, turns that into
// EAGAIN for the program that forks.
func ProcessCgroup(max int) (capsuleTasks, ownTasks string, err error) {
	root := filepath.Dir(processCgroupDir)
	if _, err := os.Stat(root); err != nil {
		return "", "", fmt.Errorf("no pids cgroup file system: %w", err)
	}
	own, err := ownCgroup("pids")
	if err != nil {
		return "", "", err
	}
	ownTasks, err = ownTasksFile(root, own, os.Getpid())
	if err != nil {
		return "", "", err
	}
	if err := os.Mkdir(processCgroupDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", "", fmt.Errorf("making the capsule's pids cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(processCgroupDir, "pids.max"), []byte(strconv.Itoa(max)), 0); err != nil {
		return "", "", fmt.Errorf("limiting the capsule's pids cgroup: %w", err)
	}
	return filepath.Join(processCgroupDir, "tasks"), ownTasks, nil
}

// ownTasksFile finds the tasks file of the cgroup that process pid is in,
// in the hierarchy mounted at root. /proc/self/cgroup gives that cgroup's
// path from the hierarchy's root (own), but a runtime may mount only the
// container's part of the hierarchy: gVisor mounts the sandbox's cgroup
// (/<container id>) as the root, so the path as given names no directory
// there. The path is tried from itself down to its last parts and to the
// mount's root, and the first tasks file that lists pid is the one.
func ownTasksFile(root, own string, pid int) (string, error) {
	parts := strings.Split(strings.Trim(own, "/"), "/")
	want := strconv.Itoa(pid)
	for i := 0; i <= len(parts); i++ {
		file := filepath.Join(append(append([]string{root}, parts[i:]...), "tasks")...)
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		if slices.Contains(strings.Fields(string(b)), want) {
			return file, nil
		}
	}
	return "", fmt.Errorf("found no tasks file under %s listing this process (pid %d, cgroup %s)", root, pid, own)
}

// ownCgroup returns this process's cgroup path in the v1 hierarchy of
// controller, from /proc/self/cgroup ("7:pids:/some/path").
func ownCgroup(controller string) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), controller) {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("no %s cgroup in /proc/self/cgroup", controller)
}
