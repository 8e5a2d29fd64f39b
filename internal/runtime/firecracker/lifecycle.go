package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/sirupsen/logrus"

	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Files of a VM the driver keeps: the console and Firecracker's own log in
// the capsule's directory; saved state in the VM's root while it is
// written or loaded, and in the caller's image directory otherwise.
const (
	logFile     = "firecracker.log"
	memFile     = "snapshot.mem"
	vmstateFile = "snapshot.vmstate"
)

// Create implements runtime.Driver: a copy-on-write disk from the
// template's image, a Firecracker process, then the boot calls.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (runtime.Info, error) {
	return d.launch(ctx, spec, "")
}

// Restore implements runtime.Checkpointer: the saved disk copied like a
// template's, a fresh Firecracker process in the capsule's namespace (the
// tap has the same name in every namespace, as the saved VM expects), then
// snapshot/load with resume_vm. The guest kernel keeps the address it had
// when it was saved, so a saved state restores only where the sandbox's
// address is that one: with a tap peer that is network.GuestAddr in every
// capsule, the namespace translating it to the capsule's own, so a saved
// VM comes back in any capsule.
func (d *Driver) Restore(ctx context.Context, spec runtime.Spec, imageDir string) (runtime.Info, error) {
	for _, f := range []string{vmstateFile, memFile, diskFile} {
		if st, err := os.Stat(filepath.Join(imageDir, f)); err != nil || !st.Mode().IsRegular() {
			return runtime.Info{}, fmt.Errorf("restoring capsule %s: no saved state in %s (%s missing)", spec.ID, imageDir, f)
		}
	}
	saved, err := os.ReadFile(filepath.Join(imageDir, addressFile))
	if err != nil {
		return runtime.Info{}, fmt.Errorf("restoring capsule %s: %w", spec.ID, err)
	}
	if want := addressOf(spec); strings.TrimSpace(string(saved)) != want {
		return runtime.Info{}, fmt.Errorf("restoring capsule %s: the saved guest has address %q and cannot take %q: a Firecracker guest keeps its address in memory",
			spec.ID, strings.TrimSpace(string(saved)), want)
	}
	return d.launch(ctx, spec, imageDir)
}

// addressFile records a saved state's guest address (the guest's own, not
// the capsule's).
const addressFile = "address"

func addressOf(spec runtime.Spec) string {
	if spec.Network.NetnsPath == "" {
		return ""
	}
	return spec.Network.Address.String()
}

// launch starts capsule spec: booted from its template when imageDir is "",
// else restored from the state saved there.
func (d *Driver) launch(ctx context.Context, spec runtime.Spec, imageDir string) (info runtime.Info, err error) {
	verb := "creating"
	if imageDir != "" {
		verb = "restoring"
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
		}
	}()
	l, err := layoutOf(d.cfg, spec)
	if err != nil {
		return runtime.Info{}, err
	}
	m, err := machineFor(spec, l.Kernel, d.cfg.SerialConsole)
	if err != nil {
		return runtime.Info{}, err
	}
	if imageDir == "" {
		if err := d.UsableTemplate(spec.Image); err != nil {
			return runtime.Info{}, err
		}
	}
	if _, err := d.readRecord(spec.ID); err == nil {
		return runtime.Info{}, runtime.ErrExists
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.BootTimeout+time.Minute)
	defer cancel()

	// From here on a failure removes what was made.
	started := time.Now()
	rec := record{ID: spec.ID, Dir: spec.Dir, Root: l.Root, Socket: l.Socket, Jail: l.Jail, Address: addressOf(spec), StartedAt: started,
		DirtyTracked: imageDir != "" && d.diffSnapshots()}
	// The VM's own uid, held from here until after the record holding it
	// is written or removed (this defer runs after the one below).
	uid, releaseUID, err := d.reserveUID()
	if err != nil {
		return runtime.Info{}, err
	}
	defer releaseUID()
	rec.UID, l.UID = uid, uid
	defer func() {
		if err != nil {
			if rerr := d.remove(rec); rerr != nil {
				d.log.Error("cleaning up after a failed start", "capsule_id", spec.ID, "err", rerr)
			}
		}
	}()
	if err := d.prepareRoot(ctx, spec, l, imageDir); err != nil {
		return runtime.Info{}, err
	}
	logf, err := os.OpenFile(filepath.Join(spec.Dir, logFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return runtime.Info{}, err
	}
	defer func() { _ = logf.Close() }()
	if rec.PID, rec.PIDStart, err = d.start(spec, l, logf); err != nil {
		return runtime.Info{}, fmt.Errorf("%w%s", err, logTail(spec.Dir))
	}
	if err := d.writeRecord(rec); err != nil {
		return runtime.Info{}, err
	}
	c := d.client(rec)
	if err := waitSocket(ctx, rec, d.cfg.BootTimeout); err != nil {
		return runtime.Info{}, fmt.Errorf("%w%s", err, logTail(spec.Dir))
	}
	if imageDir == "" {
		err = boot(ctx, c, m)
	} else {
		err = d.load(ctx, rec, rec.DirtyTracked)
	}
	if err != nil {
		return runtime.Info{}, fmt.Errorf("%w%s", err, logTail(spec.Dir))
	}
	d.log.Debug("capsule started", "capsule_id", spec.ID, "how", verb, "took", time.Since(started))
	return runtime.Info{ID: spec.ID, State: runtime.StateRunning, StartedAt: started}, nil
}

