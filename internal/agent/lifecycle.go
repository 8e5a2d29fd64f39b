package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/durable"
	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// This file holds pause, resume and snapshots. A pause saves the whole
// capsule under $WRENN_DIR/snapshots/<capsule id>/image and records it as
// saved (saved.json, synced) before the sandbox is stopped; the capsule
// record says where a pause or resume stood when the agent died, and
// OpenCapsules finishes or undoes it (recover below). A snapshot template
// is a saved state hard-linked into $WRENN_DIR/images/<name>/snapshot,
// with snapshot.json saying what it restores to.

// Capsule statuses of pause and resume, as recorded and reported.
const (
	capsulePausing  = string(capsule.Pausing)
	capsulePaused   = string(capsule.Paused)
	capsuleResuming = string(capsule.Resuming)
)

// Errors of pause, resume and snapshots.
var (
	errWrongState     = errors.New("capsule is not in a state that allows this")
	errBaseTemplate   = errors.New("base templates cannot be deleted")
	errTemplateExists = errors.New("template already exists")
	errNoCheckpoint   = errors.New("this runtime cannot save capsules")
)

// Files of saved state.
const (
	snapshotsDir     = "snapshots"     // $WRENN_DIR/snapshots/<capsule id>
	savedImageDir    = "image"         // runsc's files, inside it
	savedMarker      = "saved.json"    // written once the image is durable
	templateSnapDir  = "snapshot"      // $WRENN_DIR/images/<name>/snapshot
	templateSnapMeta = "snapshot.json" // $WRENN_DIR/images/<name>/snapshot.json
)

// TemplateInfo is a template as the agent reports it.
type TemplateInfo struct {
	Name      string
	Kind      string // "base" or "snapshot"
	VCPUs     int
	MemoryMB  int
	DiskMB    int
	SizeBytes int64
}

// savedState is what saved.json records about a pause.
type savedState struct {
	SavedAt time.Time `json:"saved_at"`
	Bytes   int64     `json:"bytes"`
}

// snapshotMeta is a snapshot template's snapshot.json (0600: it holds the
// envd token of the capsule it was taken from, which every capsule
// restored from it starts with until the agent rotates it).
type snapshotMeta struct {
	// Base is the base template whose root filesystem lies under the
	// saved writable layer.
	Base     string    `json:"base"`
	VCPUs    int       `json:"vcpus"`
	MemoryMB int       `json:"memory_mb"`
	DiskMB   int       `json:"disk_mb"`
	Token    string    `json:"token"`
	Hostname string    `json:"hostname"`
	TakenAt  time.Time `json:"taken_at"`
	Source   string    `json:"source_capsule_id"`
}

func (c *Capsules) savedDir(capsuleID string) string {
	return filepath.Join(c.cfg.Dir, snapshotsDir, capsuleID)
}

func (c *Capsules) checkpointer() (runtime.Checkpointer, error) {
	cp, ok := c.cfg.Driver.(runtime.Checkpointer)
	if !ok {
		return nil, fmt.Errorf("%w (%s)", errNoCheckpoint, c.cfg.Driver.Name())
	}
	return cp, nil
}

// lockedRecord claims id and returns its record, which the caller may then
// change (under c.mu for fields others read) until it calls the returned
// release.
func (c *Capsules) lockedRecord(id string) (*capsuleRecord, func(), error) {
	if !validID(id) {
		return nil, nil, fmt.Errorf("%w: capsule_id %q is not %s", errInvalidSpec, id, rules.CapsuleIDRule)
	}
	if !c.claim(id) {
		return nil, nil, fmt.Errorf("%w: %s", errCapsuleBusy, id)
	}
	c.mu.Lock()
	rec, ok := c.capsules[id]
	c.mu.Unlock()
	if !ok {
		c.release(id)
		return nil, nil, fmt.Errorf("%w: %s", errCapsuleNotFound, id)
	}
	return rec, func() { c.release(id) }, nil
}

