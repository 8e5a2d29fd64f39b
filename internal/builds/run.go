package builds

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/lifecycle"
	"github.com/wrenn-dev/wrenn/internal/store"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// maxLineLen bounds one stored log line; longer output is split.
const maxLineLen = 4096

// tailLines is how many lines of a failed step's output its error repeats.
const tailLines = 20

// run is one build under way.
type run struct {
	s *Service
	b store.Build

	mu   sync.Mutex
	step int
	// tail holds the last lines of the current step's output.
	tail []string
}

// heartbeat touches the build every Deps.Heartbeat until ctx ends, and
// stops the build when a cancel was asked for or the build is no longer
// running (the reaper failed it).
func (r *run) heartbeat(ctx context.Context, stop context.CancelCauseFunc) {
	t := time.NewTicker(r.s.d.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cancel, err := r.s.d.Store.UpdateBuild(ctx, r.b.ID, store.BuildProgress{})
		switch {
		case errors.Is(err, store.ErrConflict):
			stop(errors.New("the build was ended by someone else"))
			return
		case err != nil:
			r.s.log.WarnContext(ctx, "touching a build", "build_id", r.b.ID, "err", err)
		case cancel:
			stop(errCancelled)
			return
		}
	}
}

// begin starts step n (from 1) called what: it is logged and recorded.
func (r *run) begin(ctx context.Context, n int, what string) {
	r.mu.Lock()
	r.step, r.tail = n, nil
	r.mu.Unlock()
	done := n - 1
	r.info(ctx, fmt.Sprintf("step %d/%d: %s", n, r.b.StepsTotal, what))
	if _, err := r.s.d.Store.UpdateBuild(context.WithoutCancel(ctx), r.b.ID, store.BuildProgress{StepsDone: &done, CurrentStep: &what}); err != nil && !errors.Is(err, store.ErrConflict) {
		r.s.log.WarnContext(ctx, "recording build progress", "build_id", r.b.ID, "err", err)
	}
}

// info logs a line of the build's own.
func (r *run) info(ctx context.Context, line string) { r.write(ctx, "info", []string{line}) }

// write stores lines of stream in the build's log.
func (r *run) write(ctx context.Context, stream string, lines []string) {
	r.mu.Lock()
	step := r.step
	logs := make([]store.BuildLog, 0, len(lines))
	for _, l := range lines {
		for len(l) > maxLineLen {
			logs = append(logs, store.BuildLog{Step: step, Stream: stream, Line: l[:maxLineLen]})
			l = l[maxLineLen:]
		}
		logs = append(logs, store.BuildLog{Step: step, Stream: stream, Line: l})
		if stream != "info" {
			r.tail = append(r.tail, l)
			if len(r.tail) > tailLines {
				r.tail = r.tail[len(r.tail)-tailLines:]
			}
		}
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeeping)
	defer cancel()
	if err := r.s.d.Store.AppendBuildLogs(ctx, r.b.ID, logs); err != nil {
		r.s.log.WarnContext(ctx, "writing build log", "build_id", r.b.ID, "err", err)
	}
}

// output returns the last lines of the current step's output.
func (r *run) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.tail, "\n")
}

// lineWriter cuts a stream of bytes into lines for the log.
type lineWriter struct {
	r      *run
	ctx    context.Context
	stream string
	buf    []byte
}

func (w *lineWriter) Write(b []byte) {
	w.buf = append(w.buf, b...)
	var lines []string
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		lines = append(lines, strings.ToValidUTF8(string(w.buf[:i]), "\uFFFD"))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLineLen {
		lines = append(lines, strings.ToValidUTF8(string(w.buf), "\uFFFD"))
		w.buf = nil
	}
	if len(lines) > 0 {
		w.r.write(w.ctx, w.stream, lines)
	}
}

func (w *lineWriter) Flush() {
	if len(w.buf) > 0 {
		w.r.write(w.ctx, w.stream, []string{strings.ToValidUTF8(string(w.buf), "\uFFFD")})
		w.buf = nil
	}
}

// templateConfig is what a built template records (templates.config).
type templateConfig struct {
	Env     map[string]string      `json:"env,omitempty"`
	User    string                 `json:"user,omitempty"`
	Workdir string                 `json:"workdir,omitempty"`
	Start   string                 `json:"start,omitempty"`
	Expose  []int                  `json:"expose,omitempty"`
	Image   *hostproto.ImageConfig `json:"image,omitempty"`
}

