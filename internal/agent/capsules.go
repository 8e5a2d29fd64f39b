package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/network"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Capsule statuses as the agent records and reports them (package capsule
// names them for every layer).
const (
	capsuleStarting = string(capsule.Starting)
	capsuleRunning  = string(capsule.Running)
	// capsuleStopped: the sandbox exited without being destroyed.
	capsuleStopped = string(capsule.Stopped)
)

// Errors of the capsule manager, mapped to Connect codes in capsulerpc.go.
var (
	errCapsuleExists   = errors.New("capsule already exists")
	errCapsuleNotFound = errors.New("capsule not found")
	errNoTemplate      = errors.New("template not on this host")
	errInvalidSpec     = errors.New("invalid capsule spec")
	errCapsuleBusy     = errors.New("capsule is busy with another operation")
)

// LeftoversError is what Destroy returns when the capsule's sandbox is
// gone, so the capsule can never run again, but some of what it had on the
// host (network, files) could not be removed. The capsule's record stays,
// so the next Destroy (the control plane's clean-up of finished capsules,
// on a heartbeat) finds and removes the rest.
type LeftoversError struct {
	CapsuleID string
	Err       error
}

func (e *LeftoversError) Error() string {
	return fmt.Sprintf("capsule %s destroyed, but not all it had on the host could be removed (retried on later destroys): %v", e.CapsuleID, e.Err)
}

func (e *LeftoversError) Unwrap() error { return e.Err }

// envdReadyTimeout bounds the wait for a new capsule's envd to answer.
const envdReadyTimeout = 20 * time.Second

// CapsuleSpec is what a capsule is made of, as the control plane asked.
type CapsuleSpec struct {
	ID       string            `json:"id"`
	Template string            `json:"template"`
	VCPUs    int               `json:"vcpus"`
	MemoryMB int               `json:"memory_mb"`
	DiskMB   int               `json:"disk_mb"`
	Envs     map[string]string `json:"envs,omitempty"`
	// Network is the capsule's egress policy; nil is the open policy.
	Network *egress.Policy `json:"network,omitempty"`
}

// policy is s's egress policy, egress.Open when it has none.
func (s CapsuleSpec) policy() egress.Policy {
	if s.Network == nil {
		return egress.Open()
	}
	return *s.Network
}

// capsuleRecord is a capsule as the agent keeps it on disk
// ($WRENN_DIR/sandboxes/<id>/capsule.json, 0600): enough to re-adopt it
// after a restart. It holds the envd token, so it never leaves the host.
type capsuleRecord struct {
	Spec CapsuleSpec `json:"spec"`
	// RuntimeID names the capsule's sandbox, network and directory. It is
	// the capsule id, except for a capsule taken from the warm pool, which
	// keeps the name it was prepared under.
	RuntimeID string    `json:"runtime_id"`
	Status    string    `json:"status"`
	Address   string    `json:"address"`
	Token     string    `json:"token"`
	StartedAt time.Time `json:"started_at"`
	// Hostname is the hostname the sandbox was started with (envd may
	// have set another since); a resume restarts it with the same.
	Hostname string `json:"hostname,omitempty"`
	// Base is the base template whose root filesystem the capsule runs
	// on: its template, or the base of the snapshot it was restored from.
	// Recorded so that a resume or a snapshot of it never needs the
	// snapshot template again (which may be deleted meanwhile).
	Base string `json:"base,omitempty"`
	// DefaultUser is the user envd runs calls as that name none, from the
	// base template's template.json ("" is root).
	DefaultUser string `json:"default_user,omitempty"`
}

// base is the base template r's capsule runs on. Records written before
// Base existed only knew base templates.
func (r *capsuleRecord) base() string {
	if r.Base != "" {
		return r.Base
	}
	return r.Spec.Template
}

// bootHostname is the hostname r's sandbox was started with.
func (r *capsuleRecord) bootHostname() string {
	if r.Hostname != "" {
		return r.Hostname
	}
	return hostnameOf(r.Spec.ID)
}