// setStatus records a new status durably, then makes it visible.
func (c *Capsules) setStatus(rec *capsuleRecord, status string) error {
	c.mu.Lock()
	next := *rec
	c.mu.Unlock()
	next.Status = status
	if err := writeRecord(c.dirOf(rec.RuntimeID), &next); err != nil {
		return err
	}
	c.mu.Lock()
	*rec = next
	c.mu.Unlock()
	return nil
}

// Pause saves a running capsule and stops it. It answers only once the
// saved state is on disk and recorded; if anything fails before that, the
// capsule runs on as it was.
func (c *Capsules) Pause(ctx context.Context, id string) (CapsuleInfo, error) {
	rec, release, err := c.lockedRecord(id)
	if err != nil {
		return CapsuleInfo{}, err
	}
	defer release()
	if err := c.pause(ctx, rec); err != nil {
		return CapsuleInfo{}, err
	}
	return c.snapshotInfo(rec), nil
}

func (c *Capsules) pause(ctx context.Context, rec *capsuleRecord) error {
	cp, err := c.checkpointer()
	if err != nil {
		return err
	}
	if rec.Status != capsuleRunning {
		return fmt.Errorf("%w: capsule %s is %s, not running", errWrongState, rec.Spec.ID, rec.Status)
	}
	start := time.Now()
	// envd flushes what it buffers and syncs; the checkpoint would keep
	// it all anyway, so a slow envd only costs a warning.
	if err := prepareEnvd(ctx, rec); err != nil {
		c.log.Warn("envd did not prepare for the pause", "capsule_id", rec.Spec.ID, "err", err)
	}
	prepared := time.Since(start)
	saved := c.savedDir(rec.Spec.ID)
	if err := os.RemoveAll(saved); err != nil {
		return fmt.Errorf("clearing old saved state: %w", err)
	}
	image := filepath.Join(saved, savedImageDir)
	if err := os.MkdirAll(image, 0o700); err != nil {
		return fmt.Errorf("creating saved state dir: %w", err)
	}
	// Recorded before the checkpoint, so that an agent dying half-way
	// knows on restart to look at what it left (see recoverRecord).
	if err := c.setStatus(rec, capsulePausing); err != nil {
		_ = os.RemoveAll(saved)
		return err
	}
	t0 := time.Now()
	if err := cp.Checkpoint(ctx, rec.RuntimeID, image); err != nil {
		// The driver thawed the capsule: it runs as before.
		_ = os.RemoveAll(saved)
		if serr := c.setStatus(rec, capsuleRunning); serr != nil {
			c.log.Error("recording a capsule running again after a failed pause", "capsule_id", rec.Spec.ID, "err", serr)
		}
		return fmt.Errorf("pausing capsule %s: %w", rec.Spec.ID, err)
	}
	checkpointed := time.Since(t0)
	size, err := dirSize(image)
	if err == nil {
		err = writeJSONDurable(filepath.Join(saved, savedMarker), savedState{SavedAt: time.Now().UTC(), Bytes: size})
	}
	if err == nil {
		err = c.setStatus(rec, capsulePaused)
	}
	if err != nil {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if terr := cp.Thaw(tctx, rec.RuntimeID); terr != nil {
			c.log.Error("thawing a capsule whose pause could not be recorded", "capsule_id", rec.Spec.ID, "err", terr)
		}
		_ = os.Remove(filepath.Join(saved, savedMarker))
		if serr := c.setStatus(rec, capsuleRunning); serr != nil {
			c.log.Error("recording a capsule running again after a failed pause", "capsule_id", rec.Spec.ID, "err", serr)
		}
		return fmt.Errorf("pausing capsule %s: %w", rec.Spec.ID, err)
	}
	// The capsule is paused for good now: its saved state is durable and
	// recorded. The frozen sandbox only holds memory and CPU; if it cannot
	// be removed now, the next start of the agent removes it.
	t0 = time.Now()
	if err := c.cfg.Driver.Destroy(context.WithoutCancel(ctx), rec.RuntimeID); err != nil {
		c.log.Error("stopping a paused capsule's sandbox", "capsule_id", rec.Spec.ID, "err", err)
	}
	c.sandboxStopped(rec.Address)
	c.log.Info("capsule paused", "capsule_id", rec.Spec.ID, "bytes", size,
		"took_ms", time.Since(start).Milliseconds(), "prepare_ms", prepared.Milliseconds(),
		"checkpoint_ms", checkpointed.Milliseconds(), "stop_ms", time.Since(t0).Milliseconds())
	return nil
}

