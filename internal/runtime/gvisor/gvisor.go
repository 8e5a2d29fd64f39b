// Package gvisor is the runtime driver for gVisor's runsc: one OCI bundle per
// capsule, the template's root filesystem shared read-only under a
// per-capsule writable overlay, envd as the capsule's init, the capsule's
// network namespace handed to runsc's netstack. Every method shells out to
// runsc with the driver's own state root, so capsules survive an agent
// restart and List finds them again.
package gvisor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wrenn-dev/wrenn/internal/durable"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Config configures the driver.
type Config struct {
	// Runsc is the runsc binary.
	Runsc string
	// StateDir is runsc's --root: where it keeps its state of every
	// capsule ($WRENN_DIR/runsc).
	StateDir string
	// Platform is runsc's --platform ("" = runsc's default, systrap).
	Platform string
	// ConsoleBytes bounds what the host keeps of a capsule's stdout and
	// stderr (console.log plus console.log.1); 0 means
	// DefaultConsoleBytes.
	ConsoleBytes int64
	// PidsLimit bounds the host tasks (processes and threads) of one
	// capsule: its sandbox, its gofer and the platform's stub processes,
	// which grow with the processes inside. runsc writes it to the pids.max
	// of the capsule's cgroup; 0 means DefaultPidsLimit.
	PidsLimit int64
	// NoFile is RLIMIT_NOFILE (soft and hard) of the capsule's first
	// process, which its children inherit; 0 means DefaultNoFile.
	NoFile uint64
	// HostFDs bounds the host file descriptors the sandbox (sentry) and
	// its gofer may each hold open (runsc --fdlimit), so that a capsule
	// opening files without end cannot take the host's; 0 means
	// DefaultHostFDs.
	HostFDs int
	// Logger receives one line per lifecycle event.
	Logger *slog.Logger
}

// Driver runs capsules with runsc. It is safe for concurrent use on
// different capsules.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// drainers copy each capsule's console FIFO into its bounded log.
	drainers map[string]*drainer
}

// New checks cfg and returns a driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Runsc == "" {
		return nil, errors.New("gvisor: runsc path is required")
	}
	path, err := exec.LookPath(cfg.Runsc)
	if err != nil {
		return nil, fmt.Errorf("gvisor: finding runsc (build it with `make runsc`): %w", err)
	}
	cfg.Runsc = path
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("gvisor: state dir %q must be absolute", cfg.StateDir)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("gvisor: creating state dir: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ConsoleBytes < 0 {
		return nil, fmt.Errorf("gvisor: console bound %d must not be negative", cfg.ConsoleBytes)
	}
	if cfg.PidsLimit == 0 {
		cfg.PidsLimit = DefaultPidsLimit
	}
	if cfg.PidsLimit < MinPidsLimit {
		return nil, fmt.Errorf("gvisor: pids limit %d is below %d, the tasks an idle capsule needs", cfg.PidsLimit, MinPidsLimit)
	}
	if cfg.NoFile == 0 {
		cfg.NoFile = DefaultNoFile
	}
	if cfg.NoFile < MinNoFile || cfg.NoFile > MaxNoFile {
		return nil, fmt.Errorf("gvisor: open files limit %d is outside %d..%d", cfg.NoFile, MinNoFile, MaxNoFile)
	}
	if cfg.HostFDs == 0 {
		cfg.HostFDs = DefaultHostFDs
	}
	if cfg.HostFDs < MinHostFDs || cfg.HostFDs > MaxNoFile {
		return nil, fmt.Errorf("gvisor: host file descriptor limit %d is outside %d..%d", cfg.HostFDs, MinHostFDs, MaxNoFile)
	}
	return &Driver{cfg: cfg, log: log, drainers: map[string]*drainer{}}, nil
}

// Per-capsule limits when Config leaves them 0, and the bounds New accepts.
const (
	// DefaultPidsLimit leaves room for a few hundred processes in a
	// capsule: each one costs the sandbox a stub process of a few
	// threads on the host.
	DefaultPidsLimit = 1024
	// capsuleTaskHeadroom is the host tasks a capsule's sandbox, gofer and
	// envd keep beyond those of its processes (an idle one uses about 25).
	capsuleTaskHeadroom = 64
	// MinPidsLimit is about what an idle capsule's sandbox and gofer
	// need (the sentry's threads alone are a few dozen).
	MinPidsLimit = 128
	// DefaultNoFile is the open files limit of a capsule's processes.
	DefaultNoFile = 65536
	// MinNoFile and MaxNoFile bound Config.NoFile; MaxNoFile is gVisor's
	// own ceiling (kernel.MaxFdLimit).
	MinNoFile = 64
	MaxNoFile = 1 << 20
	// DefaultHostFDs is the host file descriptors a capsule's sentry and
	// gofer may each hold; MinHostFDs is the fewest Config.HostFDs takes
	// (an idle sandbox holds a few hundred).
	DefaultHostFDs = 16384
	MinHostFDs     = 1024
)

