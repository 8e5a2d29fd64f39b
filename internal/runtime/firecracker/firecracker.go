// Package firecracker is the runtime driver for Firecracker microVMs: one
// Firecracker process per capsule (under the jailer when one is
// configured), configured through Firecracker's API socket with the
// firecracker-go-sdk client, booting the project's vmlinux with envd as
// init on a copy-on-write copy of the template's ext4 image, its virtio-net
// backed by the tap device the network manager puts in the capsule's
// namespace. Pause and snapshots are Firecracker full snapshots. The driver
// keeps one record per capsule under its state directory, so that an agent
// started again finds its VMs (List) and can stop them (Destroy).
//
// docs/runtime.md describes the mapping onto runtime.Driver and what is
// verified where: microVMs need /dev/kvm with hardware virtualization.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Config configures the driver. Everything Firecracker needs that a
// runtime.Spec does not carry is a per-host setting here.
type Config struct {
	// Firecracker is the firecracker binary (WRENN_FIRECRACKER_BIN).
	Firecracker string
	// Jailer is the jailer binary; "" runs Firecracker without it (see
	// docs/runtime.md for what that gives up).
	Jailer string
	// With a jailer, every VM's Firecracker runs as a uid of its own, the
	// lowest of UIDBase … UIDBase+UIDCount-1 no other VM of this driver
	// has (record.UID), and in group GID, the one group all VMs share:
	// their taps are made attachable by GID (network.Config.TapGroup), and
	// the read-only files a jail shares with the host or with other jails
	// (the kernel, saved state) are root:GID 0440. A uid of its own keeps
	// a compromised VMM away from every other VM's files and processes.
	// UIDCount 0 means 65536. Unused without a jailer (Firecracker then
	// runs as root).
	UIDBase, UIDCount, GID int
	// ChrootBase is the jailer's --chroot-base-dir. It is kept short
	// (default <StateDir>/jail): the API socket inside the chroot must fit
	// a Unix socket path (107 bytes).
	ChrootBase string
	// Kernel is the guest kernel ($WRENN_DIR/kernels/vmlinux, `make kernel`).
	Kernel string
	// StateDir holds the driver's record of each VM ($WRENN_DIR/firecracker).
	StateDir string
	// SerialConsole keeps the guest's serial console (ttyS0) on, its output
	// in the capsule's firecracker.log. Off, the guest has no serial port at
	// all (8250.nr_uarts=0): a capsule cannot fill the host's disk through
	// it, and a console costs each VM exit on every byte.
	SerialConsole bool
	// DiffSnapshots lets a VM restored from a snapshot track the pages it
	// dirties, so that its next pause writes only those onto the memory
	// file it was loaded from instead of all its memory
	// (WRENN_FIRECRACKER_DIFF_SNAPSHOTS, on by default). It needs
	// Firecracker 1.6 or later and is off with an older one. Firecracker
	// calls diff snapshots a developer preview.
	DiffSnapshots bool
	// BootTimeout bounds how long Create waits for the API socket and the
	// boot calls; 0 means 10 s.
	BootTimeout time.Duration
	// Logger receives one line per lifecycle event.
	Logger *slog.Logger
}

// Driver runs capsules as Firecracker microVMs. It is safe for concurrent
// use on different capsules.
type Driver struct {
	cfg Config
	log *slog.Logger
	// version is the firecracker binary's release, read once at New.
	version version

	// uidMu guards taking a uid: reserved holds the uids of launches
	// that have one and have not written their record yet.
	uidMu    sync.Mutex
	reserved map[int]bool
}

// New checks cfg and returns a driver. The binaries and the kernel must
// exist; whether /dev/kvm works is Firecracker's to find out at the first
// start (Usable tells ahead).
func New(cfg Config) (*Driver, error) {
	if cfg.Firecracker == "" {
		return nil, errors.New("firecracker: the firecracker binary path is required")
	}
	path, err := exec.LookPath(cfg.Firecracker)
	if err != nil {
		return nil, fmt.Errorf("firecracker: finding the firecracker binary: %w", err)
	}
	cfg.Firecracker = path
	if cfg.Jailer != "" {
		if cfg.Jailer, err = exec.LookPath(cfg.Jailer); err != nil {
			return nil, fmt.Errorf("firecracker: finding the jailer: %w", err)
		}
		if cfg.UIDCount == 0 {
			cfg.UIDCount = 65536
		}
		if err := checkIDs(cfg); err != nil {
			return nil, fmt.Errorf("firecracker: %w", err)
		}
	}
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("firecracker: state dir %q must be absolute", cfg.StateDir)
	}
	if st, err := os.Stat(cfg.Kernel); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("firecracker: guest kernel %q (build it with `make kernel`): %w", cfg.Kernel, errOr(err, errors.New("not a regular file")))
	}
	if cfg.ChrootBase == "" {
		cfg.ChrootBase = filepath.Join(cfg.StateDir, "jail")
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 10 * time.Second
	}
	for _, dir := range []string{cfg.StateDir, cfg.ChrootBase} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("firecracker: creating %s: %w", dir, err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, log: log, version: binaryVersion(context.Background(), cfg.Firecracker), reserved: map[int]bool{}}
	if cfg.DiffSnapshots && !d.diffSnapshots() {
		log.Warn("Firecracker diff snapshots are off: they need Firecracker 1.6 or later", "version", d.version)
	}
	return d, nil
}

