// Package process runs and tracks the processes that envd starts: it captures
// their output into bounded replay logs that any number of callers can follow,
// feeds their stdin or PTY, signals them, and collects every exit status with
// a single reaper, which is what lets envd run as PID 1 (see Table.Run).
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/envd/account"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// Errors returned (wrapped) by the Table. The service maps them to RPC codes.
var (
	ErrInvalid  = errors.New("invalid argument")
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrState    = errors.New("wrong process state")
)

// Defaults are the settings that /init provides for every process.
type Defaults struct {
	User    string
	Workdir string
	Env     map[string]string
}

// Options configure a Table. Zero values take the documented defaults.
type Options struct {
	Logger *slog.Logger
	// BufferSize is the replay buffer kept per process (default 1 MiB).
	BufferSize int
	// KeepFinished is how long a finished process stays reachable (default 10 minutes).
	KeepFinished time.Duration
	// MaxFinished bounds how many finished processes are kept (default 256).
	MaxFinished int
	// MaxFinishedBytes bounds the output kept for finished processes, all
	// together (default 64 MiB); the oldest are forgotten first.
	MaxFinishedBytes int
	// Defaults returns the current defaults; nil means none.
	Defaults func() Defaults
	// Cgroup, when set, is the pids cgroup processes start in, so that
	// they and what they start count against its limit while envd
	// itself does not (see sysinit.ProcessCgroup).
	Cgroup Cgroup
}

// Cgroup names the v1 tasks files of the cgroup processes start in and of
// envd's own.
type Cgroup struct {
	Tasks, Own string
}

// DefaultPath is the PATH of processes whose environment sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// outputGrace is how long after a process exits its output is still read, in
// case a child it left behind keeps the pipes open.
const outputGrace = 2 * time.Second

// Table is the set of processes envd runs. It is safe for concurrent use.
type Table struct {
	opts Options
	log  *slog.Logger

	// forkMu is held across starting a child and registering its pid, by
	// the reaper from wait4 until the status is recorded, and by Proc.Signal:
	// so a status is never collected for a pid the table does not know yet,
	// and a pid is never signalled after wait4 freed it for reuse.
	forkMu sync.Mutex

	mu       sync.Mutex
	procs    map[int]*Proc
	tags     map[string]*Proc
	finished []*Proc // oldest first
}

// NewTable returns an empty table. Call Run to start reaping.
func NewTable(opts Options) *Table {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = 1 << 20
	}
	if opts.KeepFinished <= 0 {
		opts.KeepFinished = 10 * time.Minute
	}
	if opts.MaxFinished <= 0 {
		opts.MaxFinished = 256
	}
	if opts.MaxFinishedBytes <= 0 {
		opts.MaxFinishedBytes = 64 << 20
	}
	if opts.Defaults == nil {
		opts.Defaults = func() Defaults { return Defaults{} }
	}
	return &Table{
		opts:  opts,
		log:   opts.Logger,
		procs: make(map[int]*Proc),
		tags:  make(map[string]*Proc),
	}
}

// Proc is one process started by envd. It is safe for concurrent use.
type Proc struct {
	t    *Table
	pid  int
	tag  string
	cmd  string
	args []string
	tty  *os.File // PTY master, nil without a PTY
	log  *outlog

	stdinMu sync.Mutex // serializes writes to stdin
	stdin   *os.File   // pipe or PTY master; nil when closed or absent

	exitCh chan struct{} // closed by the reaper

	mu         sync.Mutex
	reaped     bool
	status     unix.WaitStatus
	end        *envdv1.EndEvent
	finishedAt time.Time
}

// Pid returns the process id.
func (p *Proc) Pid() int { return p.pid }

// Tag returns the caller's tag.
func (p *Proc) Tag() string { return p.tag }

// Run reaps children until ctx ends: on every SIGCHLD (and once a second, in
// case signals were coalesced) it collects all exited children with wait4 and
// hands each status to the process it belongs to. Statuses of children envd
// did not start (orphans reparented to PID 1) are discarded, which is the
// reaping an init must do. It also forgets finished processes once they are
// too old or too many.
func (t *Table) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t.reap()
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
			t.prune(time.Now())
		}
	}
}