// prepareEnvd asks the capsule's envd to get ready for a pause.
func prepareEnvd(ctx context.Context, rec *capsuleRecord) error {
	client := envdclient.New(envdURL(rec.Address), rec.Token)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return client.PreparePause(ctx)
}

// Resume restores a paused capsule with its id, address and token.
func (c *Capsules) Resume(ctx context.Context, id string) (CapsuleInfo, error) {
	rec, release, err := c.lockedRecord(id)
	if err != nil {
		return CapsuleInfo{}, err
	}
	defer release()
	if err := c.resume(ctx, rec); err != nil {
		return CapsuleInfo{}, err
	}
	return c.snapshotInfo(rec), nil
}

func (c *Capsules) resume(ctx context.Context, rec *capsuleRecord) error {
	if _, err := c.checkpointer(); err != nil {
		return err
	}
	if rec.Status != capsulePaused {
		return fmt.Errorf("%w: capsule %s is %s, not paused", errWrongState, rec.Spec.ID, rec.Status)
	}
	saved := c.savedDir(rec.Spec.ID)
	if _, err := readSaved(saved); err != nil {
		return fmt.Errorf("resuming capsule %s: %w", rec.Spec.ID, err)
	}
	start := time.Now()
	// A resume cut short by the caller would leave the capsule half
	// restored; it takes a fraction of a second, so it always finishes.
	ctx = context.WithoutCancel(ctx)
	// "resuming" is not written to disk: an agent that dies during the
	// restore finds the capsule recorded paused and removes whatever
	// sandbox the restore got to start (see recoverRecord), which is
	// true, and saves an fsync on the way to a running capsule.
	c.mu.Lock()
	rec.Status = capsuleResuming
	c.mu.Unlock()
	phases, err := c.restore(ctx, rec, filepath.Join(saved, savedImageDir))
	if err == nil {
		err = c.setStatus(rec, capsuleRunning)
	}
	if err != nil {
		if derr := c.cfg.Driver.Destroy(ctx, rec.RuntimeID); derr != nil {
			c.log.Error("stopping a capsule whose resume failed", "capsule_id", rec.Spec.ID, "err", derr)
		}
		c.mu.Lock()
		rec.Status = capsulePaused
		c.mu.Unlock()
		c.log.Error("resume failed; the capsule stays paused", "capsule_id", rec.Spec.ID, "err", err)
		return fmt.Errorf("resuming capsule %s: %w", rec.Spec.ID, err)
	}
	// The capsule has moved on from the saved state: keeping it would only
	// cost disk (snapshot templates hold their own links to the files).
	// Removing 100 MB of files takes a while; nobody waits for it.
	// A name of its own each time: the removal of the previous resume's
	// may still be running.
	doomed := fmt.Sprintf("%s.resumed-%d", saved, time.Now().UnixNano())
	if err := os.Rename(saved, doomed); err != nil {
		c.log.Warn("removing a resumed capsule's saved state", "capsule_id", rec.Spec.ID, "err", err)
	} else {
		go func() {
			if err := os.RemoveAll(doomed); err != nil {
				c.log.Warn("removing a resumed capsule's saved state", "capsule_id", rec.Spec.ID, "err", err)
			}
		}()
	}
	c.log.Info("capsule resumed", "capsule_id", rec.Spec.ID, "took_ms", time.Since(start).Milliseconds(),
		"network_ms", phases.network.Milliseconds(), "runtime_ms", phases.runtime.Milliseconds(),
		"envd_ms", phases.envd.Milliseconds())
	return nil
}

