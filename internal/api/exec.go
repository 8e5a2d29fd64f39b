package api

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/store"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// Exec limits.
const (
	defaultExecTimeout = 60 * time.Second
	maxExecTimeoutSec  = 3600
	// maxExecOutput bounds each of stdout and stderr in a foreground
	// answer, measured as JSON (a control byte counts six: "\u0001");
	// beyond it the output is dropped and the answer says
	// "truncated": true.
	maxExecOutput = 16 << 20
	// killGrace is how long a killed process gets to deliver its end
	// event before the answer is given without it.
	killGrace = 5 * time.Second
)

// processSpec says what to run; POST /exec and the first message of
// /exec/stream share it.
type processSpec struct {
	// Cmd is a shell line when Args is absent, else the program.
	Cmd string `json:"cmd"`
	// Args, when present (even empty), makes Cmd a program run directly.
	Args       []string          `json:"args"`
	TimeoutSec *int              `json:"timeout_sec"`
	Tag        string            `json:"tag"`
	Envs       map[string]string `json:"envs"`
	Cwd        string            `json:"cwd"`
	User       string            `json:"user"`
}

// config checks the spec and returns envd's form of it.
func (p processSpec) config() (*envdv1.ProcessConfig, error) {
	if strings.TrimSpace(p.Cmd) == "" {
		return nil, errorf(codeInvalid, "cmd is required: a shell line, or a program when args is given")
	}
	if strings.ContainsRune(p.Cmd, 0) {
		return nil, errorf(codeInvalid, "cmd must not contain NUL bytes")
	}
	for i, a := range p.Args {
		if strings.ContainsRune(a, 0) {
			return nil, errorf(codeInvalid, "args[%d] must not contain NUL bytes", i)
		}
	}
	if err := validateEnvs(p.Envs); err != nil {
		return nil, err
	}
	for k, v := range p.Envs {
		if strings.ContainsRune(v, 0) {
			return nil, errorf(codeInvalid, "envs: the value of %s must not contain NUL bytes", k)
		}
	}
	if p.Cwd != "" {
		if err := checkPath("cwd", p.Cwd); err != nil {
			return nil, err
		}
	}
	if err := checkUser(p.User); err != nil {
		return nil, err
	}
	if err := checkText("tag", p.Tag, maxTagLen); err != nil {
		return nil, err
	}
	cfg := &envdv1.ProcessConfig{Envs: p.Envs, Cwd: p.Cwd, User: p.User}
	if p.Args == nil {
		cfg.Shell = p.Cmd
	} else {
		cfg.Cmd, cfg.Args = p.Cmd, p.Args
	}
	return cfg, nil
}

// timeout returns the spec's timeout, or def when it names none.
func (p processSpec) timeout(def time.Duration) (time.Duration, error) {
	if p.TimeoutSec == nil {
		return def, nil
	}
	if *p.TimeoutSec < 1 || *p.TimeoutSec > maxExecTimeoutSec {
		return 0, errorf(codeInvalid, "timeout_sec must be between 1 and %d, not %d", maxExecTimeoutSec, *p.TimeoutSec)
	}
	return time.Duration(*p.TimeoutSec) * time.Second, nil
}

// program names what the spec runs for the audit log: the program's base
// name only, never its arguments or environment, which may hold secrets.
// For a shell line it is the first word that is not a variable assignment,
// when that word looks like a program name, and "sh" otherwise; a program
// whose name does not look like one is "other".
func (p processSpec) program() string {
	if p.Args != nil {
		return programName(p.Cmd, "other")
	}
	for _, w := range strings.Fields(p.Cmd) {
		if k, _, ok := strings.Cut(w, "="); ok && rules.ValidEnvName(k) {
			continue
		}
		return programName(w, "sh")
	}
	return "sh"
}

func programName(word, fallback string) string {
	name := path.Base(word)
	if name == "" || name == "." || name == "/" || len(name) > 64 {
		return fallback
	}
	for _, r := range name {
		if !isAlnum(r) && !strings.ContainsRune("._+-", r) {
			return fallback
		}
	}
	return name
}