func (t *Table) reap() {
	t.forkMu.Lock()
	defer t.forkMu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		t.mu.Lock()
		p := t.procs[pid]
		t.mu.Unlock()
		if p == nil || !p.markReaped(ws) {
			t.log.Debug("reaped orphan", "pid", pid, "status", int(ws))
		}
	}
}

// reapedYet reports whether the reaper has collected p's exit status.
func (p *Proc) reapedYet() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reaped
}

// markReaped records the exit status, reporting whether p was still running.
func (p *Proc) markReaped(ws unix.WaitStatus) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return false
	}
	p.reaped, p.status = true, ws
	close(p.exitCh)
	return true
}

func (t *Table) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kept := 0
	for _, p := range t.finished {
		kept += p.log.retained()
	}
	n := 0
	for n < len(t.finished) {
		p := t.finished[n]
		if now.Sub(p.finishedAt) < t.opts.KeepFinished && len(t.finished)-n <= t.opts.MaxFinished && kept <= t.opts.MaxFinishedBytes {
			break
		}
		kept -= p.log.retained()
		t.forget(p)
		n++
	}
	if n > 0 {
		t.finished = slices.Delete(t.finished, 0, n)
	}
}

// forget removes p from the indexes; t.mu must be held.
func (t *Table) forget(p *Proc) {
	if t.procs[p.pid] == p {
		delete(t.procs, p.pid)
	}
	if p.tag != "" && t.tags[p.tag] == p {
		delete(t.tags, p.tag)
	}
}

// Find returns the process named by sel.
func (t *Table) Find(sel *envdv1.ProcessSelector) (*Proc, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch s := sel.GetSelector().(type) {
	case *envdv1.ProcessSelector_Pid:
		if p := t.procs[int(s.Pid)]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("process with pid %d: %w", s.Pid, ErrNotFound)
	case *envdv1.ProcessSelector_Tag:
		if p := t.tags[s.Tag]; p != nil {
			return p, nil
		}
		return nil, fmt.Errorf("process with tag %q: %w", s.Tag, ErrNotFound)
	default:
		return nil, fmt.Errorf("process selector: %w: give a pid or a tag", ErrInvalid)
	}
}

// List describes every known process, ordered by pid.
func (t *Table) List() []*envdv1.ProcessInfo {
	t.mu.Lock()
	procs := make([]*Proc, 0, len(t.procs))
	for _, p := range t.procs {
		procs = append(procs, p)
	}
	t.mu.Unlock()
	slices.SortFunc(procs, func(a, b *Proc) int { return a.pid - b.pid })
	out := make([]*envdv1.ProcessInfo, 0, len(procs))
	for _, p := range procs {
		info := &envdv1.ProcessInfo{Pid: uint32(p.pid), Tag: p.tag, Cmd: p.cmd, Args: p.args, Pty: p.tty != nil}
		p.mu.Lock()
		if p.end == nil {
			info.Running = true
		} else {
			info.ExitCode, info.Signal = p.end.ExitCode, p.end.Signal
		}
		p.mu.Unlock()
		out = append(out, info)
	}
	return out
}

// Running returns the processes that have not ended.
func (t *Table) Running() []*Proc {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Proc
	for _, p := range t.procs {
		if !p.reapedYet() {
			out = append(out, p)
		}
	}
	return out
}