// CapsuleInfo is what the agent reports about a capsule.
type CapsuleInfo struct {
	Spec      CapsuleSpec
	RuntimeID string
	Status    string
	Address   netip.Addr
	StartedAt time.Time
	// SnapshotBytes is the disk a paused capsule's saved state takes.
	SnapshotBytes int64
}

// CapsulesConfig configures the capsule manager.
type CapsulesConfig struct {
	// Dir is $WRENN_DIR: capsules live in Dir/sandboxes, templates in
	// Dir/images.
	Dir string
	// Driver runs the capsules.
	Driver runtime.Driver
	// Network gives each capsule its namespace, veth and address.
	Network *network.Manager
	// MaxVCPUs is the most vCPUs one capsule may have (the host's CPUs).
	MaxVCPUs int
	// WarmPool is how many started capsules to keep ready per template
	// and size (see pool.go); 0 turns the pool off.
	WarmPool int
	Logger   *slog.Logger
}

// Capsules runs the capsules of this host. It is safe for concurrent use;
// operations on one capsule are serialized.
type Capsules struct {
	cfg CapsulesConfig
	log *slog.Logger

	mu       sync.Mutex
	capsules map[string]*capsuleRecord // by capsule id; guarded by mu
	busy     map[string]bool           // ids with an operation in progress; guarded by mu
	// checking are the busy ids held by the heartbeat's check of a
	// capsule (confirmedStatus), which an operation waits out instead of
	// failing on; guarded by mu.
	checking map[string]bool

	pool *pool

	// receiving serializes templates received from other hosts
	// (ReceiveTemplate).
	receiving sync.Mutex

	stopHooks []func(address string) // run when a pause or destroy stops a sandbox; guarded by mu
}

// onSandboxStop registers f to run, with the sandbox's address, whenever a
// pause or a destroy stops a sandbox.
func (c *Capsules) onSandboxStop(f func(address string)) {
	c.mu.Lock()
	c.stopHooks = append(c.stopHooks, f)
	c.mu.Unlock()
}

func (c *Capsules) sandboxStopped(address string) {
	c.mu.Lock()
	hooks := slices.Clone(c.stopHooks)
	c.mu.Unlock()
	for _, f := range hooks {
		f(address)
	}
}

// OpenCapsules loads the capsules recorded under cfg.Dir, re-adopts those
// still running, removes whatever runtime or network leftovers belong to no
// recorded capsule (warm-pool capsules of an earlier run among them), and
// starts filling the warm pool.
func OpenCapsules(ctx context.Context, cfg CapsulesConfig) (*Capsules, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Capsules{cfg: cfg, log: cfg.Logger, capsules: map[string]*capsuleRecord{}, busy: map[string]bool{},
		checking: map[string]bool{}}
	if err := os.MkdirAll(c.sandboxesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("opening capsules: %w", err)
	}
	entries, err := os.ReadDir(c.sandboxesDir())
	if err != nil {
		return nil, fmt.Errorf("opening capsules: %w", err)
	}
	running, err := cfg.Driver.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening capsules: %w", err)
	}
	states := map[string]runtime.State{}
	for _, info := range running {
		states[info.ID] = info.State
	}
	kept := map[string]bool{} // runtime ids of re-adopted capsules
	for _, e := range entries {
		rec, err := readRecord(filepath.Join(c.sandboxesDir(), e.Name()))
		if err == nil && rec.RuntimeID == "" {
			rec.RuntimeID = rec.Spec.ID
		}
		if err != nil || rec.RuntimeID != e.Name() || !validID(rec.Spec.ID) || !adoptable(rec.Status) {
			// A capsule whose start never finished was never reported
			// to the control plane as running, and a warm-pool capsule
			// was never handed out: both are leftovers.
			c.log.Info("removing a capsule that was never handed out", "runtime_id", e.Name(), "err", err)
			if err := c.remove(ctx, e.Name()); err != nil {
				return nil, fmt.Errorf("removing leftover capsule %s: %w", e.Name(), err)
			}
			continue
		}
		if err := c.recoverRecord(ctx, rec, states[rec.RuntimeID]); err != nil {
			return nil, fmt.Errorf("re-adopting capsule %s: %w", rec.Spec.ID, err)
		}
		if rec.Status == capsuleRunning {
			states[rec.RuntimeID] = runtime.StateRunning
			if _, err := cfg.Network.Setup(ctx, rec.RuntimeID); err != nil {
				return nil, fmt.Errorf("re-adopting capsule %s: %w", rec.Spec.ID, err)
			}
		} else {
			// A paused capsule keeps its address for its resume, but
			// no sandbox.
			delete(states, rec.RuntimeID)
		}
		// The network's own record has the policy too; the capsule's
		// record is the one that counts.
		if _, ok := cfg.Network.Lookup(rec.RuntimeID); ok {
			if err := cfg.Network.SetPolicy(ctx, rec.RuntimeID, rec.Spec.policy()); err != nil {
				return nil, fmt.Errorf("re-adopting capsule %s: %w", rec.Spec.ID, err)
			}
		}
		c.capsules[rec.Spec.ID] = rec
		kept[rec.RuntimeID] = true
		c.log.Info("re-adopted capsule", "capsule_id", rec.Spec.ID, "status", rec.Status)
	}
	if err := c.removeOrphanSavedStates(); err != nil {
		return nil, err
	}
	for _, info := range running {
		if _, live := states[info.ID]; !kept[info.ID] || !live {
			c.log.Warn("destroying a sandbox that belongs to no capsule", "runtime_id", info.ID)
			if err := cfg.Driver.Destroy(ctx, info.ID); err != nil {
				return nil, fmt.Errorf("removing leftover sandbox %s: %w", info.ID, err)
			}
		}
	}
	if err := cfg.Network.Cleanup(ctx, func(id string) bool { return kept[id] }); err != nil {
		return nil, fmt.Errorf("removing network leftovers: %w", err)
	}
	c.pool = newPool(c, cfg.WarmPool)
	for _, p := range c.defaultProfiles() {
		c.pool.want(p)
	}
	return c, nil
}