// buildImage sends the archive to a host, which makes the template, and
// records it.
func (s *Service) buildImage(ctx context.Context, r *run, req ImageRequest, first int) error {
	r.begin(ctx, first, "send the image to a host")
	h, err := s.d.Store.ImportHost(ctx, r.b.TeamID)
	if errors.Is(err, store.ErrNotFound) {
		return errors.New("no host is online to import the image on; try again when one is")
	}
	if err != nil {
		return err
	}
	hostID := h.ID
	if _, err := s.d.Store.UpdateBuild(ctx, r.b.ID, store.BuildProgress{HostID: &hostID}); err != nil {
		return err
	}
	tid := uuid.NewString()
	// Until the template row exists, the directory is protected from the
	// orphan clean-up of heartbeats by this request, as a snapshot's is.
	if err := s.d.Store.BeginSnapshot(ctx, tid, h.ID); err != nil {
		return err
	}
	defer func() {
		if err := s.d.Store.EndSnapshot(context.WithoutCancel(ctx), tid); err != nil {
			s.log.WarnContext(ctx, "forgetting an import request", "template_id", tid, "err", err)
		}
	}()
	ok := false
	defer func() {
		if !ok {
			s.deleteTemplate(ctx, h, tid)
		}
	}()
	f, err := os.Open(req.Archive)
	if err != nil {
		return fmt.Errorf("reading the image: %w", err)
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err == nil {
		r.info(ctx, fmt.Sprintf("sending %d bytes to host %s", fi.Size(), h.ID))
	}
	body, err := s.d.Import(ctx, h, tid, [3]int{req.VCPUs, req.MemoryMB, req.DiskMB}, f)
	if err != nil {
		return fmt.Errorf("sending the image to host %s: %w", h.ID, err)
	}
	defer func() { _ = body.Close() }()
	r.begin(ctx, first+1, "unpack the image on the host")
	var made *hostproto.ImportedTemplate
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l hostproto.ImportLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("reading the host's answer: %w", err)
		}
		switch {
		case l.Log != "":
			r.info(ctx, l.Log)
		case l.Error != nil:
			if l.Error.Code == "invalid_argument" {
				return fmt.Errorf("the image cannot be used: %s", l.Error.Message)
			}
			return fmt.Errorf("the host failed to import the image: %s", l.Error.Message)
		case l.Template != nil:
			made = l.Template
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading the host's answer: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if made == nil {
		return errors.New("the host ended the import without a template")
	}
	r.begin(ctx, first+2, "record the template")
	cfg := templateConfig{Image: &made.Config, User: made.Config.User, Workdir: made.Config.WorkingDir}
	for _, kv := range made.Config.Env {
		if k, v, found := strings.Cut(kv, "="); found && k != "PATH" {
			if cfg.Env == nil {
				cfg.Env = map[string]string{}
			}
			cfg.Env[k] = v
		}
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeeping)
	defer cancel()
	_, t, err := s.d.Store.SucceedBuild(bctx, r.b, store.BuiltTemplate{
		ID: tid, Kind: store.TemplateImage, HostID: h.ID, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB,
		SizeBytes: made.SizeBytes, Config: raw,
	}, r.successEvent())
	if err != nil {
		return r.successError(ctx, err)
	}
	ok = true
	if err := s.d.Store.AddHostTemplate(bctx, h.ID, tid); err != nil {
		s.log.WarnContext(bctx, "adding imported template to host templates", "host_id", h.ID, "template_id", tid, "err", err)
	}
	r.info(ctx, fmt.Sprintf("template %s ready: %d bytes, built in %s", t.Name, t.SizeBytes, time.Duration(t.BuildMS)*time.Millisecond))
	return nil
}

// successEvent is the audit event of a build's template.
func (r *run) successEvent() store.Event {
	ev := store.Event{TeamID: r.b.TeamID, ActorType: store.ActorSystem, Action: "template.build",
		Metadata: map[string]any{"build_id": r.b.ID, "name": r.b.Name, "source": r.b.Source, "public": r.b.Public}}
	return ev
}

// successError turns SucceedBuild's error into the build's.
func (r *run) successError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, store.ErrConflict):
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return errors.New("the build was ended by someone else before its template was recorded")
	case errors.Is(err, store.ErrNameTaken):
		return fmt.Errorf("a template called %q was created meanwhile", r.b.Name)
	}
	return err
}

// deleteTemplate asks host h to remove template dir, logging a failure (the
// host's heartbeats report it as an orphan then).
func (s *Service) deleteTemplate(ctx context.Context, h store.Host, dir string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeeping)
	defer cancel()
	if _, err := s.d.Agent(h).DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Template: dir})); err != nil {
		s.log.WarnContext(ctx, "deleting a build's template on its host", "host_id", h.ID, "template_id", dir, "err", err)
	}
}