// Start starts the process described by req.
func (t *Table) Start(req *envdv1.StartRequest) (*Proc, error) {
	cfg := req.GetProcess()
	if cfg == nil || (cfg.GetCmd() == "" && cfg.GetShell() == "" && !cfg.GetLoginShell()) {
		return nil, fmt.Errorf("starting process: %w: missing command", ErrInvalid)
	}
	if cfg.GetCmd() != "" && cfg.GetShell() != "" {
		return nil, fmt.Errorf("starting process: %w: give cmd or shell, not both", ErrInvalid)
	}
	if ptyReq := req.GetPty(); ptyReq != nil {
		if err := checkSize(ptyReq); err != nil {
			return nil, fmt.Errorf("starting process: %w", err)
		}
	}
	defaults := t.opts.Defaults()
	acct, err := account.Resolve(cfg.GetUser(), defaults.User)
	if errors.Is(err, account.ErrUnknown) {
		return nil, fmt.Errorf("starting process: %w: %w", ErrInvalid, err)
	}
	if err != nil {
		return nil, fmt.Errorf("starting process: %w", err)
	}

	env := map[string]string{"PATH": DefaultPath}
	for k, v := range acct.Env() {
		env[k] = v
	}
	if req.GetPty() != nil {
		env["TERM"] = "xterm-256color"
	}
	for k, v := range defaults.Env {
		env[k] = v
	}
	if err := CheckEnv(cfg.GetEnvs()); err != nil {
		return nil, fmt.Errorf("starting process: %w", err)
	}
	for k, v := range cfg.GetEnvs() {
		env[k] = v
	}

	cwd, err := workdir(cfg.GetCwd(), defaults.Workdir, acct)
	if err != nil {
		return nil, fmt.Errorf("starting process: %w", err)
	}

	name, args := cfg.GetCmd(), cfg.GetArgs()
	switch {
	case cfg.GetLoginShell():
		name, args = acct.LoginShell(), []string{"-l"}
		if _, set := cfg.GetEnvs()["SHELL"]; !set {
			env["SHELL"] = name
		}
	case cfg.GetShell() != "":
		name, args = "/bin/sh", []string{"-c", cfg.GetShell()}
	}
	path, err := lookPath(name, env["PATH"])
	if err != nil {
		return nil, fmt.Errorf("starting process: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        append([]string{name}, args...),
		Env:         envList(env),
		Dir:         cwd,
		SysProcAttr: &syscall.SysProcAttr{Credential: acct.Credential()},
	}
	p := &Proc{
		t:      t,
		tag:    req.GetTag(),
		cmd:    name,
		args:   args,
		log:    newOutlog(t.opts.BufferSize),
		exitCh: make(chan struct{}),
	}
	var readers []*os.File
	var readerKinds []stream
	var childEnds []*os.File
	closeAll := func() {
		for _, f := range append(readers, childEnds...) {
			_ = f.Close()
		}
		if p.stdin != nil {
			_ = p.stdin.Close()
		}
	}
	if ptyReq := req.GetPty(); ptyReq != nil {
		master, tty, err := pty.Open()
		if err != nil {
			return nil, fmt.Errorf("starting process: opening pty: %w", err)
		}
		if err := pty.Setsize(master, &pty.Winsize{Rows: uint16(ptyReq.Rows), Cols: uint16(ptyReq.Cols)}); err != nil {
			_ = master.Close()
			_ = tty.Close()
			return nil, fmt.Errorf("starting process: sizing pty: %w", err)
		}
		p.tty, p.stdin = master, master
		readers, readerKinds = []*os.File{master}, []stream{streamPty}
		childEnds = []*os.File{tty}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
	} else {
		cmd.SysProcAttr.Setpgid = true
		for _, kind := range []stream{streamStdout, streamStderr} {
			r, w, err := os.Pipe()
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("starting process: creating pipe: %w", err)
			}
			readers, readerKinds = append(readers, r), append(readerKinds, kind)
			childEnds = append(childEnds, w)
		}
		cmd.Stdout, cmd.Stderr = childEnds[0], childEnds[1]
		if req.GetStdin() {
			r, w, err := os.Pipe()
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("starting process: creating pipe: %w", err)
			}
			childEnds = append(childEnds, r)
			p.stdin = w
			cmd.Stdin = r
		}
	}

	t.forkMu.Lock()
	if p.tag != "" {
		t.mu.Lock()
		old := t.tags[p.tag]
		t.mu.Unlock()
		if old != nil && !old.ended() {
			t.forkMu.Unlock()
			closeAll()
			return nil, fmt.Errorf("starting process: %w: a running process has tag %q", ErrExists, p.tag)
		}
	}
	err = t.startInCgroup(cmd)
	if err == nil {
		p.pid = cmd.Process.Pid
		t.mu.Lock()
		t.procs[p.pid] = p
		if p.tag != "" {
			t.tags[p.tag] = p
		}
		t.mu.Unlock()
	}
	t.forkMu.Unlock()
	for _, f := range childEnds {
		_ = f.Close()
	}
	childEnds = nil // closed: closeAll must not close them again
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("starting process %s: %w", name, err)
	}
	// The reaper, not cmd.Wait, collects the exit status.
	_ = cmd.Process.Release()
	t.log.Info("process started", "pid", p.pid, "tag", p.tag, "cmd", name, "user", acct.Name, "pty", p.tty != nil)

	var wg sync.WaitGroup
	for i, r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.pump(r, readerKinds[i])
		}()
	}
	go t.finish(p, readers, &wg)
	return p, nil
}