// boot sends m to a fresh Firecracker and starts the guest: the ordered
// steps of the firecracker-go-sdk's own boot, by name.
func boot(ctx context.Context, c *sdk.Client, m machine) error {
	steps := []struct {
		name string
		do   func() error
	}{
		{"machine-config", func() error { _, err := c.PutMachineConfiguration(ctx, &m.Machine); return err }},
		{"boot-source", func() error { _, err := c.PutGuestBootSource(ctx, &m.Boot); return err }},
		{"drives", func() error {
			for i := range m.Drives {
				if _, err := c.PutGuestDriveByID(ctx, *m.Drives[i].DriveID, &m.Drives[i]); err != nil {
					return err
				}
			}
			return nil
		}},
		{"network-interfaces", func() error {
			if m.Net == nil {
				return nil
			}
			_, err := c.PutGuestNetworkInterfaceByID(ctx, *m.Net.IfaceID, m.Net)
			return err
		}},
		{"InstanceStart", func() error {
			_, err := c.CreateSyncAction(ctx, &models.InstanceActionInfo{ActionType: ptr(models.InstanceActionInfoActionTypeInstanceStart)})
			return err
		}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("firecracker %s: %w", s.name, err)
		}
	}
	return nil
}

// prepareRoot makes the VM's root directory: its disk (a copy of the
// template's image grown to the capsule's size, or of the saved disk), the
// saved state to load, and in a jail the kernel.
//
// In a jail, what is the VM's own — the root (where Firecracker makes its
// socket and writes snapshots) and the disk — is owned by the VM's uid
// and the group, 0700 and 0600. What shares its inode with a file outside
// the jail is root:GID 0440, readable by the VM and writable by none: the
// saved state, hard-linked from the capsule's saved directory or from a
// snapshot template many capsules restore from, and the kernel. Owned by
// the VM's uid, a compromised VMM could rewrite such a file under every
// other capsule that restores from it (the uid is another VM's after this
// one is destroyed, too). The kernel is hard-linked rather than copied for
// the same reason the saved state is: root:GID 0440 makes the link safe to
// share, and a copy would cost every VM megabytes of disk for nothing. The
// host's kernel file becomes root:GID 0440 with it, which changes nothing
// for root, who builds and reads it.
func (d *Driver) prepareRoot(ctx context.Context, spec runtime.Spec, l layout, imageDir string) error {
	if err := os.MkdirAll(l.Root, 0o700); err != nil {
		return err
	}
	disk := filepath.Join(l.Root, diskFile)
	var shared []string
	if imageDir == "" {
		if err := copyDisk(ctx, ImagePath(spec.Image), disk); err != nil {
			return err
		}
		if err := growDisk(ctx, disk, spec.DiskMB); err != nil {
			return err
		}
	} else {
		if err := copyDisk(ctx, filepath.Join(imageDir, diskFile), disk); err != nil {
			return err
		}
		for _, f := range []string{memFile, vmstateFile} {
			if err := linkOrCopy(ctx, filepath.Join(imageDir, f), filepath.Join(l.Root, f)); err != nil {
				return err
			}
			shared = append(shared, filepath.Join(l.Root, f))
		}
	}
	if l.Jail == "" {
		return nil
	}
	kernel := filepath.Join(l.Root, l.Kernel)
	if err := linkOrCopy(ctx, d.cfg.Kernel, kernel); err != nil {
		return err
	}
	shared = append(shared, kernel)
	for _, p := range shared {
		if err := setOwner(p, 0, d.cfg.GID, 0o440); err != nil {
			return err
		}
	}
	if err := setOwner(disk, l.UID, d.cfg.GID, 0o600); err != nil {
		return err
	}
	return setOwner(l.Root, l.UID, d.cfg.GID, 0o700)
}

