package firecracker

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// socketFile is the API socket's name in a VM's root directory.
const socketFile = "api.sock"

// maxSocketPath is the longest path a Unix socket address holds.
const maxSocketPath = 107

// layout is where one capsule's VM lives on the host and how Firecracker
// names its files.
type layout struct {
	// Root is Firecracker's working directory on the host: the capsule's
	// own directory, or the jail's root (what Firecracker sees as "/").
	// The disk, the socket and saved state are in it.
	Root string
	// Socket is the API socket's host path; SocketArg is --api-sock as
	// Firecracker sees it.
	Socket, SocketArg string
	// Kernel is the guest kernel as Firecracker opens it.
	Kernel string
	// Jail is the directory the jailer made for this VM ("" without one);
	// Destroy removes it.
	Jail string
	// UID is the uid the jailer runs this VM's Firecracker as (0 without
	// a jailer); it is taken at launch (reserveUID), not by layoutOf.
	UID int
}

// layoutOf is capsule spec's layout under driver configuration cfg.
func layoutOf(cfg Config, spec runtime.Spec) (layout, error) {
	var l layout
	if cfg.Jailer == "" {
		l = layout{Root: spec.Dir, Kernel: cfg.Kernel}
		l.Socket = filepath.Join(l.Root, socketFile)
		l.SocketArg = l.Socket
	} else {
		// The jailer's chroot is <base>/<exec file name>/<id>/root.
		l.Jail = filepath.Join(cfg.ChrootBase, filepath.Base(cfg.Firecracker), spec.ID)
		l.Root = filepath.Join(l.Jail, "root")
		l.Socket = filepath.Join(l.Root, socketFile)
		l.SocketArg = "/" + socketFile
		l.Kernel = "vmlinux"
	}
	if len(l.Socket) > maxSocketPath {
		return layout{}, fmt.Errorf("API socket path %s is %d bytes, over the %d a Unix socket takes: shorten WRENN_DIR", l.Socket, len(l.Socket), maxSocketPath)
	}
	return l, nil
}

// command is the program and arguments that start capsule spec's VM.
// Without a jailer, nsenter puts Firecracker into the capsule's network
// namespace (where its tap is) and execs it, so the process started is
// Firecracker itself. With the jailer, the jailer does that and more: a
// chroot at l.Root, Firecracker's privileges dropped to l.UID and cfg.GID, its
// own cgroup bounding memory and CPU, new PID and mount namespaces.
// cgroupV2 says which cgroup files the limits go to.
func command(cfg Config, spec runtime.Spec, l layout, cgroupV2 bool) (string, []string) {
	fc := []string{"--api-sock", l.SocketArg, "--id", spec.ID, "--level", "Warning"}
	if cfg.Jailer == "" {
		if spec.Network.NetnsPath == "" {
			return cfg.Firecracker, fc
		}
		return "nsenter", append([]string{"--net=" + spec.Network.NetnsPath, "--", cfg.Firecracker}, fc...)
	}
	args := []string{
		"--id", spec.ID,
		"--exec-file", cfg.Firecracker,
		"--uid", strconv.Itoa(l.UID),
		"--gid", strconv.Itoa(cfg.GID),
		"--chroot-base-dir", cfg.ChrootBase,
		"--new-pid-ns",
	}
	if spec.Network.NetnsPath != "" {
		args = append(args, "--netns", spec.Network.NetnsPath)
	}
	// Memory: the guest's plus what Firecracker itself needs; CPU: the
	// capsule's vCPUs' worth of time per 100 ms period.
	mem := (int64(spec.MemoryMB) + vmmOverheadMB) << 20
	quota := int64(spec.VCPUs) * 100_000
	if cgroupV2 {
		args = append(args, "--cgroup-version", "2",
			"--cgroup", "memory.max="+strconv.FormatInt(mem, 10),
			"--cgroup", fmt.Sprintf("cpu.max=%d 100000", quota))
	} else {
		args = append(args, "--cgroup-version", "1",
			"--cgroup", "memory.limit_in_bytes="+strconv.FormatInt(mem, 10),
			"--cgroup", "cpu.cfs_period_us=100000",
			"--cgroup", "cpu.cfs_quota_us="+strconv.FormatInt(quota, 10))
	}
	return cfg.Jailer, append(append(args, "--"), fc...)
}

// vmmOverheadMB is what a Firecracker process needs besides its guest's
// memory (its own code, device emulation, API server).
const vmmOverheadMB = 64