// restore starts paused rec's sandbox from image in its renewed network
// and waits for its envd (bringup.go).
func (c *Capsules) restore(ctx context.Context, rec *capsuleRecord, image string) (startPhases, error) {
	cp, err := c.checkpointer()
	if err != nil {
		return startPhases{}, err
	}
	// A paused capsule has no sandbox, unless removing the frozen one
	// failed at the end of the pause; it goes now, or the restore would
	// find its id taken. (For an unknown id this costs no runsc call.)
	if err := c.cfg.Driver.Destroy(ctx, rec.RuntimeID); err != nil {
		return startPhases{}, err
	}
	return c.bringUp(ctx, rec, bootPlan{boot: restoreFrom(cp, image), envdHolds: rec.Token})
}

// restoreFrom is a bring-up's runtime step that restores the state saved
// in image.
func restoreFrom(cp runtime.Checkpointer, image string) func(context.Context, runtime.Spec) (runtime.Info, error) {
	return func(ctx context.Context, spec runtime.Spec) (runtime.Info, error) {
		return cp.Restore(ctx, spec, image)
	}
}

// waitEnvd waits for the envd at addr, which holds token, to answer.
func waitEnvd(ctx context.Context, addr, token string) error {
	client := envdclient.New(envdURL(addr), token)
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, envdReadyTimeout)
	defer cancel()
	return waitHealthy(ctx, client)
}

// Snapshot makes template name out of a capsule's saved state. A running
// capsule is paused for it, and resumed afterwards when resume is set.
func (c *Capsules) Snapshot(ctx context.Context, id, name string, resume bool) (CapsuleInfo, TemplateInfo, error) {
	if !rules.ValidTemplateName(name) {
		return CapsuleInfo{}, TemplateInfo{}, fmt.Errorf("%w: template name %q", errInvalidSpec, name)
	}
	rec, release, err := c.lockedRecord(id)
	if err != nil {
		return CapsuleInfo{}, TemplateInfo{}, err
	}
	defer release()
	if _, err := os.Lstat(filepath.Join(c.imagesDir(), name)); err == nil {
		return CapsuleInfo{}, TemplateInfo{}, fmt.Errorf("%w: %s", errTemplateExists, name)
	}
	wasRunning := rec.Status == capsuleRunning
	if !wasRunning && rec.Status != capsulePaused {
		return CapsuleInfo{}, TemplateInfo{}, fmt.Errorf("%w: capsule %s is %s", errWrongState, id, rec.Status)
	}
	if wasRunning {
		if err := c.pause(ctx, rec); err != nil {
			return CapsuleInfo{}, TemplateInfo{}, err
		}
	}
	tmpl, terr := c.makeTemplate(rec, name)
	if wasRunning && resume {
		if err := c.resume(ctx, rec); err != nil {
			// The capsule stays paused, which is true and resumable.
			c.log.Error("resuming a capsule after its snapshot", "capsule_id", id, "err", err)
			if terr == nil {
				terr = fmt.Errorf("snapshot %s was taken but the capsule could not be resumed: %w", name, err)
			}
		}
	}
	if terr != nil {
		return c.snapshotInfo(rec), TemplateInfo{}, terr
	}
	c.log.Info("snapshot taken", "capsule_id", id, "template", name, "bytes", tmpl.SizeBytes)
	return c.snapshotInfo(rec), tmpl, nil
}