// buildRecipe runs recipe's steps in a capsule of its base and snapshots
// the capsule into the template. The capsule is destroyed whatever
// happens; a failed step leaves no template.
func (s *Service) buildRecipe(ctx context.Context, r *run, recipe Recipe) error {
	total := len(recipe.Steps) + 2
	r.begin(ctx, 1, "start a capsule of "+recipe.Base)
	cr := lifecycle.CreateRequest{TeamID: r.b.TeamID, CreatedBy: r.b.CreatedBy, Template: recipe.Base,
		Metadata: map[string]string{"wrenn.build": r.b.ID}}
	zero := 0
	cr.TimeoutSec = &zero // the build, not the idle reaper, decides when it ends
	if recipe.VCPUs > 0 {
		cr.VCPUs = &recipe.VCPUs
	}
	if recipe.MemoryMB > 0 {
		cr.MemoryMB = &recipe.MemoryMB
	}
	if recipe.DiskMB > 0 {
		cr.DiskMB = &recipe.DiskMB
	}
	c, err := s.d.Capsules.Create(ctx, cr, store.Event{TeamID: r.b.TeamID, ActorType: store.ActorSystem, Action: "capsule.create",
		Metadata: map[string]any{"build_id": r.b.ID}})
	if c.ID != "" {
		// Recorded first, so that a control plane that dies now leaves
		// the reaper a capsule to destroy.
		id := c.ID
		if _, uerr := s.d.Store.UpdateBuild(context.WithoutCancel(ctx), r.b.ID, store.BuildProgress{CapsuleID: &id}); uerr != nil && !errors.Is(uerr, store.ErrConflict) {
			s.log.WarnContext(ctx, "recording build capsule", "build_id", r.b.ID, "err", uerr)
		}
		defer s.destroyCapsule(ctx, r.b.TeamID, c.ID)
	}
	if err != nil {
		var le *lifecycle.Error
		if errors.As(err, &le) {
			return fmt.Errorf("starting a capsule of %s: %s", recipe.Base, le.Message)
		}
		return fmt.Errorf("starting a capsule of %s: %w", recipe.Base, err)
	}
	r.info(ctx, "capsule "+c.ID+" running")
	client, err := s.d.Envd(ctx, c)
	if err != nil {
		return fmt.Errorf("reaching the build capsule: %w", err)
	}
	ec := envdClient{client}
	st := templateConfig{}
	env := map[string]string{}
	for i, step := range recipe.Steps {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		r.begin(ctx, i+2, step.describe())
		if err := s.runStep(ctx, r, ec, step, &st, env); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("step %d/%d (%s) failed: %w", i+2, total, step.describe(), err)
		}
	}
	if len(env) > 0 {
		st.Env = env
	}
	r.begin(ctx, total, "snapshot the capsule into template "+r.b.Name)
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	t, err := s.d.Capsules.Snapshot(context.WithoutCancel(ctx), lifecycle.SnapshotRequest{TeamID: r.b.TeamID, CapsuleID: c.ID, Name: r.b.Name},
		store.Event{TeamID: r.b.TeamID, ActorType: store.ActorSystem, Action: "snapshot.create", Metadata: map[string]any{"build_id": r.b.ID}})
	if err != nil {
		var le *lifecycle.Error
		if errors.As(err, &le) {
			return fmt.Errorf("snapshotting the build capsule: %s", le.Message)
		}
		return fmt.Errorf("snapshotting the build capsule: %w", err)
	}
	// The capsule goes before the build is recorded done: whoever sees it
	// succeeded sees it gone (the snapshot does not need it).
	s.destroyCapsule(ctx, r.b.TeamID, c.ID)
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeeping)
	defer cancel()
	_, bt, err := s.d.Store.SucceedBuild(bctx, r.b, store.BuiltTemplate{ID: t.ID, Kind: store.TemplateSnapshot, Config: raw}, r.successEvent())
	if err != nil {
		// The snapshot is not the build's template after all.
		if derr := s.d.Capsules.DeleteSnapshot(bctx, r.b.TeamID, t.Name, store.Event{TeamID: r.b.TeamID, ActorType: store.ActorSystem,
			Action: "snapshot.delete", Metadata: map[string]any{"build_id": r.b.ID, "reason": "build did not succeed"}}); derr != nil {
			s.log.WarnContext(bctx, "deleting the snapshot of a build that did not succeed", "template_id", t.ID, "err", derr)
		}
		return r.successError(ctx, err)
	}
	r.info(ctx, fmt.Sprintf("template %s ready: %d bytes, built in %s", bt.Name, bt.SizeBytes, time.Duration(bt.BuildMS)*time.Millisecond))
	return nil
}

