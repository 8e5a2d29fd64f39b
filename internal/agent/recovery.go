package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// Crash recovery: what an agent start does with the capsules, records and
// saved states an earlier agent process left, including one killed in the
// middle of a start, pause or resume.

// adopt finishes a create: rec, which a start or restore brought up (err
// says whether it did), is recorded running and becomes a capsule of the
// manager. On any error everything made for capsule id is removed.
func (c *Capsules) adopt(ctx context.Context, id string, rec *capsuleRecord, err error) error {
	if err == nil {
		rec.Status = capsuleRunning
		err = writeRecord(c.dirOf(rec.RuntimeID), rec)
	}
	if err != nil {
		// The start may have been cut short by ctx; the clean-up must not be.
		if rerr := c.remove(context.WithoutCancel(ctx), id); rerr != nil {
			c.log.Error("cleaning up after a failed create", "capsule_id", id, "err", rerr)
		}
		return err
	}
	c.mu.Lock()
	c.capsules[id] = rec
	c.mu.Unlock()
	return nil
}

// adoptable reports whether a capsule recorded with status is kept across
// an agent restart.
func adoptable(status string) bool {
	switch status {
	case capsuleRunning, capsulePausing, capsulePaused, capsuleResuming:
		return true
	}
	return false
}

// recoverRecord settles a capsule the agent found recorded at start, given
// what runsc says of its sandbox (state is "" when runsc has none). A pause
// counts once its saved state is marked complete; before that the capsule
// is thawed and runs on. A resume counts once the sandbox exists.
func (c *Capsules) recoverRecord(ctx context.Context, rec *capsuleRecord, state runtime.State) error {
	saved := c.savedDir(rec.Spec.ID)
	_, savedErr := readSaved(saved)
	status := rec.Status
	switch {
	case status == capsulePaused || (status == capsulePausing && savedErr == nil):
		if savedErr != nil {
			c.log.Error("a paused capsule's saved state is missing", "capsule_id", rec.Spec.ID, "err", savedErr)
			rec.Status = capsuleStopped
			return nil
		}
		status = capsulePaused
	case status == capsuleResuming && savedErr == nil && state == "":
		// The restore never started or was undone: still paused.
		status = capsulePaused
	default: // running, an unfinished pause, or a finished resume
		if state == runtime.StateFrozen {
			cp, err := c.checkpointer()
			if err != nil {
				return err
			}
			if err := cp.Thaw(ctx, rec.RuntimeID); err != nil {
				return err
			}
			state = runtime.StateRunning
		}
		if state != runtime.StateRunning {
			rec.Status = capsuleStopped
			return nil
		}
		status = capsuleRunning
		if err := os.RemoveAll(saved); err != nil {
			return err
		}
	}
	if status != rec.Status {
		c.log.Info("finishing what a stopped agent left", "capsule_id", rec.Spec.ID, "was", rec.Status, "now", status)
		rec.Status = status
		if err := writeRecord(c.dirOf(rec.RuntimeID), rec); err != nil {
			return err
		}
	}
	return nil
}

// removeOrphanSavedStates removes saved states of capsules that are not
// paused, and templates whose making or deletion an earlier run did not
// finish.
func (c *Capsules) removeOrphanSavedStates() error {
	root := filepath.Join(c.cfg.Dir, snapshotsDir)
	entries, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if rec, ok := c.capsules[e.Name()]; ok && rec.Status == capsulePaused {
			continue
		}
		c.log.Info("removing saved state of no paused capsule", "capsule_id", e.Name())
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			return err
		}
	}
	images, _ := os.ReadDir(c.imagesDir())
	for _, e := range images {
		if n := e.Name(); e.IsDir() && (strings.HasPrefix(n, ".new-") || strings.HasPrefix(n, ".deleted-")) {
			if err := os.RemoveAll(filepath.Join(c.imagesDir(), n)); err != nil {
				return err
			}
		}
	}
	return nil
}