// makeTemplate links the paused rec's saved state into a new template.
// The template appears whole or not at all: it is built under a temporary
// name and renamed into place once synced.
func (c *Capsules) makeTemplate(rec *capsuleRecord, name string) (TemplateInfo, error) {
	final := filepath.Join(c.imagesDir(), name)
	tmp := filepath.Join(c.imagesDir(), ".new-"+name)
	if err := os.RemoveAll(tmp); err != nil {
		return TemplateInfo{}, err
	}
	fail := func(err error) (TemplateInfo, error) {
		_ = os.RemoveAll(tmp)
		return TemplateInfo{}, fmt.Errorf("making template %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, templateSnapDir), 0o700); err != nil {
		return fail(err)
	}
	image := filepath.Join(c.savedDir(rec.Spec.ID), savedImageDir)
	entries, err := os.ReadDir(image)
	if err != nil {
		return fail(err)
	}
	for _, e := range entries {
		// A hard link costs no copy; the capsule's own saved state may be
		// removed on resume without touching the template's.
		if err := linkOrCopy(filepath.Join(image, e.Name()), filepath.Join(tmp, templateSnapDir, e.Name())); err != nil {
			return fail(err)
		}
	}
	meta := snapshotMeta{
		Base: rec.base(), VCPUs: rec.Spec.VCPUs, MemoryMB: rec.Spec.MemoryMB, DiskMB: rec.Spec.DiskMB,
		Token: rec.Token, Hostname: rec.bootHostname(), TakenAt: time.Now().UTC(), Source: rec.Spec.ID,
	}
	if err := writeJSONDurable(filepath.Join(tmp, templateSnapMeta), meta); err != nil {
		return fail(err)
	}
	if err := durable.Sync(filepath.Join(tmp, templateSnapDir)); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if err := durable.Sync(c.imagesDir()); err != nil {
		return TemplateInfo{}, err
	}
	size, _ := dirSize(filepath.Join(final, templateSnapDir))
	return TemplateInfo{Name: name, Kind: "snapshot", VCPUs: meta.VCPUs, MemoryMB: meta.MemoryMB, DiskMB: meta.DiskMB, SizeBytes: size}, nil
}

// readSnapshotMeta reads template's snapshot.json; ok is false for a base
// template.
func (c *Capsules) readSnapshotMeta(template string) (snapshotMeta, bool, error) {
	b, err := os.ReadFile(filepath.Join(c.imagesDir(), template, templateSnapMeta))
	if errors.Is(err, fs.ErrNotExist) {
		return snapshotMeta{}, false, nil
	}
	if err != nil {
		return snapshotMeta{}, false, err
	}
	var m snapshotMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return snapshotMeta{}, false, fmt.Errorf("reading snapshot template %s: %w", template, err)
	}
	return m, true, nil
}

// DeleteTemplate removes a snapshot template or an imported one (see
// Import). Capsules restored from a snapshot do not need it any more; base
// templates an operator built are never removed this way.
func (c *Capsules) DeleteTemplate(ctx context.Context, name string) error {
	if !rules.ValidTemplateName(name) {
		return fmt.Errorf("%w: template name %q", errInvalidSpec, name)
	}
	dir := filepath.Join(c.imagesDir(), name)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, ok, err := c.readSnapshotMeta(name); err != nil {
		return err
	} else if !ok && !c.isImported(name) {
		return fmt.Errorf("%w: %s", errBaseTemplate, name)
	}
	// Renamed away first, so that the template disappears at once and a
	// crash half-way through the removal leaves no half template.
	trash := filepath.Join(c.imagesDir(), ".deleted-"+name)
	_ = os.RemoveAll(trash)
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("deleting template %s: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("deleting template %s: %w", name, err)
	}
	c.log.Info("template deleted", "template", name)
	return nil
}

// createFromSnapshot starts capsule spec from snapshot template meta: the
// saved state is restored under a new id, address and hostname, and envd
// is handed the capsule's own token and environment.
func (c *Capsules) createFromSnapshot(ctx context.Context, spec CapsuleSpec, meta snapshotMeta) (*capsuleRecord, error) {
	if spec.VCPUs != meta.VCPUs || spec.MemoryMB != meta.MemoryMB || spec.DiskMB != meta.DiskMB {
		return nil, fmt.Errorf("%w: snapshot %s restores with %d vcpus, %d MB memory and %d MB disk, not %d, %d and %d",
			errInvalidSpec, spec.Template, meta.VCPUs, meta.MemoryMB, meta.DiskMB, spec.VCPUs, spec.MemoryMB, spec.DiskMB)
	}
	cp, err := c.checkpointer()
	if err != nil {
		return nil, err
	}
	rec, err := c.newRecord(spec, spec.ID, hostnameOf(spec.ID), meta.Base)
	if err != nil {
		return nil, err
	}
	// The restored envd still holds the token of the capsule the snapshot
	// was taken from; its init rotates it to this capsule's own.
	image := filepath.Join(c.imagesDir(), spec.Template, templateSnapDir)
	if _, err := c.bringUp(ctx, rec, bootPlan{fresh: true, boot: restoreFrom(cp, image), envdHolds: meta.Token, initEnvd: true}); err != nil {
		return nil, err
	}
	return rec, nil
}