// Name implements runtime.Driver.
func (d *Driver) Name() string { return "gvisor" }

// Files of a capsule the driver keeps in its directory.
const (
	bundleDir   = "bundle"      // the OCI bundle (config.json)
	overlayDir  = "overlay"     // runsc's file-backed writable layer
	consoleFile = "console.log" // envd's and runsc's stdout/stderr
)

// Create implements runtime.Driver.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (runtime.Info, error) {
	return d.launch(ctx, spec, "run", "--detach")
}

// Restore implements runtime.Checkpointer: the same sandbox as Create, but
// runsc loads the saved kernel instead of booting envd.
func (d *Driver) Restore(ctx context.Context, spec runtime.Spec, imageDir string) (runtime.Info, error) {
	if st, err := os.Stat(filepath.Join(imageDir, checkpointFile)); err != nil || !st.Mode().IsRegular() {
		return runtime.Info{}, fmt.Errorf("restoring capsule %s: no saved state in %s", spec.ID, imageDir)
	}
	return d.launch(ctx, spec, "restore", "--detach", "--image-path", imageDir)
}

// launch writes spec's bundle and runs `runsc <subcommand...>` for it.
func (d *Driver) launch(ctx context.Context, spec runtime.Spec, subcommand ...string) (runtime.Info, error) {
	verb := subcommand[0]
	if err := validate(spec); err != nil {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
	}
	if d.known(spec.ID) {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, runtime.ErrExists)
	}
	bundle := filepath.Join(spec.Dir, bundleDir)
	overlay := filepath.Join(spec.Dir, overlayDir)
	for _, dir := range []string{bundle, overlay} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
		}
	}
	b, err := json.MarshalIndent(d.bundleSpec(spec), "", "  ")
	if err != nil {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: encoding bundle: %w", verb, spec.ID, err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: writing bundle: %w", verb, spec.ID, err)
	}
	// A detached sandbox inherits the stdout/stderr of the runsc that
	// started it. They go to a FIFO that the sandbox itself also holds
	// open for reading, so nobody has to drain it for the capsule's whole
	// life; the driver drains it into a bounded log while it runs.
	console, err := openConsole(spec.Dir)
	if err != nil {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
	}
	defer func() { _ = console.Close() }()
	if err := d.drain(spec.ID, spec.Dir); err != nil {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
	}

	args := d.globalFlags()
	network := "sandbox"
	if spec.Network.NetnsPath == "" {
		network = "none"
	}
	// --allow-suid: setuid programs (sudo, su) raise a process's ids
	// inside the capsule, as on any Linux machine; runsc ignores the bits
	// without it. Capsule root is the sentry's root, not the host's, and
	// is available through the API anyway.
	args = append(args, "--network="+network,
		fmt.Sprintf("--overlay2=root:dir=%s,size=%dm", overlay, spec.DiskMB), "--allow-suid",
		fmt.Sprintf("--fdlimit=%d", d.cfg.HostFDs))
	args = append(args, subcommand...)
	args = append(args, "--bundle", bundle, spec.ID)
	if err := ctx.Err(); err != nil {
		return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
	}
	// Not CommandContext: killing runsc half-way leaves the sandbox and
	// gofer it already started running, with no state to find them by.
	// It takes a fraction of a second; a caller that gave up meanwhile
	// gets the capsule destroyed once it is complete.
	cmd := exec.Command(d.cfg.Runsc, args...)
	cmd.Stdin = nil
	cmd.Stdout = console
	cmd.Stderr = console
	// runsc must not die with the agent's process group on Ctrl-C: the
	// capsule outlives the agent.
	cmd.SysProcAttr = detachedProcAttr()
	start := time.Now()
	if err := cmd.Run(); err != nil {
		// The console's last writer is gone with the sandbox once
		// cleanupFailed is done; what it wrote is in console.log then.
		_ = console.Close()
		d.cleanupFailed(spec.ID)
		select {
		case <-d.drainerDone(spec.ID):
		case <-time.After(2 * time.Second):
		}
		return runtime.Info{}, fmt.Errorf("%s capsule %s: runsc %s: %w%s", verb, spec.ID, verb, err, d.consoleTail(spec.Dir))
	}
	if err := ctx.Err(); err != nil {
		d.cleanupFailed(spec.ID)
		return runtime.Info{}, fmt.Errorf("%s capsule %s: %w", verb, spec.ID, err)
	}
	// runsc returns once the container runs; asking runsc again would cost
	// another process start on the capsule's critical path.
	d.log.Debug("capsule started", "capsule_id", spec.ID, "how", verb, "took", time.Since(start))
	return runtime.Info{ID: spec.ID, State: runtime.StateRunning, StartedAt: start}, nil
}