// setOwner gives path owner uid:gid and permissions mode.
func setOwner(path string, uid, gid int, mode os.FileMode) error {
	if err := os.Lchown(path, uid, gid); err != nil {
		return err
	}
	return os.Chmod(path, mode)
}

// linkOrCopy hard-links src at dst, or copies it (reflinked where the file
// system can) when they are on different file systems. A saved state is
// only read by Firecracker, so one file serves every restore.
func linkOrCopy(ctx context.Context, src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyDisk(ctx, src, dst)
}

// start starts the VM's process, in a session of its own so that it
// outlives the agent (and a Ctrl-C to the agent's process group), and
// returns its pid and start time. With --new-pid-ns the jailer forks
// Firecracker and exits: the pid is the one it writes into the jail.
func (d *Driver) start(spec runtime.Spec, l layout, logf io.Writer) (int, uint64, error) {
	bin, args := command(d.cfg, spec, l, cgroupV2())
	cmd := exec.Command(bin, args...)
	cmd.Dir = l.Root
	if l.Jail != "" {
		cmd.Dir = spec.Dir
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
	}
	pid := cmd.Process.Pid
	if l.Jail == "" {
		// Reaped here while this agent runs; by init once it is gone.
		go func() { _ = cmd.Wait() }()
	} else {
		if err := cmd.Wait(); err != nil {
			return 0, 0, fmt.Errorf("jailer: %w", err)
		}
		b, err := os.ReadFile(filepath.Join(l.Root, filepath.Base(d.cfg.Firecracker)+".pid"))
		if err != nil {
			return 0, 0, fmt.Errorf("reading the pid the jailer wrote: %w", err)
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return 0, 0, fmt.Errorf("reading the pid the jailer wrote: %w", err)
		}
	}
	startTime, _, err := procStart(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("%s exited at once: %w", filepath.Base(bin), err)
	}
	return pid, startTime, nil
}

// cgroupV2 reports whether the host runs the unified cgroup hierarchy.
func cgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// client is the firecracker-go-sdk API client of r's socket.
func (d *Driver) client(r record) *sdk.Client {
	return sdk.NewClient(r.Socket, quietLogger(), false)
}

// quietLogger is a logger for the SDK that says nothing: the driver logs
// what matters itself.
func quietLogger() *logrus.Entry {
	log := logrus.New()
	log.SetOutput(io.Discard)
	return logrus.NewEntry(log)
}

// waitSocket waits until r's API socket accepts connections, failing early
// when the process is gone.
func waitSocket(ctx context.Context, r record, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if c, err := net.Dial("unix", r.Socket); err == nil {
			_ = c.Close()
			return nil
		}
		if !alive(r) {
			return errors.New("firecracker exited before its API socket was up")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the API socket %s: %w", r.Socket, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// logTail returns the end of a capsule's firecracker.log, for errors.
func logTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, logFile))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 1000 {
		b = b[len(b)-1000:]
	}
	return ": " + strings.TrimSpace(string(b))
}

// Info implements runtime.Driver: no record is ErrNotFound, a record whose
// process is gone is stopped, otherwise Firecracker says whether the VM
// runs or is paused.
func (d *Driver) Info(ctx context.Context, id string) (runtime.Info, error) {
	r, err := d.readRecord(id)
	if errors.Is(err, fs.ErrNotExist) {
		return runtime.Info{}, fmt.Errorf("capsule %s: %w", id, runtime.ErrNotFound)
	}
	if err != nil {
		return runtime.Info{}, err
	}
	return d.info(ctx, r), nil
}