// runtimeSpec is the driver's spec of rec's sandbox, without its network:
// rec's runtime id, directory, size and boot hostname, over the root
// filesystem of its base template.
func (c *Capsules) runtimeSpec(rec *capsuleRecord) runtime.Spec {
	return runtime.Spec{
		ID: rec.RuntimeID, Dir: c.dirOf(rec.RuntimeID), Image: filepath.Join(c.imagesDir(), rec.base()),
		Hostname: rec.bootHostname(), VCPUs: rec.Spec.VCPUs, MemoryMB: rec.Spec.MemoryMB, DiskMB: rec.Spec.DiskMB,
	}
}

// snapshotInfo is rec's info, with the size of its saved state if paused.
func (c *Capsules) snapshotInfo(rec *capsuleRecord) CapsuleInfo {
	c.mu.Lock()
	info := rec.info()
	c.mu.Unlock()
	if info.Status == capsulePaused {
		if s, err := readSaved(c.savedDir(info.Spec.ID)); err == nil {
			info.SnapshotBytes = s.Bytes
		}
	}
	return info
}

// dirSize is the bytes the regular files directly in dir take.
func dirSize(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n, nil
}

// linkOrCopy hard-links src to dst, copying when a link is impossible.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := out.ReadFrom(in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// createRestored is Create for a snapshot template.
func (c *Capsules) createRestored(ctx context.Context, spec CapsuleSpec, meta snapshotMeta, start time.Time) (CapsuleInfo, error) {
	rec, err := c.createFromSnapshot(ctx, spec, meta)
	if err := c.adopt(ctx, spec.ID, rec, err); err != nil {
		return CapsuleInfo{}, err
	}
	c.log.Info("capsule restored from a snapshot", "capsule_id", spec.ID, "template", spec.Template,
		"address", rec.Address, "took_ms", time.Since(start).Milliseconds())
	return rec.info(), nil
}

// SetNetwork makes policy (nil: the open one) the egress policy of capsule
// id, running or paused: recorded with the capsule, then applied to its
// network. When it cannot be applied the record goes back to the old one.
func (c *Capsules) SetNetwork(ctx context.Context, id string, policy *egress.Policy) (CapsuleInfo, error) {
	if policy != nil {
		n, err := policy.Normalize()
		if err != nil {
			return CapsuleInfo{}, fmt.Errorf("%w: %w", errInvalidSpec, err)
		}
		policy = &n
	}
	rec, release, err := c.lockedRecord(id)
	if err != nil {
		return CapsuleInfo{}, err
	}
	defer release()
	c.mu.Lock()
	next, old := *rec, *rec
	c.mu.Unlock()
	next.Spec.Network = policy
	if err := writeRecord(c.dirOf(rec.RuntimeID), &next); err != nil {
		return CapsuleInfo{}, err
	}
	if _, ok := c.cfg.Network.Lookup(rec.RuntimeID); ok {
		if err := c.cfg.Network.SetPolicy(ctx, rec.RuntimeID, next.Spec.policy()); err != nil {
			if werr := writeRecord(c.dirOf(rec.RuntimeID), &old); werr != nil {
				c.log.Error("restoring a capsule record", "capsule_id", id, "error", werr)
			}
			return CapsuleInfo{}, err
		}
	}
	c.mu.Lock()
	*rec = next
	c.mu.Unlock()
	c.log.Info("capsule egress policy changed", "capsule_id", id)
	if next.Status == capsulePaused {
		return c.snapshotInfo(&next), nil
	}
	return next.info(), nil
}
