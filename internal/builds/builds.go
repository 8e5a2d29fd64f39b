// Package builds runs template builds as jobs: from an OCI image (the
// archive is streamed to a host agent, which unpacks it into a template)
// or from a recipe (steps run in a capsule of a base template, which is
// then snapshotted into the template). Every build is a row in PostgreSQL
// with its status and progress, and every line it logs is stored in order,
// so that anyone may follow it from its start, on any replica.
//
// A build runs in a goroutine of the control plane that started it, which
// touches the row every few seconds; a cancel is a flag on the row that
// the runner sees at its next touch. A control plane that dies leaves its
// builds running with a stale heartbeat: the build reaper (one replica at a
// time, under an advisory lock) fails them with a reason and removes what
// they left (their capsule; their template directory is removed as an
// orphan by the host's heartbeats). A failed or cancelled build leaves no
// template behind.
//
// Like internal/lifecycle it knows nothing of HTTP: internal/api wires the
// agent calls in as functions.
package builds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/lifecycle"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Default timings.
const (
	defaultHeartbeat  = 2 * time.Second
	defaultStaleAfter = 30 * time.Second
	defaultReapEvery  = 5 * time.Second
	// bookkeeping bounds the database writes after a build's work.
	bookkeeping = 10 * time.Second
)

// Kind says what went wrong, in words the API maps to its error codes.
type Kind string

// The kinds of *Error.
const (
	Invalid   Kind = "invalid"
	NameTaken Kind = "name_taken"
	Conflict  Kind = "conflict"
	NotFound  Kind = "not_found"
	NoHost    Kind = "no_host"
	Forbidden Kind = "forbidden"
)

// Error is a failure the caller is meant to see.
type Error struct {
	Kind    Kind
	Message string
}

func (e *Error) Error() string { return string(e.Kind) + ": " + e.Message }

func errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Deps is what the build service needs from the rest of the control plane.
type Deps struct {
	Store    *store.Store
	Logger   *slog.Logger
	Capsules *lifecycle.Service
	// Agent returns a client for the CapsuleService of host h.
	Agent func(h store.Host) hostagentv1connect.CapsuleServiceClient
	// Envd returns a client for capsule c's envd (through its agent).
	Envd func(ctx context.Context, c store.Capsule) (*envdclient.Client, error)
	// Import streams body (an image archive) to host h to make template
	// name with default sizes sizes, and returns the agent's answer: JSON
	// lines of hostproto.ImportLine.
	Import func(ctx context.Context, h store.Host, name string, sizes [3]int, body io.Reader) (io.ReadCloser, error)
	// Pull fetches image reference ref (checked when the build was
	// asked for) into the new file dst as an image archive, telling
	// progress what it fetches; nil means images are not pulled.
	Pull func(ctx context.Context, ref, dst string, progress func(string)) (int64, error)
	// Heartbeat is how often a runner touches its build (default 2 s);
	// StaleAfter how old a running build's touch may get before the
	// reaper fails it (default 30 s); ReapEvery how often the reaper
	// looks (default 5 s).
	Heartbeat, StaleAfter, ReapEvery time.Duration
}

// Service starts, cancels and reaps builds. It is safe for concurrent use.
type Service struct {
	d      Deps
	log    *slog.Logger
	runner string

	mu      sync.Mutex
	closed  bool
	running map[string]context.CancelCauseFunc
	wg      sync.WaitGroup
}

// New returns the build service.
func New(d Deps) *Service {
	if d.Heartbeat <= 0 {
		d.Heartbeat = defaultHeartbeat
	}
	if d.StaleAfter <= 0 {
		d.StaleAfter = defaultStaleAfter
	}
	if d.ReapEvery <= 0 {
		d.ReapEvery = defaultReapEvery
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	return &Service{d: d, log: log, runner: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8]),
		running: map[string]context.CancelCauseFunc{}}
}

// Request is what every build says: whose it is and what it is called.
type Request struct {
	TeamID    string
	CreatedBy string
	Name      string
	// Public makes a template every team sees; platform admins only
	// (checked by the caller, who knows who calls).
	Public bool
}

func (r Request) check() error {
	switch {
	case r.Name == "":
		return errorf(Invalid, "name is required: %s", rules.TemplateNameRule)
	case !rules.ValidTemplateName(r.Name):
		return errorf(Invalid, "name %q is not a template name: %s", r.Name, rules.TemplateNameRule)
	}
	return nil
}

// ImageRequest is a build from an OCI image archive.
type ImageRequest struct {
	Request
	// Archive is a file holding the image (OCI layout or docker save, as
	// a tar file). The build takes it over and removes it when done.
	Archive string
	// Ref, instead of Archive, is an image reference the build pulls
	// first (Deps.Pull).
	Ref string
	// Sizes are the template's default vCPUs, memory and disk (MB);
	// zero takes 1, 512 and 2048.
	VCPUs, MemoryMB, DiskMB int
}