// isAlnum reports whether r is an ASCII letter or digit.
func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// execResult is the answer of a foreground exec.
type execResult struct {
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	ExitCode   int32  `json:"exit_code"`
	Signal     string `json:"signal,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Truncated  bool   `json:"truncated"`
	TimedOut   bool   `json:"timed_out"`
}

// execAnswers shapes the answers of POST /exec: this API's own, or the
// compatible API's (compat.go).
type execAnswers struct {
	// foreground is the answer to a process that ran to its end.
	foreground func(c store.Capsule, spec processSpec, res execResult) any
	// background is the answer to a started background process.
	background func(c store.Capsule, spec processSpec, pid uint32) any
	// tag, when set, names a background process that the request names
	// not.
	tag func() string
}

var nativeExecAnswers = execAnswers{
	foreground: func(_ store.Capsule, _ processSpec, res execResult) any { return res },
	background: func(_ store.Capsule, spec processSpec, pid uint32) any {
		return struct {
			PID uint32  `json:"pid"`
			Tag *string `json:"tag"`
		}{pid, ptr(spec.Tag)}
	},
}

func (s *server) handleExec() http.Handler { return s.exec(nativeExecAnswers) }

func (s *server) exec(answers execAnswers) http.Handler {
	type request struct {
		processSpec
		Background bool `json:"background"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if req.Background && req.Tag == "" && answers.tag != nil {
			req.Tag = answers.tag()
		}
		cfg, err := req.config()
		if err != nil {
			return err
		}
		timeout, err := req.timeout(defaultExecTimeout)
		if err != nil {
			return err
		}
		ec, err := s.capsuleEnvd(r.Context(), c)
		if err != nil {
			return err
		}
		meta := execMeta(req.processSpec, "exec")
		meta["background"] = req.Background
		if req.Background {
			pid, err := s.startBackground(r.Context(), ec, &envdv1.StartRequest{Process: cfg, Tag: req.Tag})
			if err != nil {
				return s.envdError(r.Context(), c, execErrors, err)
			}
			meta["pid"] = pid
			s.used(r, c, "capsule.exec", meta)
			encode(w, http.StatusAccepted, answers.background(c, req.processSpec, pid))
			return nil
		}
		if err := s.startUse(r.Context(), c); err != nil {
			return err
		}
		active, stopActive := context.WithCancel(r.Context())
		go s.keepActive(active, c)
		res, pid, err := s.runForeground(r.Context(), ec, &envdv1.StartRequest{Process: cfg, Tag: req.Tag}, timeout)
		stopActive()
		if err == nil {
			// Answered before the bookkeeping, which thus does not add to
			// the latency of short commands.
			answer(w, http.StatusOK, answers.foreground(c, req.processSpec, res))
		}
		if pid != 0 {
			meta["pid"] = pid
			s.used(r, c, "capsule.exec", meta)
		}
		if err != nil {
			return s.envdError(r.Context(), c, execErrors, err)
		}
		return nil
	})
}

// startBackground starts a process and returns its pid as soon as envd
// reports the start; the process outlives the stream.
func (s *server) startBackground(ctx context.Context, ec *envdclient.Client, req *envdv1.StartRequest) (uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, envdCallTimeout)
	defer cancel()
	stream, err := ec.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		return 0, err
	}
	defer func() { _ = stream.Close() }()
	for stream.Receive() {
		if st := stream.Msg().GetEvent().GetStart(); st != nil {
			return st.GetPid(), nil
		}
	}
	return 0, streamEnded(stream.Err())
}

// streamEnded is the error of a process stream that ended without the
// event the caller waited for.
func streamEnded(err error) error {
	if err == nil {
		return errors.New("envd ended the process stream early")
	}
	return err
}