func (c *Capsules) sandboxesDir() string { return filepath.Join(c.cfg.Dir, "sandboxes") }
func (c *Capsules) imagesDir() string    { return filepath.Join(c.cfg.Dir, "images") }

// Templates lists the base templates this host has (not its snapshots).
func (c *Capsules) Templates() []string {
	base, _, _ := c.TemplateDirs("", 0)
	return base
}

// FreeAddresses is how many more capsules this host has addresses for:
// the pool's free slots and the warm pool's waiting capsules, whose
// addresses go to the next creates. Paused capsules keep theirs.
func (c *Capsules) FreeAddresses() int {
	n := c.cfg.Network.FreeSlots()
	if c.pool != nil {
		n += c.pool.waiting()
	}
	return n
}

// TemplateDirs reads the images directory once and returns the base
// templates this host has, and one page of its snapshot directories: at
// most limit, sorted, with names after after, and how many there are in
// all. Heartbeats report snapshots a page at a time, so that any number of
// them fits.
func (c *Capsules) TemplateDirs(after string, limit int) (base, snapshots []string, total int) {
	base = []string{}
	entries, err := os.ReadDir(c.imagesDir()) // sorted by name
	if err != nil {
		return base, nil, 0
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case !rules.ValidTemplateName(name):
		case c.isSnapshot(name):
			total++
			if name > after && len(snapshots) < limit {
				snapshots = append(snapshots, name)
			}
		case c.cfg.Driver.UsableTemplate(filepath.Join(c.imagesDir(), name)) == nil:
			base = append(base, name)
		}
	}
	return base, snapshots, total
}

// isSnapshot reports whether template directory name holds a snapshot's
// saved state.
func (c *Capsules) isSnapshot(name string) bool {
	if !rules.ValidTemplateName(name) {
		return false
	}
	_, err := os.Stat(filepath.Join(c.imagesDir(), name, templateSnapMeta))
	return err == nil
}

// hasTemplate reports whether name is a usable template on this host: one
// the driver can boot (Driver.UsableTemplate), or a snapshot.
func (c *Capsules) hasTemplate(name string) bool {
	if !rules.ValidTemplateName(name) {
		return false
	}
	dir := filepath.Join(c.imagesDir(), name)
	if c.cfg.Driver.UsableTemplate(dir) == nil {
		return true
	}
	_, err := os.Stat(filepath.Join(dir, templateSnapMeta))
	return err == nil
}