// ended reports whether p's end event has been recorded.
func (p *Proc) ended() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.end != nil
}

// pump copies one output of p into its log until EOF.
func (p *Proc) pump(r *os.File, kind stream) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.log.append(kind, buf[:n])
		}
		if err != nil {
			return // EOF, EIO from a PTY whose other side closed, or closed by finish
		}
	}
}

// finish waits for p to exit and its output to drain, then records its end.
func (t *Table) finish(p *Proc, readers []*os.File, wg *sync.WaitGroup) {
	<-p.exitCh
	drained := make(chan struct{})
	go func() {
		wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(outputGrace):
		// A child the process left behind holds the output open: stop
		// reading so that the end is not delayed forever.
		for _, r := range readers {
			if err := r.SetReadDeadline(time.Now()); err != nil {
				_ = r.Close()
			}
		}
		<-drained
	}
	for _, r := range readers {
		_ = r.Close()
	}
	p.stdinMu.Lock()
	if p.stdin != nil && p.stdin != p.tty {
		_ = p.stdin.Close()
	}
	p.stdin = nil
	p.stdinMu.Unlock()

	p.mu.Lock()
	ws := p.status
	end := &envdv1.EndEvent{}
	switch {
	case ws.Exited():
		end.Exited, end.ExitCode = true, int32(ws.ExitStatus())
	case ws.Signaled():
		end.ExitCode, end.Signal = -1, unix.SignalName(ws.Signal())
	default:
		end.ExitCode, end.Error = -1, fmt.Sprintf("unexpected wait status %#x", int(ws))
	}
	p.end = end
	p.finishedAt = time.Now()
	p.mu.Unlock()
	p.log.finish(end)

	t.mu.Lock()
	t.finished = append(t.finished, p)
	t.mu.Unlock()
	t.prune(time.Now())
	t.log.Info("process ended", "pid", p.pid, "tag", p.tag, "exit_code", end.ExitCode, "signal", end.Signal)
}

// Write writes data to p's stdin or PTY, giving up when ctx ends.
func (p *Proc) Write(ctx context.Context, data []byte) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return fmt.Errorf("writing input: %w: stdin is not open", ErrState)
	}
	_ = p.stdin.SetWriteDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { _ = p.stdin.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := p.stdin.Write(data); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("writing input: %w", ctx.Err())
		}
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("writing input: %w: stdin is closed", ErrState)
		}
		return fmt.Errorf("writing input: %w", err)
	}
	return nil
}

// CloseStdin closes p's stdin; with a PTY it types end-of-file instead.
func (p *Proc) CloseStdin() error {
	if p.tty != nil {
		return p.Write(context.Background(), []byte{4})
	}
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return fmt.Errorf("closing stdin: %w: stdin is not open", ErrState)
	}
	err := p.stdin.Close()
	p.stdin = nil
	if err != nil {
		return fmt.Errorf("closing stdin: %w", err)
	}
	return nil
}

// Signal sends sig to p's process group (p itself if it has none).
func (p *Proc) Signal(sig syscall.Signal) error {
	// Under forkMu the reaper is not between wait4 and markReaped, so a pid
	// not marked reaped has not been freed and cannot have been reused.
	p.t.forkMu.Lock()
	defer p.t.forkMu.Unlock()
	if p.reapedYet() {
		return fmt.Errorf("sending signal: %w: process has ended", ErrState)
	}
	if err := unix.Kill(-p.pid, sig); err != nil {
		if err := unix.Kill(p.pid, sig); err != nil {
			return fmt.Errorf("sending signal: %w", err)
		}
	}
	return nil
}