// checkpointFile is the file of a saved state that runsc writes last
// among the ones it needs (the kernel state; pages*.img hold memory).
const checkpointFile = "checkpoint.img"

// Checkpoint implements runtime.Checkpointer. The capsule is frozen first
// and the checkpoint taken with --leave-running, which keeps the sandbox
// alive (and frozen) afterwards: a plain checkpoint leaves a sandbox that
// runsc still calls running but that no longer answers, so an agent that
// died half-way could neither resume it nor trust what was saved.
func (d *Driver) Checkpoint(ctx context.Context, id, imageDir string) error {
	if !d.known(id) {
		return fmt.Errorf("checkpointing capsule %s: %w", id, runtime.ErrNotFound)
	}
	if _, err := d.runsc(ctx, "pause", id); err != nil {
		return fmt.Errorf("checkpointing capsule %s: %w", id, err)
	}
	err := func() error {
		if _, err := d.runsc(ctx, "checkpoint", "--leave-running", "--image-path", imageDir, id); err != nil {
			return err
		}
		return syncTree(imageDir)
	}()
	if err != nil {
		// Not ctx: the capsule must not stay frozen because the caller gave up.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if terr := d.Thaw(tctx, id); terr != nil {
			d.log.Error("thawing a capsule after a failed checkpoint", "capsule_id", id, "err", terr)
		}
		return fmt.Errorf("checkpointing capsule %s: %w", id, err)
	}
	return nil
}

// Thaw implements runtime.Checkpointer.
func (d *Driver) Thaw(ctx context.Context, id string) error {
	if _, err := d.runsc(ctx, "resume", id); err != nil {
		// Thawing a capsule that runs already (someone thawed it first)
		// has the outcome asked for.
		if st, serr := d.state(ctx, id); serr == nil && st.info().State == runtime.StateRunning {
			return nil
		}
		return fmt.Errorf("thawing capsule %s: %w", id, err)
	}
	return nil
}

// syncTree fsyncs every regular file directly in dir, then dir itself and
// its parent, so that the saved state and its directory entry survive a
// power loss.
func syncTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := durable.Sync(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := durable.Sync(dir); err != nil {
		return err
	}
	return durable.Sync(filepath.Dir(dir))
}

// validate reports what makes spec unusable.
func validate(spec runtime.Spec) error {
	switch {
	case !validID(spec.ID):
		return fmt.Errorf("invalid capsule id %q", spec.ID)
	case !filepath.IsAbs(spec.Dir):
		return fmt.Errorf("capsule dir %q is not absolute", spec.Dir)
	case spec.VCPUs < 1 || spec.MemoryMB < 1 || spec.DiskMB < 1:
		return fmt.Errorf("vcpus, memory and disk must be positive (got %d, %d MB, %d MB)", spec.VCPUs, spec.MemoryMB, spec.DiskMB)
	}
	return usableTemplate(spec.Image)
}

func errOr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// globalFlags are the runsc flags every subcommand gets.
func (d *Driver) globalFlags() []string {
	args := []string{"--root", d.cfg.StateDir}
	if d.cfg.Platform != "" {
		args = append(args, "--platform", d.cfg.Platform)
	}
	return args
}

// runsc runs a runsc subcommand and returns its stdout.
func (d *Driver) runsc(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, d.cfg.Runsc, append(d.globalFlags(), args...)...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return nil, fmt.Errorf("runsc %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// consoleTail returns the end of a capsule's console log, for errors.
func (d *Driver) consoleTail(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, consoleFile))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 1000 {
		b = b[len(b)-1000:]
	}
	return ": " + strings.TrimSpace(string(b))
}

// cleanupFailed removes what a failed Create left in runsc's state.
func (d *Driver) cleanupFailed(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Destroy(ctx, id); err != nil {
		d.log.Warn("cleaning up after a failed start", "capsule_id", id, "err", err)
	}
}

// containerState is the part of `runsc state` and `runsc list` output the
// driver reads.
type containerState struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Bundle string `json:"bundle"`
}