// maxID is the largest uid or gid: (uid_t)-1 means "none" to the kernel.
const maxID = 1<<32 - 2

// checkIDs refuses a jailer uid range or gid that would run a VM as root,
// or as an id the kernel cannot hold.
func checkIDs(cfg Config) error {
	switch {
	case cfg.UIDBase <= 0:
		return fmt.Errorf("jailer uid base %d: must be above 0 (a VM must not run as root)", cfg.UIDBase)
	case cfg.GID <= 0:
		return fmt.Errorf("jailer gid %d: must be above 0 (a VM must not run in root's group)", cfg.GID)
	case int64(cfg.GID) > maxID:
		return fmt.Errorf("jailer gid %d: above the largest gid %d", cfg.GID, int64(maxID))
	case cfg.UIDCount < 1:
		return fmt.Errorf("jailer uid count %d: must be at least 1", cfg.UIDCount)
	case int64(cfg.UIDBase)+int64(cfg.UIDCount)-1 > maxID:
		return fmt.Errorf("jailer uids %d + %d: the range passes the largest uid %d", cfg.UIDBase, cfg.UIDCount, int64(maxID))
	}
	return nil
}

// Name implements runtime.Driver.
func (d *Driver) Name() string { return "firecracker" }

// NetworkPeer implements runtime.NetworkPeerer: a microVM's virtio-net is
// backed by a tap device.
func (d *Driver) NetworkPeer() string { return runtime.PeerTap }

// TapGroup implements runtime.TapGrouper: with a jailer, every VM runs in
// group GID, which must be able to attach to its tap; without one,
// Firecracker runs as root and the tap is root's alone.
func (d *Driver) TapGroup() int {
	if d.cfg.Jailer == "" {
		return 0
	}
	return d.cfg.GID
}

// ImagePath is the disk image of the template whose directory is dir
// ($WRENN_DIR/images/<name> → $WRENN_DIR/images/<name>.ext4), the layout
// `make images` writes.
func ImagePath(dir string) string { return filepath.Clean(dir) + imageSuffix }

// UsableTemplate implements runtime.Driver: a microVM boots from the
// template's ext4 image next to its directory.
func (d *Driver) UsableTemplate(dir string) error {
	img := ImagePath(dir)
	st, err := os.Stat(img)
	if err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("template %s has no disk image %s (make images): %w", dir, img, errOr(err, errors.New("not a regular file")))
	}
	return nil
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// Unusable says what this host lacks to run Firecracker microVMs with the
// binary bin: /dev/kvm, hardware virtualization behind it (a kernel can
// offer a paravirtual /dev/kvm on a CPU without VMX or SVM, which
// Firecracker cannot use), or the binary. "" means nothing is missing.
func Unusable(bin string) string { return unusable("/dev/kvm", "/proc/cpuinfo", bin) }

func unusable(kvm, cpuinfo, bin string) string {
	var missing []string
	if _, err := os.Stat(kvm); err != nil {
		missing = append(missing, fmt.Sprintf("no %s", kvm))
	} else if b, err := os.ReadFile(cpuinfo); err != nil || !virtFlag.Match(b) {
		missing = append(missing, fmt.Sprintf("%s exists but the CPU offers no hardware virtualization (no vmx or svm flag in %s)", kvm, cpuinfo))
	}
	if st, err := os.Stat(bin); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		missing = append(missing, fmt.Sprintf("no firecracker binary at %s", bin))
	}
	return strings.Join(missing, "; ")
}

var virtFlag = regexp.MustCompile(`(?m)^flags\s*:.*\b(vmx|svm)\b`)