// networkOf is what the driver is told of the network slot gives a capsule.
func (c *Capsules) networkOf(slot network.Slot) runtime.Network {
	addr, gw := c.cfg.Network.Sandbox(slot)
	return runtime.Network{NetnsPath: slot.NetnsPath, Device: c.cfg.Network.Device(), Address: addr, Gateway: gw}
}

// checkWait bounds how long an operation waits for the heartbeat's check
// of its capsule (a runsc state, or a thaw) to end.
const checkWait = 10 * time.Second

// claim marks id busy, so that no other operation on it runs meanwhile.
// An operation under way makes it fail; the heartbeat's check of the
// capsule is housekeeping, not an operation of anyone's, and is waited
// out (up to checkWait).
func (c *Capsules) claim(id string) bool {
	deadline := time.Now().Add(checkWait)
	for {
		c.mu.Lock()
		if !c.busy[id] {
			c.busy[id] = true
			c.mu.Unlock()
			return true
		}
		checking := c.checking[id]
		c.mu.Unlock()
		if !checking || time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// claimCheck is claim for the heartbeat's check of capsule id: it never
// waits, and operations wait for it.
func (c *Capsules) claimCheck(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[id] {
		return false
	}
	c.busy[id], c.checking[id] = true, true
	return true
}

func (c *Capsules) release(id string) {
	c.mu.Lock()
	delete(c.busy, id)
	delete(c.checking, id)
	c.mu.Unlock()
}

// validID reports whether id is a capsule id (rules.ValidCapsuleID).
func validID(id string) bool { return rules.ValidCapsuleID(id) }

// validate reports what is wrong with spec.
func (c *Capsules) validate(spec CapsuleSpec) error {
	if !validID(spec.ID) {
		return fmt.Errorf("%w: capsule_id %q is not %s", errInvalidSpec, spec.ID, rules.CapsuleIDRule)
	}
	if !rules.ValidTemplateName(spec.Template) {
		return fmt.Errorf("%w: template name %q", errInvalidSpec, spec.Template)
	}
	if spec.VCPUs < 1 || (c.cfg.MaxVCPUs > 0 && spec.VCPUs > c.cfg.MaxVCPUs) {
		return fmt.Errorf("%w: vcpus must be 1..%d, not %d", errInvalidSpec, c.cfg.MaxVCPUs, spec.VCPUs)
	}
	if spec.MemoryMB < rules.MinMemoryMB || spec.DiskMB < rules.MinDiskMB {
		return fmt.Errorf("%w: memory_mb must be at least %d and disk_mb at least %d", errInvalidSpec, rules.MinMemoryMB, rules.MinDiskMB)
	}
	for k := range spec.Envs {
		if !rules.ValidEnvName(k) {
			return fmt.Errorf("%w: environment variable name %q", errInvalidSpec, k)
		}
	}
	if _, err := spec.policy().Normalize(); err != nil {
		return fmt.Errorf("%w: %w", errInvalidSpec, err)
	}
	// Only the template asked for is looked at: a host may hold many
	// snapshots, and this is on every create's path.
	if !c.hasTemplate(spec.Template) {
		return fmt.Errorf("%w: %s", errNoTemplate, spec.Template)
	}
	return nil
}

// Create starts a capsule and returns once its envd is initialized with a
// fresh token. A ready capsule of the same template and size from the warm
// pool is taken when there is one; otherwise one is started. On any failure
// everything made for the capsule is removed again.
func (c *Capsules) Create(ctx context.Context, spec CapsuleSpec) (CapsuleInfo, error) {
	if err := c.validate(spec); err != nil {
		return CapsuleInfo{}, err
	}
	if !c.claim(spec.ID) {
		return CapsuleInfo{}, fmt.Errorf("%w: %s", errCapsuleExists, spec.ID)
	}
	defer c.release(spec.ID)
	c.mu.Lock()
	_, exists := c.capsules[spec.ID]
	c.mu.Unlock()
	if _, err := os.Stat(filepath.Join(c.sandboxesDir(), spec.ID)); exists || err == nil {
		return CapsuleInfo{}, fmt.Errorf("%w: %s", errCapsuleExists, spec.ID)
	}

	start := time.Now()
	if meta, ok, err := c.readSnapshotMeta(spec.Template); err != nil {
		return CapsuleInfo{}, err
	} else if ok {
		return c.createRestored(ctx, spec, meta, start)
	}
	prof := profileOf(spec)
	defer c.pool.want(prof) // refill, or learn what is asked for
	if rec := c.pool.take(ctx, spec); rec != nil {
		c.mu.Lock()
		c.capsules[spec.ID] = rec
		c.mu.Unlock()
		c.log.Info("capsule started from the warm pool", "capsule_id", spec.ID, "runtime_id", rec.RuntimeID,
			"template", spec.Template, "address", rec.Address, "took_ms", time.Since(start).Milliseconds())
		return rec.info(), nil
	}
	var phases startPhases
	rec, err := c.start(ctx, spec, spec.ID, hostnameOf(spec.ID), &phases)
	if err := c.adopt(ctx, spec.ID, rec, err); err != nil {
		return CapsuleInfo{}, err
	}
	c.log.Info("capsule started", "capsule_id", spec.ID, "template", spec.Template,
		"address", rec.Address, "took_ms", time.Since(start).Milliseconds(),
		"network_ms", phases.network.Milliseconds(), "runtime_ms", phases.runtime.Milliseconds(),
		"envd_ms", phases.envd.Milliseconds())
	return rec.info(), nil
}

// dirOf is the directory of the capsule whose runtime id is id.
func (c *Capsules) dirOf(runtimeID string) string { return filepath.Join(c.sandboxesDir(), runtimeID) }

// start boots a fresh capsule for spec under runtimeID (bringup.go). The
// caller records the final status.
func (c *Capsules) start(ctx context.Context, spec CapsuleSpec, runtimeID, hostname string, phases *startPhases) (*capsuleRecord, error) {
	rec, err := c.newRecord(spec, runtimeID, hostname, spec.Template)
	if err != nil {
		return nil, err
	}
	*phases, err = c.bringUp(ctx, rec, bootPlan{fresh: true, boot: c.cfg.Driver.Create, initEnvd: true})
	if err != nil {
		return nil, err
	}
	return rec, nil
}

// hostnameOf is a capsule's hostname: short, stable, derived from its id.
func hostnameOf(id string) string { return "capsule-" + id[:8] }

// initEnvd waits for the capsule's envd to answer, then hands it the
// capsule's token, environment and hostname. current is the token envd
// already has ("" for a fresh envd); a warm-pool capsule is handed to its
// user this way, its pool token rotated away.
func initEnvd(ctx context.Context, rec *capsuleRecord, current, hostname string) error {
	client := envdclient.New(envdURL(rec.Address), current)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, envdReadyTimeout)
	defer cancel()
	if current == "" {
		if err := waitHealthy(ctx, client); err != nil {
			return err
		}
	}
	err := client.Init(ctx, envdclient.InitRequest{
		AccessToken: rec.Token,
		EnvVars:     rec.Spec.Envs,
		DefaultUser: rec.DefaultUser,
		Hostname:    hostname,
	})
	if err != nil {
		return fmt.Errorf("initializing envd: %w", err)
	}
	return nil
}

// waitHealthy polls client's envd until it answers or ctx ends. envd is
// usually up within milliseconds of the sandbox: it polls often at first,
// and backs off only if envd is slow.
func waitHealthy(ctx context.Context, client *envdclient.Client) error {
	wait := 500 * time.Microsecond
	for {
		hctx, hcancel := context.WithTimeout(ctx, time.Second)
		err := client.Health(hctx)
		hcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for envd: %w (last error: %w)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Millisecond)
	}
}