// info turns runsc's view into the driver's. runsc does not report when a
// container started; the bundle's config.json is written just before, so
// its modification time stands in.
func (c containerState) info() runtime.Info {
	st := runtime.StateStopped
	switch c.Status {
	case "running", "created":
		st = runtime.StateRunning
	case "paused":
		st = runtime.StateFrozen
	}
	info := runtime.Info{ID: c.ID, State: st}
	if fi, err := os.Stat(filepath.Join(c.Bundle, "config.json")); err == nil {
		info.StartedAt = fi.ModTime()
	}
	return info
}

// state asks runsc about one capsule.
func (d *Driver) state(ctx context.Context, id string) (containerState, error) {
	out, err := d.runsc(ctx, "state", id)
	if err != nil {
		if !d.known(id) {
			return containerState{}, fmt.Errorf("capsule %s: %w", id, runtime.ErrNotFound)
		}
		return containerState{}, err
	}
	var st containerState
	if err := json.Unmarshal(out, &st); err != nil {
		return containerState{}, fmt.Errorf("reading runsc state of %s: %w", id, err)
	}
	return st, nil
}

// known reports whether runsc has state for id: it keeps
// "<sandbox id>_sandbox:<container id>.state" files under its root, and a
// capsule is a sandbox of one container with its own id. Only the .state
// file counts: the .lock file next to it is re-created by any runsc command
// that locks the container (a `runsc list` of a heartbeat) even while or
// after it is deleted, and a lock file left that way made a resume find its
// own id taken.
func (d *Driver) known(id string) bool {
	if !validID(id) {
		return false
	}
	matches, _ := filepath.Glob(filepath.Join(d.cfg.StateDir, id+"_sandbox:*.state"))
	return len(matches) > 0
}

// validID reports whether id can name a runsc container and a directory
// without escaping anything.
func validID(id string) bool {
	if id == "" || len(id) > 128 || id[0] == '.' || id[0] == '-' {
		return false
	}
	for _, r := range id {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (r < '0' || r > '9') && r != '-' && r != '_' && r != '.' {
			return false
		}
	}
	return true
}

// UsableTemplate implements runtime.Driver: gVisor boots a capsule from
// the template's rootfs/ directory, with envd in it.
func (d *Driver) UsableTemplate(dir string) error { return usableTemplate(dir) }

func usableTemplate(dir string) error {
	if st, err := os.Stat(filepath.Join(dir, "rootfs", runtime.EnvdPath)); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("template %s has no %s: %w", dir, runtime.EnvdPath, errOr(err, errors.New("not a regular file")))
	}
	return nil
}

// Info implements runtime.Driver.
func (d *Driver) Info(ctx context.Context, id string) (runtime.Info, error) {
	st, err := d.state(ctx, id)
	if err != nil {
		return runtime.Info{}, err
	}
	return st.info(), nil
}