func (d *Driver) info(ctx context.Context, r record) runtime.Info {
	info := runtime.Info{ID: r.ID, State: runtime.StateStopped, StartedAt: r.StartedAt}
	if !alive(r) {
		return info
	}
	info.State = runtime.StateRunning
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := d.client(r).GetInstanceInfo(ctx)
	switch {
	case err != nil:
		// The process runs; its API not answering is reported as is.
		d.log.Warn("asking a VM its state", "capsule_id", r.ID, "err", err)
	case st.Payload != nil && st.Payload.State != nil && *st.Payload.State == models.InstanceInfoStatePaused:
		info.State = runtime.StateFrozen
	}
	return info
}

// List implements runtime.Driver from the records, so an agent started
// again finds the VMs an earlier one started.
func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) {
	recs, err := d.records()
	if err != nil {
		return nil, err
	}
	infos := make([]runtime.Info, 0, len(recs))
	for _, r := range recs {
		infos = append(infos, d.info(ctx, r))
	}
	return infos, nil
}

// Destroy implements runtime.Driver: kill the VM's process, remove its
// root (disk, socket, saved state being loaded), its jail and its record.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	r, err := d.readRecord(id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destroying capsule %s: %w", id, err)
	}
	if err := d.remove(r); err != nil {
		return fmt.Errorf("destroying capsule %s: %w", id, err)
	}
	return nil
}

// remove stops r's process and removes every file the driver made for it.
func (d *Driver) remove(r record) error {
	if err := kill(r, 10*time.Second); err != nil {
		return err
	}
	var errs []error
	for _, f := range []string{diskFile, socketFile, memFile, mergingFile, vmstateFile} {
		if err := os.Remove(filepath.Join(r.Root, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if r.Jail != "" {
		if err := os.RemoveAll(r.Jail); err != nil {
			errs = append(errs, err)
		}
		removeJailCgroups(r.ID)
	}
	if err := os.Remove(d.recordPath(r.ID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeJailCgroups removes the cgroups the jailer made for VM id
// (firecracker/<id> under the unified hierarchy or each v1 controller);
// they are empty once its process is gone.
func removeJailCgroups(id string) {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/firecracker/" + id)
	dirs = append(dirs, "/sys/fs/cgroup/firecracker/"+id)
	for _, dir := range dirs {
		_ = os.Remove(dir)
	}
}

// Checkpoint implements runtime.Checkpointer: pause the VM, take a full
// snapshot (memory and VM state) and copy its disk, all into imageDir and
// synced. The VM stays paused; on error it is resumed.
func (d *Driver) Checkpoint(ctx context.Context, id, imageDir string) error {
	r, err := d.readRecord(id)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !alive(r)) {
		return fmt.Errorf("checkpointing capsule %s: %w", id, runtime.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("checkpointing capsule %s: %w", id, err)
	}
	c := d.client(r)
	if _, err := c.PatchVM(ctx, &models.VM{State: ptr(models.VMStatePaused)}); err != nil {
		return fmt.Errorf("checkpointing capsule %s: pausing: %w", id, err)
	}
	if err := d.save(ctx, c, r, imageDir); err != nil {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if terr := d.Thaw(tctx, id); terr != nil {
			d.log.Error("resuming a VM after a failed checkpoint", "capsule_id", id, "err", terr)
		}
		return fmt.Errorf("checkpointing capsule %s: %w", id, err)
	}
	return nil
}

// Thaw implements runtime.Checkpointer.
func (d *Driver) Thaw(ctx context.Context, id string) error {
	r, err := d.readRecord(id)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !alive(r)) {
		return fmt.Errorf("thawing capsule %s: %w", id, runtime.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("thawing capsule %s: %w", id, err)
	}
	if _, err := d.client(r).PatchVM(ctx, &models.VM{State: ptr(models.VMStateResumed)}); err != nil {
		// Resuming a VM that runs already has the outcome asked for.
		if d.info(ctx, r).State == runtime.StateRunning {
			return nil
		}
		return fmt.Errorf("thawing capsule %s: %w", id, err)
	}
	return nil
}