// Resize changes p's PTY size.
func (p *Proc) Resize(size *envdv1.Pty) error {
	if p.tty == nil {
		return fmt.Errorf("resizing: %w: process has no pty", ErrState)
	}
	if err := checkSize(size); err != nil {
		return fmt.Errorf("resizing: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reaped {
		return fmt.Errorf("resizing: %w: process has ended", ErrState)
	}
	if err := pty.Setsize(p.tty, &pty.Winsize{Rows: uint16(size.Rows), Cols: uint16(size.Cols)}); err != nil {
		return fmt.Errorf("resizing: %w", err)
	}
	return nil
}

// maxPtySide bounds rows and columns of a PTY.
const maxPtySide = 10000

func checkSize(size *envdv1.Pty) error {
	if size == nil || size.Rows == 0 || size.Cols == 0 || size.Rows > maxPtySide || size.Cols > maxPtySide {
		return fmt.Errorf("%w: pty size %dx%d (rows and cols must be 1..%d)", ErrInvalid, size.GetRows(), size.GetCols(), maxPtySide)
	}
	return nil
}

// workdir picks and checks the working directory of a process.
func workdir(cwd, def string, acct *account.Account) (string, error) {
	if cwd == "" {
		cwd = def
		if cwd == "" {
			cwd = acct.Home
		}
		if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
			cwd = "/"
		}
	}
	if !filepath.IsAbs(cwd) {
		return "", fmt.Errorf("%w: working directory %q is not absolute", ErrInvalid, cwd)
	}
	cwd = filepath.Clean(cwd)
	fi, err := os.Stat(cwd)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("working directory %s: %w", cwd, ErrNotFound)
		}
		return "", fmt.Errorf("working directory: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%w: working directory %s is not a directory", ErrInvalid, cwd)
	}
	if err := acct.Check(cwd, account.Execute); err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	return cwd, nil
}

// lookPath finds an executable the way a shell would, using the process's
// own PATH rather than envd's.
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			return "", fmt.Errorf("%w: command %q must be absolute or a bare name", ErrInvalid, name)
		}
		if err := executable(name); err != nil {
			return "", err
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q in PATH: %w", name, ErrNotFound)
}

func executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("executable %s: %w", path, ErrNotFound)
		}
		return fmt.Errorf("executable: %w", err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("executable %s: %w", path, os.ErrPermission)
	}
	return nil
}

// CheckEnv returns an error wrapping ErrInvalid for the first variable that
// cannot be passed to a process: an empty name, or a name with '=' or NUL, or
// a value with NUL.
func CheckEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") {
			return fmt.Errorf("%w: bad environment variable %q", ErrInvalid, k)
		}
	}
	return nil
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// startInCgroup starts cmd in the cgroup of Options.Cgroup, when there is
// one: the capsule's kernel offers no clone into a cgroup, so the thread
// that forks is moved into it for the fork (cgroup v1 moves single
// threads through tasks) and back after, and the child is born inside. A
// move after the fork would let what the child forks at once escape.
// Root inside the capsule may still move its processes out: the limit
// keeps runaway programs from crashing the runtime; it is no wall against
// the capsule's own root, who can only hurt the capsule.
func (t *Table) startInCgroup(cmd *exec.Cmd) error {
	cg := t.opts.Cgroup
	if cg.Tasks == "" {
		return cmd.Start()
	}
	runtime.LockOSThread()
	tid := []byte(strconv.Itoa(unix.Gettid()))
	if err := os.WriteFile(cg.Tasks, tid, 0); err != nil {
		runtime.UnlockOSThread()
		t.log.Warn("entering the capsule's pids cgroup", "err", err)
		return cmd.Start()
	}
	err := cmd.Start()
	if berr := os.WriteFile(cg.Own, tid, 0); berr != nil {
		// Left locked, the thread ends with its goroutine instead of
		// starting more of envd's work inside the limit.
		t.log.Warn("leaving the capsule's pids cgroup", "err", berr)
		return err
	}
	runtime.UnlockOSThread()
	return err
}