// List implements runtime.Driver.
func (d *Driver) List(ctx context.Context) ([]runtime.Info, error) {
	out, err := d.runsc(ctx, "list", "--format=json")
	if err != nil {
		return nil, err
	}
	var states []containerState
	if err := json.Unmarshal(bytes.TrimSpace(out), &states); err != nil {
		return nil, fmt.Errorf("reading runsc list: %w", err)
	}
	infos := make([]runtime.Info, 0, len(states))
	for _, st := range states {
		info := st.info()
		// An agent started again finds its capsules here: their consoles
		// need a drainer again.
		if info.State != runtime.StateStopped && st.Bundle != "" && validID(st.ID) {
			if err := d.drain(st.ID, filepath.Dir(st.Bundle)); err != nil {
				d.log.Debug("console of a listed capsule", "capsule_id", st.ID, "err", err)
			}
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Destroy implements runtime.Driver. It also covers a capsule whose start
// an earlier agent left under way: runsc writes a capsule's state only once
// `run` or `restore` is done, so a Destroy that ran meanwhile would find
// nothing and the sandbox would start afterwards with nobody to stop it.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	if !validID(id) {
		return nil
	}
	if err := d.waitForLaunch(ctx, id); err != nil {
		return fmt.Errorf("destroying capsule %s: %w", id, err)
	}
	if d.known(id) {
		// delete --force kills the sandbox and every process in it, then
		// removes runsc's state; a kill first only makes it quicker.
		_, _ = d.runsc(ctx, "kill", id, "KILL")
		if _, err := d.runsc(ctx, "delete", "--force", id); err != nil && d.known(id) {
			return fmt.Errorf("destroying capsule %s: %w", id, err)
		}
	}
	// A runsc killed half-way through a start leaves its sandbox and gofer
	// running without any state to find them by.
	for _, p := range d.processes(id) {
		if p.stray {
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
		}
	}
	d.stopDrain(id)
	return nil
}

// waitForLaunch waits until no `runsc run` or `runsc restore` of capsule id
// is running.
func (d *Driver) waitForLaunch(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for slices.ContainsFunc(d.processes(id), func(p runscProcess) bool { return p.launch }) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for runsc to finish starting it: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// runscProcess is a host process of this driver's runsc that names a
// capsule.
type runscProcess struct {
	pid int
	// launch: a `runsc run` or `runsc restore` starting the capsule.
	launch bool
	// stray: the capsule's sandbox or gofer process.
	stray bool
}

// processes lists the runsc processes of this driver's state root that
// work on capsule id, read from /proc.
func (d *Driver) processes(id string) []runscProcess {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []runscProcess
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if args[len(args)-1] != id || !d.ownRoot(args) {
			continue
		}
		switch filepath.Base(args[0]) {
		case "runsc-sandbox", "runsc-gofer":
			out = append(out, runscProcess{pid: pid, stray: true})
		default:
			if slices.Contains(args, "run") || slices.Contains(args, "restore") {
				out = append(out, runscProcess{pid: pid, launch: true})
			}
		}
	}
	return out
}

// ownRoot reports whether a runsc command line uses this driver's --root.
func (d *Driver) ownRoot(args []string) bool {
	for i, a := range args {
		if a == "--root="+d.cfg.StateDir || (a == "--root" && i+1 < len(args) && args[i+1] == d.cfg.StateDir) {
			return true
		}
	}
	return false
}

// bundleSpec is the OCI runtime spec of a capsule.
func (d *Driver) bundleSpec(spec runtime.Spec) *specs.Spec {
	namespaces := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
	}
	if spec.Network.NetnsPath != "" {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: spec.Network.NetnsPath})
	} else {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	memory := int64(spec.MemoryMB) << 20
	period := uint64(100_000)
	quota := int64(spec.VCPUs) * int64(period)
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: spec.Hostname,
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: []string{runtime.EnvdPath},
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HOME=/root",
				// envd bounds what it starts inside (see CapsuleProcs).
				"WRENN_ENVD_MAX_PROCS=" + strconv.FormatInt(CapsuleProcs(d.cfg.PidsLimit), 10),
			},
			Cwd: "/",
			// Inside gVisor, capabilities act on the sentry's own kernel,
			// not the host's: root in a capsule may mount, change owners
			// and so on, like root on a machine of its own.
			Capabilities: &specs.LinuxCapabilities{
				Bounding: allCapabilities, Effective: allCapabilities,
				Permitted: allCapabilities,
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: d.cfg.NoFile, Soft: d.cfg.NoFile}},
		},
		Root: &specs.Root{Path: filepath.Join(spec.Image, "rootfs"), Readonly: false},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			// gVisor's own cgroup file system, where envd makes the pids
			// cgroup of the capsule's processes (CapsuleProcs).
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
		},
		Linux: &specs.Linux{
			Namespaces:  namespaces,
			CgroupsPath: "/wrenn/" + spec.ID,
			Resources: &specs.LinuxResources{
				Memory: &specs.LinuxMemory{Limit: &memory},
				CPU:    &specs.LinuxCPU{Period: &period, Quota: &quota},
				// runsc puts the sandbox and gofer processes in this
				// cgroup before they start, so every host task the
				// capsule makes (systrap stubs included) counts: a fork
				// bomb inside exhausts the capsule's pids, never the
				// host's.
				Pids: &specs.LinuxPids{Limit: d.cfg.PidsLimit},
			},
		},
	}
}

// allCapabilities are the capabilities root has inside a capsule.
var allCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
}

// CapsuleProcs is how many tasks (processes and threads) the programs in a
// capsule may have, for a host pids limit of pidsLimit: envd enforces it
// inside with a pids cgroup of gVisor's own kernel. It must stay well
// below what the host limit allows. gVisor's systrap platform gives every
// task inside host tasks of its own (about two, measured), and a sandbox
// whose host cgroup refuses one panics ("createStub: failed to get
// clone") and takes the capsule with it, where a limit inside only makes
// the forking program's fork fail with EAGAIN. And a fork refused inside
// has made its host task first (gVisor forks the address space before it
// charges the pids cgroup): a fork bomb at the limit inside keeps about
// as many again in flight. Hence a quarter of what is left once the
// sandbox's own tasks are counted: 240 for the default 1024.
func CapsuleProcs(pidsLimit int64) int64 {
	return max(16, (pidsLimit-capsuleTaskHeadroom)/4)
}