// errCancelled is the cause of a build's context when someone cancelled it.
var errCancelled = errors.New("cancelled")

// errShutdown is the cause when the control plane running it shuts down.
var errShutdown = errors.New("the control plane running this build shut down; start the build again")

// record creates the build's row.
func (s *Service) record(ctx context.Context, r Request, source string, recipe json.RawMessage, steps int, ev store.Event) (store.Build, error) {
	b, err := s.d.Store.CreateBuild(ctx, store.NewBuild{
		TeamID: r.TeamID, CreatedBy: r.CreatedBy, Name: r.Name, Public: r.Public, Source: source,
		Recipe: recipe, StepsTotal: steps, Runner: s.runner,
	}, ev)
	switch {
	case errors.Is(err, store.ErrNameTaken):
		return store.Build{}, errorf(NameTaken, "a template called %q already exists; choose another name", r.Name)
	case errors.Is(err, store.ErrBuildRunning):
		return store.Build{}, errorf(Conflict, "a build of %q is running already; wait for it or cancel it", r.Name)
	}
	return b, err
}

// StartImage records a build of template req.Name from req.Archive and
// starts it; it returns the build as recorded (running). Whatever happens,
// the archive is removed once the build no longer needs it.
func (s *Service) StartImage(ctx context.Context, req ImageRequest, ev store.Event) (store.Build, error) {
	keep := false
	defer func() {
		if !keep && req.Archive != "" {
			_ = os.Remove(req.Archive)
		}
	}()
	if (req.Archive == "") == (req.Ref == "") {
		return store.Build{}, errorf(Invalid, "give an image archive or an image reference")
	}
	if req.Ref != "" && s.d.Pull == nil {
		return store.Build{}, errorf(Invalid, "this control plane pulls no images; upload the image instead")
	}
	if err := req.check(); err != nil {
		return store.Build{}, err
	}
	if req.VCPUs == 0 {
		req.VCPUs = 1
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = 512
	}
	if req.DiskMB == 0 {
		req.DiskMB = 2048
	}
	switch {
	case req.VCPUs < 1 || req.VCPUs > 64:
		return store.Build{}, errorf(Invalid, "vcpus must be 1 to 64, not %d", req.VCPUs)
	case req.MemoryMB < rules.MinMemoryMB:
		return store.Build{}, errorf(Invalid, "memory_mb must be at least %d, not %d", rules.MinMemoryMB, req.MemoryMB)
	case req.DiskMB < rules.MinDiskMB:
		return store.Build{}, errorf(Invalid, "disk_mb must be at least %d, not %d", rules.MinDiskMB, req.DiskMB)
	}
	meta := map[string]any{"name": req.Name, "source": store.BuildFromImage, "public": req.Public}
	steps, first := 3, 1
	if req.Ref != "" {
		meta["image"] = req.Ref
		steps, first = 4, 2
	}
	ev.Metadata = mergeMeta(ev.Metadata, meta)
	b, err := s.record(ctx, req.Request, store.BuildFromImage, nil, steps, ev)
	if err != nil {
		return store.Build{}, err
	}
	keep = true
	s.launch(b, func(ctx context.Context, r *run) error {
		if req.Ref != "" {
			r.begin(ctx, 1, "pull "+req.Ref)
			req.Archive = filepath.Join(os.TempDir(), "wrenn-pull-"+b.ID+".tar")
			if _, err := s.d.Pull(ctx, req.Ref, req.Archive, func(l string) { r.info(ctx, l) }); err != nil {
				return err
			}
		}
		defer func() { _ = os.Remove(req.Archive) }()
		return s.buildImage(ctx, r, req, first)
	})
	return b, nil
}

// StartRecipe records a build of template req.Name from recipe and starts
// it; it returns the build as recorded (running).
func (s *Service) StartRecipe(ctx context.Context, req Request, recipe Recipe, ev store.Event) (store.Build, error) {
	if err := req.check(); err != nil {
		return store.Build{}, err
	}
	if err := recipe.Check(); err != nil {
		return store.Build{}, err
	}
	if _, err := s.d.Store.Template(ctx, req.TeamID, recipe.Base); errors.Is(err, store.ErrNotFound) {
		return store.Build{}, errorf(Invalid, "recipe.base: no template called %q (GET /v1/templates lists them)", recipe.Base)
	} else if err != nil {
		return store.Build{}, err
	}
	raw, err := json.Marshal(recipe)
	if err != nil {
		return store.Build{}, err
	}
	ev.Metadata = mergeMeta(ev.Metadata, map[string]any{"name": req.Name, "source": store.BuildFromRecipe, "public": req.Public, "base": recipe.Base})
	b, err := s.record(ctx, req, store.BuildFromRecipe, raw, len(recipe.Steps)+2, ev)
	if err != nil {
		return store.Build{}, err
	}
	s.launch(b, func(ctx context.Context, r *run) error { return s.buildRecipe(ctx, r, recipe) })
	return b, nil
}