// runStep runs one recipe step in the build capsule; st and env collect
// what the template records.
func (s *Service) runStep(ctx context.Context, r *run, ec envdClient, step Step, st *templateConfig, env map[string]string) error {
	switch {
	case step.Run != "":
		timeout := step.TimeoutSec
		if timeout == 0 {
			timeout = defaultStepTimeout
		}
		return s.runCommand(ctx, r, ec, step.Run, st, env, time.Duration(timeout)*time.Second)
	case step.Copy != nil:
		b, _ := step.Copy.bytes()
		mode, _ := step.Copy.mode()
		user := step.Copy.User
		if user == "" {
			user = st.User
		}
		if _, err := ec.Upload(ctx, step.Copy.Path, bytes.NewReader(b), uploadOptions(mode, user, len(b))); err != nil {
			return err
		}
		r.info(ctx, fmt.Sprintf("wrote %d bytes to %s", len(b), step.Copy.Path))
	case step.Env != nil:
		for k, v := range step.Env {
			env[k] = v
		}
	case step.User != "":
		st.User = step.User
	case step.Workdir != "":
		st.Workdir = step.Workdir
		// Made as the current user, as Docker's WORKDIR does (as root).
		return s.runCommand(ctx, r, ec, "mkdir -p '"+strings.ReplaceAll(step.Workdir, "'", `'\''`)+"'", &templateConfig{User: st.User}, env, time.Minute)
	case step.Start != "":
		st.Start = step.Start
		pid, err := startBackground(ctx, ec, &envdv1.StartRequest{Tag: "start", Process: processConfig(step.Start, st, env)})
		if err != nil {
			return err
		}
		r.info(ctx, fmt.Sprintf("started in the background as pid %d: capsules of the template have it running", pid))
	case step.Expose != nil:
		st.Expose = append(st.Expose, step.Expose...)
	}
	return nil
}

// processConfig is envd's form of shell line cmd under the recipe's state.
func processConfig(cmd string, st *templateConfig, env map[string]string) *envdv1.ProcessConfig {
	envs := make(map[string]string, len(env))
	for k, v := range env {
		envs[k] = v
	}
	return &envdv1.ProcessConfig{Shell: cmd, Envs: envs, Cwd: st.Workdir, User: st.User}
}

// runCommand runs shell line cmd to its end, logging its output; a
// non-zero exit is an error that repeats the output's last lines.
func (s *Service) runCommand(ctx context.Context, r *run, ec envdClient, cmd string, st *templateConfig, env map[string]string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := ec.Start(ctx, &envdv1.StartRequest{Process: processConfig(cmd, st, env)})
	if err != nil {
		return err
	}
	defer func() { _ = stream.Close() }()
	stdout := &lineWriter{r: r, ctx: ctx, stream: "stdout"}
	stderr := &lineWriter{r: r, ctx: ctx, stream: "stderr"}
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		switch {
		case ev.GetData() != nil:
			if out := ev.GetData().GetStdout(); out != nil {
				stdout.Write(out)
			} else if out := ev.GetData().GetStderr(); out != nil {
				stderr.Write(out)
			}
		case ev.GetEnd() != nil:
			stdout.Flush()
			stderr.Flush()
			end := ev.GetEnd()
			switch {
			case end.GetExitCode() == 0 && end.GetSignal() == "" && end.GetError() == "":
				return nil
			case end.GetError() != "":
				return fmt.Errorf("%s\n%s", end.GetError(), r.output())
			case end.GetSignal() != "":
				return fmt.Errorf("killed by %s\n%s", end.GetSignal(), r.output())
			default:
				return fmt.Errorf("exit code %d\n%s", end.GetExitCode(), r.output())
			}
		}
	}
	stdout.Flush()
	stderr.Flush()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("did not finish within %s\n%s", timeout, r.output())
	}
	if err := stream.Err(); err != nil {
		return err
	}
	return errors.New("envd ended the process stream before the process ended")
}

// startBackground starts a process and returns its pid once envd reports
// the start; the process outlives the stream.
func startBackground(ctx context.Context, ec envdClient, req *envdv1.StartRequest) (uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := ec.Start(ctx, req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = stream.Close() }()
	for stream.Receive() {
		if st := stream.Msg().GetEvent().GetStart(); st != nil {
			return st.GetPid(), nil
		}
	}
	if err := stream.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("envd ended the process stream before the process started")
}

// envdClient is the part of envd's client a build uses.
type envdClient struct{ c *envdclient.Client }

func (e envdClient) Start(ctx context.Context, req *envdv1.StartRequest) (*connect.ServerStreamForClient[envdv1.StartResponse], error) {
	return e.c.Process.Start(ctx, connect.NewRequest(req))
}

func (e envdClient) Upload(ctx context.Context, path string, r io.Reader, opts envdclient.UploadOptions) (*envdclient.UploadResult, error) {
	return e.c.Upload(ctx, path, r, opts)
}

func uploadOptions(mode uint32, user string, size int) envdclient.UploadOptions {
	return envdclient.UploadOptions{Mode: mode, User: user, Size: int64(size)}
}