// runForeground runs a process to its end and collects its output; pid is
// set once the process ran. When the process outlives timeout it is killed
// and the result says timed_out; when ctx ends (the client went away) it is
// killed too, since nobody waits for it.
func (s *server) runForeground(ctx context.Context, ec *envdclient.Client, req *envdv1.StartRequest,
	timeout time.Duration) (res execResult, pid uint32, err error) {
	begin := time.Now()
	// The stream gets its own context: a timeout must not cut it before the
	// output the process wrote until it was killed has arrived.
	streamCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := ec.Process.Start(streamCtx, connect.NewRequest(req))
	if err != nil {
		return res, 0, err
	}
	defer func() { _ = stream.Close() }()

	var (
		timedOut atomic.Bool
		stdout   outBuf
		stderr   outBuf
	)
	collect := func(buf *outBuf, b []byte) {
		if buf.full {
			return
		}
		n, size := jsonPrefix(b, maxExecOutput-buf.size)
		buf.b, buf.size = append(buf.b, b[:n]...), buf.size+size
		if n < len(b) {
			buf.b = trimPartialRune(buf.b)
			buf.full, res.Truncated = true, true
		}
	}
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		switch {
		case ev.GetStart() != nil:
			pid = ev.GetStart().GetPid()
			timer := time.AfterFunc(timeout, func() {
				timedOut.Store(true)
				s.kill(ec, pid)
				// The end event should follow at once; if it does not,
				// answer with what arrived.
				time.AfterFunc(killGrace, cancel)
			})
			defer timer.Stop()
		case ev.GetData() != nil:
			d := ev.GetData()
			if out := d.GetStdout(); out != nil {
				collect(&stdout, out)
			} else if out := d.GetStderr(); out != nil {
				collect(&stderr, out)
			}
		case ev.GetDropped() != nil:
			res.Truncated = true
		case ev.GetEnd() != nil:
			end := ev.GetEnd()
			if end.GetError() != "" {
				s.log.WarnContext(ctx, "envd reported a failure running a process", "pid", pid, "err", end.GetError())
			}
			res.ExitCode, res.Signal = end.GetExitCode(), end.GetSignal()
			res.Stdout, res.Stderr = string(stdout.b), string(stderr.b)
			res.DurationMS = time.Since(begin).Milliseconds()
			res.TimedOut = timedOut.Load()
			return res, pid, nil
		}
	}
	err = streamEnded(stream.Err())
	switch {
	case pid == 0:
		return res, 0, err
	case timedOut.Load():
		// Killed, but the end event did not come in time.
		res.ExitCode, res.Signal = -1, "SIGKILL"
		res.Stdout, res.Stderr = string(stdout.b), string(stderr.b)
		res.DurationMS = time.Since(begin).Milliseconds()
		res.TimedOut = true
		return res, pid, nil
	case ctx.Err() != nil:
		s.kill(ec, pid)
	}
	return res, pid, err
}

// kill sends SIGKILL to pid, whatever happened to the request that asked.
func (s *server) kill(ec *envdclient.Client, pid uint32) {
	s.signal(ec, pid, envdv1.Signal_SIGNAL_SIGKILL)
}

// signal sends sig to pid on the control plane's own account: a timeout,
// a client that went away.
func (s *server) signal(ec *envdclient.Client, pid uint32, sig envdv1.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), envdCallTimeout)
	defer cancel()
	_, err := ec.Process.SendSignal(ctx, connect.NewRequest(&envdv1.SendSignalRequest{
		Process: pidSelector(pid), Signal: sig,
	}))
	// failed_precondition: it ended meanwhile, which is what we wanted.
	if err != nil && connect.CodeOf(err) != connect.CodeFailedPrecondition {
		s.log.Warn("signalling a process", "pid", pid, "signal", signalName(sig), "err", err)
	}
}

func pidSelector(pid uint32) *envdv1.ProcessSelector {
	return &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: pid}}
}

// outBuf collects one output stream up to maxExecOutput bytes of JSON.
type outBuf struct {
	b    []byte
	size int // b's length as a JSON string, or more (see jsonPrefix)
	full bool
}

// trimPartialRune drops a character cut in two at the end of b.
func trimPartialRune(b []byte) []byte {
	for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			break
		}
	}
	return b
}

// execMeta is the audit metadata of a process start: the program's name,
// never its arguments or environment.
func execMeta(p processSpec, via string) map[string]any {
	return map[string]any{"program": p.program(), "shell": p.Args == nil, "via": via}
}