// Cancel asks team teamID's running build id to stop; the runner stops it
// within a heartbeat and records it cancelled. It returns the build.
func (s *Service) Cancel(ctx context.Context, teamID, id string, ev store.Event) (store.Build, error) {
	if _, err := uuid.Parse(id); err != nil {
		return store.Build{}, errorf(NotFound, "no build with id %q", id)
	}
	b, err := s.d.Store.RequestCancel(ctx, teamID, id, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Build{}, errorf(NotFound, "no build with id %q", id)
	case errors.Is(err, store.ErrConflict):
		return b, errorf(Conflict, "build %s is %s, not running", id, b.Status)
	case err != nil:
		return store.Build{}, err
	}
	// A build of this replica stops at once; another's at its next
	// heartbeat.
	s.mu.Lock()
	stop := s.running[id]
	s.mu.Unlock()
	if stop != nil {
		stop(errCancelled)
	}
	return b, nil
}

// Close stops this replica's running builds (they are recorded failed:
// the control plane shut down) and waits for them to finish.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	for _, stop := range s.running {
		stop(errShutdown)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// launch runs work for build b in the background, with its heartbeat.
func (s *Service) launch(b store.Build, work func(context.Context, *run) error) {
	ctx, stop := context.WithCancelCause(context.Background())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		stop(errShutdown)
		s.finish(&run{s: s, b: b}, errShutdown)
		return
	}
	s.running[b.ID] = stop
	s.wg.Add(1)
	s.mu.Unlock()
	r := &run{s: s, b: b}
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, b.ID)
			s.mu.Unlock()
			stop(nil)
		}()
		hbDone := make(chan struct{})
		go func() {
			defer close(hbDone)
			r.heartbeat(ctx, stop)
		}()
		err := work(ctx, r)
		if err == nil && ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		if err != nil && ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		stop(nil)
		<-hbDone
		s.finish(r, err)
	}()
}

// finish records how build r ended when it did not succeed (success is
// recorded by the work itself, with its template).
func (s *Service) finish(r *run, err error) {
	if err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), bookkeeping)
	defer cancel()
	status, reason := store.BuildFailed, err.Error()
	if errors.Is(err, errCancelled) {
		status, reason = store.BuildCancelled, "cancelled"
	}
	r.info(ctx, "build "+status+": "+reason)
	if _, ferr := s.d.Store.FinishBuild(ctx, r.b.ID, status, reason); ferr != nil && !errors.Is(ferr, store.ErrConflict) {
		s.log.ErrorContext(ctx, "recording build end", "build_id", r.b.ID, "err", ferr)
	}
	s.log.InfoContext(ctx, "template build ended", "build_id", r.b.ID, "name", r.b.Name, "status", status, "reason", reason)
}

// RunReaper fails, every Deps.ReapEvery and once at once, the builds a
// dead control plane left running, and removes their capsules; it returns
// nil when ctx ends. Every replica runs one; an advisory lock lets one act
// per round.
func (s *Service) RunReaper(ctx context.Context) error {
	t := time.NewTicker(s.d.ReapEvery)
	defer t.Stop()
	for {
		if err := s.Reap(ctx); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "build reaper round failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reap runs one round of the build reaper. Another replica holding its lock
// is not an error.
func (s *Service) Reap(ctx context.Context) error {
	bs, err := s.d.Store.ClaimStaleBuilds(ctx, s.d.StaleAfter,
		"the control plane running this build stopped (restart or crash) before it finished; start the build again")
	if errors.Is(err, store.ErrLocked) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, b := range bs {
		r := &run{s: s, b: b}
		r.info(ctx, "build failed: its control plane stopped before it finished")
		s.log.WarnContext(ctx, "failed a build its control plane left running", "build_id", b.ID, "name", b.Name)
		if b.CapsuleID != "" {
			s.destroyCapsule(ctx, b.TeamID, b.CapsuleID)
		}
	}
	return nil
}

// destroyCapsule destroys team teamID's build capsule id, logging a failure.
func (s *Service) destroyCapsule(ctx context.Context, teamID, id string) {
	ctx = context.WithoutCancel(ctx)
	c, err := s.d.Store.GetCapsule(ctx, teamID, id)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err == nil {
		err = s.d.Capsules.Destroy(ctx, c, store.Event{TeamID: teamID, ActorType: store.ActorSystem, Action: "capsule.destroy",
			Metadata: map[string]any{"reason": "template build ended"}})
	}
	if err != nil {
		s.log.WarnContext(ctx, "destroying a build capsule", "capsule_id", id, "err", err)
	}
}

func mergeMeta(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
