// Package lifecycle is the control plane's capsule service: it creates,
// places and starts capsules, pauses, resumes, snapshots and destroys them,
// settles what a failed operation left, pauses idle capsules (the reaper)
// and reconciles the records with what hosts report in their heartbeats.
//
// It knows nothing of HTTP: internal/api decodes and authorizes a request,
// calls a Service method and encodes the answer, and this package's *Error
// kinds are mapped to the API's error codes in one table there. Every
// operation first claims the capsule with a compare-and-set into a
// transient status (starting, pausing, resuming), so that of concurrent
// calls exactly one acts; the others get a Conflict naming the status they
// found.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// Timeouts of lifecycle calls to agents. They run on contexts detached from
// the caller's: a capsule's lifetime is never tied to the HTTP request that
// started or destroyed it.
const (
	startTimeout   = 60 * time.Second
	destroyTimeout = 30 * time.Second
	pauseTimeout   = 2 * time.Minute
	resumeTimeout  = 2 * time.Minute
	// snapshotTimeout bounds the agent's SnapshotCapsule: a pause, a copy
	// of the saved state, and perhaps a resume.
	snapshotTimeout = 5 * time.Minute
	// bookkeepingTimeout bounds the database writes that record what an
	// agent did, so that they get time of their own after a slow agent.
	bookkeepingTimeout = 10 * time.Second
	// probeTimeout bounds the GetCapsule that finds out what a capsule
	// became after a failed operation.
	probeTimeout = 5 * time.Second
	// staleTransient is how long a capsule may stay starting, pausing or
	// resuming before its host's report settles it: longer than any
	// operation takes, so only the leftovers of a control plane that died
	// mid-operation are touched.
	staleTransient = 10 * time.Minute
)

// Metrics are the histograms the service observes, by outcome ("ok" or
// "error"), timed from the claim to the agent's answer. Nil ones are not
// observed.
type Metrics struct {
	Pause, Resume, Snapshot prometheus.ObserverVec
}

// Deps is what the service needs from the rest of the control plane.
type Deps struct {
	Store  *store.Store
	Logger *slog.Logger
	// Agent returns a client for the CapsuleService of host h, with the
	// control plane's signed calls.
	Agent   func(h store.Host) hostagentv1connect.CapsuleServiceClient
	Metrics Metrics
	// ReaperInterval is how often RunReaper looks for idle capsules
	// (default 1 s).
	ReaperInterval time.Duration
	// Quota is every team's default quota; a platform admin may set other
	// limits for one team. The zero Quota limits nothing.
	Quota store.Quota
	// CopyTemplate streams template agentName from host from to host to
	// and returns its size; nil leaves templates where they are.
	CopyTemplate func(ctx context.Context, from, to store.Host, agentName string) (int64, error)
}

// Service is the control plane's capsule service. Its methods are safe for
// concurrent use; each one returns, besides a plain error from the store,
// an *Error for what the caller is meant to see.
type Service struct {
	store       *store.Store
	log         *slog.Logger
	agent       func(store.Host) hostagentv1connect.CapsuleServiceClient
	metrics     Metrics
	quota       store.Quota
	reaperEvery time.Duration
	// leftovers holds the keys of leftovers whose removal from their host
	// is under way (see cleanUpHost), so that heartbeats that keep
	// reporting one do not pile removals on it.
	leftovers sync.Map
	// copyTemplate is Deps.CopyTemplate; copies makes concurrent creates
	// that need one template on one host wait for a single copy.
	copyTemplate func(ctx context.Context, from, to store.Host, agentName string) (int64, error)
	copies       singleflight.Group
}

// New returns the capsule service.
func New(d Deps) *Service {
	s := &Service{store: d.Store, log: d.Logger, agent: d.Agent, metrics: d.Metrics, quota: d.Quota, reaperEvery: d.ReaperInterval,
		copyTemplate: d.CopyTemplate}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.reaperEvery <= 0 {
		s.reaperEvery = time.Second
	}
	return s
}

// observe records one outcome of a lifecycle operation in h.
func observe(h prometheus.ObserverVec, ok bool, d time.Duration) {
	if h == nil {
		return
	}
	outcome := "error"
	if ok {
		outcome = "ok"
	}
	h.WithLabelValues(outcome).Observe(d.Seconds())
}

// Kind says what went wrong, in words the API maps to its error codes.
type Kind string

// The kinds of *Error.
const (
	Invalid             Kind = "invalid"              // the request cannot be done as asked
	Conflict            Kind = "conflict"             // the capsule is not in a status that allows it
	CapsuleNotFound     Kind = "capsule_not_found"    // no such capsule in the team
	TemplateNotFound    Kind = "template_not_found"   // no such template or snapshot
	TemplateUnavailable Kind = "template_unavailable" // it exists but cannot be used now
	TemplateInUse       Kind = "template_in_use"      // capsules still use the snapshot
	NameTaken           Kind = "name_taken"           // a template has that name already
	NoHost              Kind = "no_host"              // no online host can take it
	NoCapacity          Kind = "no_capacity"          // hosts are full
	AgentFailed         Kind = "agent_error"          // the host agent failed the call
	QuotaExceeded       Kind = "quota_exceeded"       // the team is at one of its limits
	TooManyCreates      Kind = "too_many_creates"     // the team has as many creates under way as it may
)

// Error is a failure the caller is meant to see.
type Error struct {
	Kind    Kind
	Message string
	// Status is the capsule's status after the failure, set on
	// lifecycle conflicts and failures so that clients need not ask again.
	Status string
}

func (e *Error) Error() string { return string(e.Kind) + ": " + e.Message }

func errorf(kind Kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// hostOf returns capsule c's host; store.ErrNotFound when it has none.
func (s *Service) hostOf(ctx context.Context, c store.Capsule) (store.Host, error) {
	if c.HostID == "" {
		return store.Host{}, store.ErrNotFound
	}
	return s.store.Host(ctx, c.HostID)
}

// withMeta returns ev with extra added to its metadata.
func withMeta(ev store.Event, extra map[string]any) store.Event {
	m := make(map[string]any, len(ev.Metadata)+len(extra))
	for k, v := range ev.Metadata {
		m[k] = v
	}
	for k, v := range extra {
		m[k] = v
	}
	ev.Metadata = m
	return ev
}

// Kinds lists every Kind, for callers that map each one (the API's error
// table checks it has them all).
var Kinds = []Kind{Invalid, Conflict, CapsuleNotFound, TemplateNotFound, TemplateUnavailable, TemplateInUse,
	NameTaken, NoHost, NoCapacity, AgentFailed, QuotaExceeded, TooManyCreates}

// quotaError turns the store's *QuotaError into the caller's error, naming
// the limit; other errors pass through.
func quotaError(err error, what string) error {
	var qe *store.QuotaError
	if !errors.As(err, &qe) {
		return err
	}
	if qe.Limit == "concurrent_creates" {
		return errorf(TooManyCreates, "the team has %d capsules being created, its limit (concurrent_creates); try again when they have started", qe.Used)
	}
	return errorf(QuotaExceeded, "%s would take the team past its quota: %s is %d, the team holds %d and this adds %d; free some, or ask a platform admin to raise it",
		what, qe.Limit, qe.Max, qe.Used, qe.Asked)
}