// envdURL is the base URL of the envd at a capsule address.
func envdURL(addr string) string {
	return "http://" + netip.AddrPortFrom(netip.MustParseAddr(addr), runtime.EnvdPort).String()
}

// Destroy stops a capsule and removes all it had. Unknown ids succeed.
func (c *Capsules) Destroy(ctx context.Context, id string) error {
	if !validID(id) {
		return fmt.Errorf("%w: capsule_id %q is not %s", errInvalidSpec, id, rules.CapsuleIDRule)
	}
	if !c.claim(id) {
		return fmt.Errorf("%w: %s", errCapsuleBusy, id)
	}
	defer c.release(id)
	runtimeID := id
	c.mu.Lock()
	rec, ok := c.capsules[id]
	if ok {
		runtimeID = rec.RuntimeID
	}
	c.mu.Unlock()
	if !ok {
		// An id that is no capsule's may still name the sandbox of one:
		// the runtime id of a capsule the warm pool handed out, or of one
		// waiting in it. Its record says whose it is, and it is not this
		// id's to destroy. (What a failed create of id left has id's
		// record, or none.)
		if other, err := readRecord(c.dirOf(id)); err == nil && other.Spec.ID != id {
			return nil
		}
	}
	if err := c.remove(ctx, runtimeID); err != nil {
		var left *LeftoversError
		if errors.As(err, &left) {
			left.CapsuleID = id
			c.log.Warn("capsule destroyed with leftovers", "capsule_id", id, "error", left.Err)
		}
		return err
	}
	if err := os.RemoveAll(c.savedDir(id)); err != nil {
		err = &LeftoversError{CapsuleID: id, Err: fmt.Errorf("removing its saved state: %w", err)}
		c.log.Warn("capsule destroyed with leftovers", "capsule_id", id, "error", err)
		return err
	}
	c.mu.Lock()
	delete(c.capsules, id)
	c.mu.Unlock()
	c.log.Info("capsule destroyed", "capsule_id", id)
	return nil
}

// remove tears down whatever exists of the capsule with runtime id
// runtimeID: sandbox, network, files, record. It goes on past errors so
// that one stuck part does not keep the others alive, and reports them: as
// a *LeftoversError when the sandbox is gone and only the rest is not.
func (c *Capsules) remove(ctx context.Context, runtimeID string) error {
	sandboxErr := c.cfg.Driver.Destroy(ctx, runtimeID)
	if sandboxErr == nil {
		if rec, err := readRecord(c.dirOf(runtimeID)); err == nil && rec.Address != "" {
			// The sandbox is gone and its address is about to go to the
			// next capsule: no connection to this one's envd may serve
			// that one.
			c.sandboxStopped(rec.Address)
		}
	}
	var errs []error
	if err := c.cfg.Network.Teardown(ctx, runtimeID); err != nil {
		errs = append(errs, err)
	}
	if sandboxErr == nil && len(errs) == 0 {
		// Files go last: while the sandbox or network could not be
		// removed, the record is what lets a retry find them.
		if err := os.RemoveAll(c.dirOf(runtimeID)); err != nil {
			errs = append(errs, fmt.Errorf("removing its files: %w", err))
		}
	}
	switch {
	case sandboxErr != nil:
		return fmt.Errorf("destroying capsule %s: %w", runtimeID, errors.Join(append([]error{sandboxErr}, errs...)...))
	case len(errs) > 0:
		return &LeftoversError{CapsuleID: runtimeID, Err: errors.Join(errs...)}
	}
	return nil
}

// Get reports one capsule, asking the driver whether it still runs.
func (c *Capsules) Get(ctx context.Context, id string) (CapsuleInfo, error) {
	c.mu.Lock()
	rec, ok := c.capsules[id]
	var cp capsuleRecord
	if ok {
		cp = *rec
	}
	c.mu.Unlock()
	if !ok {
		return CapsuleInfo{}, fmt.Errorf("%w: %s", errCapsuleNotFound, id)
	}
	if cp.Status == capsuleRunning {
		if info, err := c.cfg.Driver.Info(ctx, cp.RuntimeID); err != nil || info.State != runtime.StateRunning {
			// The record was read before runsc was asked: a pause may
			// have frozen or removed the sandbox in between.
			cp.Status = c.confirmedStatus(ctx, id)
		}
	}
	if cp.Status == capsulePaused {
		return c.snapshotInfo(&cp), nil
	}
	return cp.info(), nil
}

// List reports every capsule, ordered by id. When the driver cannot be
// asked, each capsule is reported as last recorded and the error returned
// with the list, so that a heartbeat still carries it.
func (c *Capsules) List(ctx context.Context) ([]CapsuleInfo, error) {
	states := map[string]runtime.State{}
	infos, listErr := c.cfg.Driver.List(ctx)
	for _, i := range infos {
		states[i.ID] = i.State
	}
	c.mu.Lock()
	out := make([]CapsuleInfo, 0, len(c.capsules))
	var doubtful []int // indexes in out of capsules runsc did not see running
	for _, rec := range c.capsules {
		info := rec.info()
		if listErr == nil && info.Status == capsuleRunning && states[rec.RuntimeID] != runtime.StateRunning {
			doubtful = append(doubtful, len(out))
		}
		out = append(out, info)
	}
	c.mu.Unlock()
	// runsc was asked before the records were read: a capsule that a
	// resume or create brought up in between is recorded running but was
	// not in runsc's answer. Only a fresh look, with no operation on the
	// capsule under way, may call it stopped: the control plane settles a
	// capsule reported stopped as stopped and destroys it.
	for _, i := range doubtful {
		out[i].Status = c.confirmedStatus(ctx, out[i].Spec.ID)
	}
	slices.SortFunc(out, func(a, b CapsuleInfo) int { return strings.Compare(a.Spec.ID, b.Spec.ID) })
	return out, listErr
}

// confirmedStatus is the status of capsule id as recorded, except that one
// recorded running whose sandbox runsc has not or calls stopped is stopped.
// It asks runsc while it holds the capsule, so that no pause, resume or
// create changes the capsule between its record and runsc's answer; a
// capsule busy with one is reported as recorded.
func (c *Capsules) confirmedStatus(ctx context.Context, id string) string {
	c.mu.Lock()
	rec, ok := c.capsules[id]
	var status, runtimeID string
	if ok {
		status, runtimeID = rec.Status, rec.RuntimeID
	}
	c.mu.Unlock()
	if !ok || status != capsuleRunning || !c.claimCheck(id) {
		return status
	}
	defer c.release(id)
	c.mu.Lock()
	status = rec.Status
	c.mu.Unlock()
	if status != capsuleRunning {
		return status
	}
	// Only a sandbox runsc no longer has, or calls stopped, is: a runsc
	// that fails to answer, or a sandbox still frozen, says nothing of
	// that, and a stopped report makes the control plane stop the capsule
	// for good.
	info, err := c.cfg.Driver.Info(ctx, runtimeID)
	if errors.Is(err, runtime.ErrNotFound) || (err == nil && info.State == runtime.StateStopped) {
		return capsuleStopped
	}
	if err == nil && info.State == runtime.StateFrozen {
		// Recorded running, frozen, and no operation on it: a pause
		// whose checkpoint and then thaw failed. It is thawed now, as an
		// agent restart would (recoverRecord), rather than left unusable.
		if cp, cerr := c.checkpointer(); cerr == nil {
			if terr := cp.Thaw(ctx, runtimeID); terr != nil {
				c.log.Error("thawing a running capsule left frozen", "capsule_id", id, "err", terr)
			} else {
				c.log.Warn("thawed a running capsule left frozen", "capsule_id", id)
			}
		}
	}
	return status
}

// envdTarget returns the address and token of a running capsule's envd.
func (c *Capsules) envdTarget(id string) (addr, token string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rec, ok := c.capsules[id]
	if !ok {
		return "", "", fmt.Errorf("%w: %s", errCapsuleNotFound, id)
	}
	if rec.Status != capsuleRunning {
		return "", "", fmt.Errorf("capsule %s is %s", id, rec.Status)
	}
	return rec.Address, rec.Token, nil
}

func (r *capsuleRecord) info() CapsuleInfo {
	info := CapsuleInfo{Spec: r.Spec, RuntimeID: r.RuntimeID, Status: r.Status, StartedAt: r.StartedAt}
	info.Address, _ = netip.ParseAddr(r.Address)
	return info
}

// newToken returns a fresh envd access token.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating envd token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

const recordFile = "capsule.json"
