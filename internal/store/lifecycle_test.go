package store_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// running places a capsule and marks it running with an address.
func (d *db) running(nc store.NewCapsule) store.Capsule {
	d.t.Helper()
	c := d.mustPlace(nc)
	c, err := d.store.MarkCapsuleRunning(context.Background(), c.ID, "10.0.0.2", time.Now())
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

func (d *db) status(id string) store.Capsule {
	d.t.Helper()
	var team string
	if err := d.conn.QueryRow(context.Background(), `SELECT team_id::text FROM capsules WHERE id = $1`, id).Scan(&team); err != nil {
		d.t.Fatal(err)
	}
	c, err := d.store.GetCapsule(context.Background(), team, id)
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

// TestHostLossAndReconcile marks a silent host unreachable, which makes its
// capsules missing, then reconciles them from a report; stale transient
// capsules are settled, fresh ones and other hosts' are left alone.
func TestHostLossAndReconcile(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team := d.team()
	h := d.host(hostSpec{cpus: 8, memoryMB: 100000})
	alive, paused, gone := d.running(capsule(team, "minimal", 1, 256)), d.running(capsule(team, "minimal", 1, 256)), d.running(capsule(team, "minimal", 1, 256))
	if _, err := d.store.MarkCapsulePaused(ctx, paused.ID, []string{store.CapsuleRunning}, 42, ""); err != nil {
		t.Fatal(err)
	}
	d.exec(`UPDATE hosts SET last_heartbeat_at = now() - interval '1 hour' WHERE id = $1`, h)
	ids, err := d.store.MarkUnreachable(ctx, time.Minute)
	if err != nil || len(ids) != 1 {
		t.Fatalf("MarkUnreachable = %v, %v", ids, err)
	}
	for _, c := range []store.Capsule{alive, paused, gone} {
		if got := d.status(c.ID); got.Status != store.CapsuleMissing || got.StatusReason == "" {
			t.Errorf("capsule of a lost host: %s %q, want missing with a reason", got.Status, got.StatusReason)
		}
	}
	changed, err := d.store.ReconcileHost(ctx, h, []store.ReportedCapsule{
		{ID: alive.ID, Status: "running"}, {ID: paused.ID, Status: "paused"}, {ID: "not-ours", Status: "running"},
	}, time.Hour)
	if err != nil || len(changed) != 3 {
		t.Fatalf("ReconcileHost = %+v, %v; want 3 changes", changed, err)
	}
	for id, want := range map[string]string{alive.ID: "running", paused.ID: "paused", gone.ID: "stopped"} {
		if got := d.status(id); got.Status != want {
			t.Errorf("reconciled %s: got %s, want %s", id, got.Status, want)
		}
	}
	if got := d.status(paused.ID); got.PausedAt == nil {
		t.Error("reconciled paused capsule has no paused_at")
	}

	// A pause in flight is not touched; one left for longer than the
	// stale age is settled from the report.
	// As a heartbeat would, the host reports its free disk with it.
	d.exec(`UPDATE hosts SET status = 'online', last_heartbeat_at = now(), free_disk_mb = disk_mb WHERE id = $1`, h)
	fresh, stale := d.running(capsule(team, "minimal", 1, 256)), d.running(capsule(team, "minimal", 1, 256))
	for _, c := range []store.Capsule{fresh, stale} {
		if _, err := d.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleRunning}, store.CapsulePausing, ""); err != nil {
			t.Fatal(err)
		}
	}
	d.exec(`UPDATE capsules SET updated_at = now() - interval '1 hour' WHERE id = $1`, stale.ID)
	report := []store.ReportedCapsule{{ID: alive.ID, Status: "running"}, {ID: fresh.ID, Status: "paused"}, {ID: stale.ID, Status: "paused"}}
	changed, err = d.store.ReconcileHost(ctx, h, report, time.Minute)
	if err != nil || len(changed) != 1 || changed[0].ID != stale.ID {
		t.Fatalf("ReconcileHost = %+v, %v; want only the stale capsule", changed, err)
	}
	if got := d.status(fresh.ID).Status; got != store.CapsulePausing {
		t.Errorf("a pause in flight became %s", got)
	}
	if got := d.status(stale.ID).Status; got != store.CapsulePaused {
		t.Errorf("a stale pause became %s, want paused", got)
	}

	// A pause that could not ask the host leaves the capsule to a later
	// report — not to one that may have been made before the pause failed
	// (received within seconds of it; here: running, the status before),
	// and not to one in which the host is still pausing it.
	if _, err := d.store.LeaveToHost(ctx, fresh.ID, store.CapsulePausing, "pause failed"); err != nil {
		t.Fatal(err)
	}
	before := []store.ReportedCapsule{{ID: fresh.ID, Status: "running"}}
	if changed, err := d.store.ReconcileHost(ctx, h, before, time.Hour); err != nil || len(changed) != 0 {
		t.Fatalf("ReconcileHost with a report received right after the failure = %+v, %v; want no change", changed, err)
	}
	d.exec(`UPDATE capsules SET updated_at = now() - interval '10 seconds' WHERE id = $1`, fresh.ID)
	stillPausing := []store.ReportedCapsule{{ID: fresh.ID, Status: "pausing"}}
	if changed, err := d.store.ReconcileHost(ctx, h, stillPausing, time.Hour); err != nil || len(changed) != 0 {
		t.Fatalf("ReconcileHost with the pause still under way = %+v, %v; want no change", changed, err)
	}
	if got := d.status(fresh.ID).Status; got != store.CapsulePausing {
		t.Fatalf("a capsule its host still pauses became %s", got)
	}
	changed, err = d.store.ReconcileHost(ctx, h, report, time.Hour)
	if err != nil || len(changed) != 1 || changed[0].ID != fresh.ID || changed[0].To != store.CapsulePaused {
		t.Fatalf("ReconcileHost = %+v, %v; want the capsule left to the host, paused", changed, err)
	}
	if _, err := d.store.LeaveToHost(ctx, fresh.ID, store.CapsulePausing, "late"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("LeaveToHost of a paused capsule: %v, want a conflict", err)
	}
}

// TestReconcileReportedStopped: a capsule recorded running or paused that
// its host reports stopped (its sandbox died, say the host rebooted within
// the host timeout, or its saved state is gone) is stopped: the agent never
// brings a stopped capsule back. One the host does not list, or lists as
// running, is left as it is: a heartbeat may have been put together before
// the capsule was created.
func TestReconcileReportedStopped(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team := d.team()
	h := d.host(hostSpec{cpus: 8, memoryMB: 100000})
	dead, deadPaused, unlisted, alive := d.running(capsule(team, "minimal", 1, 256)), d.running(capsule(team, "minimal", 1, 256)),
		d.running(capsule(team, "minimal", 1, 256)), d.running(capsule(team, "minimal", 1, 256))
	if _, err := d.store.MarkCapsulePaused(ctx, deadPaused.ID, []string{store.CapsuleRunning}, 42, ""); err != nil {
		t.Fatal(err)
	}
	changed, err := d.store.ReconcileHost(ctx, h, []store.ReportedCapsule{
		{ID: dead.ID, Status: "stopped"}, {ID: deadPaused.ID, Status: "stopped"}, {ID: alive.ID, Status: "running"},
	}, time.Hour)
	if err != nil || len(changed) != 2 {
		t.Fatalf("ReconcileHost = %+v, %v; want the 2 capsules reported stopped", changed, err)
	}
	for id, want := range map[string]string{dead.ID: "stopped", deadPaused.ID: "stopped", unlisted.ID: "running", alive.ID: "running"} {
		if got := d.status(id); got.Status != want {
			t.Errorf("reconciled %s: got %s, want %s", id, got.Status, want)
		}
	}

	// What the host still holds of capsules that cannot run again, stopped
	// or in error, is a leftover to destroy there; running ones are not.
	broken := d.running(capsule(team, "minimal", 1, 256))
	if _, err := d.store.SetCapsuleStatus(ctx, broken.ID, []string{store.CapsuleRunning}, store.CapsuleError, "broken"); err != nil {
		t.Fatal(err)
	}
	left, err := d.store.FinishedCapsulesOnHost(ctx, h, []store.ReportedCapsule{
		{ID: dead.ID, Status: "stopped"}, {ID: broken.ID, Status: "running"}, {ID: alive.ID, Status: "running"}, {ID: "not-a-uuid"},
	})
	slices.Sort(left)
	want := []string{dead.ID, broken.ID}
	slices.Sort(want)
	if err != nil || !slices.Equal(left, want) {
		t.Errorf("FinishedCapsulesOnHost = %v, %v; want the stopped and the broken capsule %v", left, err, want)
	}
}

// TestDeleteHostCapsules: once a host is deleted nothing of its capsules
// can run or be resumed again, so none may stay recorded running, paused
// or missing: they are in error, saying why. Stopped ones stay stopped.
func TestDeleteHostCapsules(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team := d.team()
	h := d.host(hostSpec{cpus: 8, memoryMB: 100000})
	running, paused, stopped := d.running(capsule(team, "minimal", 1, 256)), d.running(capsule(team, "minimal", 1, 256)),
		d.running(capsule(team, "minimal", 1, 256))
	if _, err := d.store.MarkCapsulePaused(ctx, paused.ID, []string{store.CapsuleRunning}, 42, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.store.SetCapsuleStatus(ctx, stopped.ID, []string{store.CapsuleRunning}, store.CapsuleStopped, ""); err != nil {
		t.Fatal(err)
	}
	if err := d.store.DeleteHost(ctx, h, store.Event{ActorType: store.ActorSystem, Action: "host.delete"}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{running.ID: "error", paused.ID: "error", stopped.ID: "stopped"} {
		got := d.status(id)
		if got.Status != want {
			t.Errorf("capsule of a deleted host: %s (%q), want %s", got.Status, got.StatusReason, want)
		}
		if want == "error" && !strings.Contains(got.StatusReason, "deleted") {
			t.Errorf("capsule of a deleted host: reason %q does not say its host was deleted", got.StatusReason)
		}
	}
}

// TestClaimIdleCapsules claims only running capsules idle beyond their
// timeout, once.
func TestClaimIdleCapsules(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team := d.team()
	d.host(hostSpec{cpus: 8, memoryMB: 100000})
	withTimeout := func(sec int) store.NewCapsule {
		nc := capsule(team, "minimal", 1, 256)
		nc.TimeoutSec = sec
		return nc
	}
	idle, busy, never := d.running(withTimeout(1)), d.running(withTimeout(1)), d.running(withTimeout(0))
	d.exec(`UPDATE capsules SET last_active_at = now() - interval '1 minute' WHERE id = ANY($1::uuid[])`,
		[]string{idle.ID, busy.ID, never.ID})
	if err := d.store.TouchCapsule(ctx, busy.ID); err != nil {
		t.Fatal(err)
	}
	got, err := d.store.ClaimIdleCapsules(ctx, 10)
	if err != nil || len(got) != 1 || got[0].ID != idle.ID || got[0].Status != store.CapsulePausing {
		t.Fatalf("ClaimIdleCapsules = %+v, %v; want only the idle one, pausing", got, err)
	}
	if got, err := d.store.ClaimIdleCapsules(ctx, 10); err != nil || len(got) != 0 {
		t.Errorf("second claim = %+v, %v; want none", got, err)
	}
	if _, err := d.store.PingCapsule(ctx, idle.ID); !errors.Is(err, store.ErrConflict) {
		t.Errorf("ping of a pausing capsule: %v, want a conflict", err)
	}
	// An operation that starts on a claimed capsule is refused; one that
	// starts first keeps the reaper away, however stale the capsule was.
	if ok, err := d.store.StartCapsuleUse(ctx, idle.ID); ok || err != nil {
		t.Errorf("StartCapsuleUse of a pausing capsule = %v, %v; want false", ok, err)
	}
	d.exec(`UPDATE capsules SET last_active_at = now() - interval '1 minute' WHERE id = $1`, busy.ID)
	if ok, err := d.store.StartCapsuleUse(ctx, busy.ID); !ok || err != nil {
		t.Errorf("StartCapsuleUse of a running capsule = %v, %v; want true", ok, err)
	}
	if got, err := d.store.ClaimIdleCapsules(ctx, 10); err != nil || len(got) != 0 {
		t.Errorf("claim after an operation started = %+v, %v; want none", got, err)
	}
}

// TestClaimResumeCapacity refuses a resume when the host's memory went to
// others while the capsule was paused.
func TestClaimResumeCapacity(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team := d.team()
	d.host(hostSpec{cpus: 8, memoryMB: 1000}) // 900 MB usable
	c := d.running(capsule(team, "minimal", 1, 600))
	if _, err := d.store.MarkCapsulePaused(ctx, c.ID, []string{store.CapsuleRunning}, 1, ""); err != nil {
		t.Fatal(err)
	}
	other := d.running(capsule(team, "minimal", 1, 600))
	var full *store.NoCapacityError
	if _, err := d.store.ClaimResume(ctx, c.ID, store.Quota{}); !errors.As(err, &full) {
		t.Fatalf("ClaimResume on a full host: %v, want no capacity", err)
	}
	if got := d.status(c.ID).Status; got != store.CapsulePaused {
		t.Errorf("refused resume left the capsule %s", got)
	}
	if _, err := d.store.SetCapsuleStatus(ctx, other.ID, []string{store.CapsuleRunning}, store.CapsuleStopped, ""); err != nil {
		t.Fatal(err)
	}
	if got, err := d.store.ClaimResume(ctx, c.ID, store.Quota{}); err != nil || got.Status != store.CapsuleResuming {
		t.Fatalf("ClaimResume with room: %+v, %v", got.Status, err)
	}
	if got, err := d.store.ClaimResume(ctx, c.ID, store.Quota{}); !errors.Is(err, store.ErrConflict) || got.Status != store.CapsuleResuming {
		t.Errorf("second ClaimResume: %s, %v; want a conflict naming resuming", got.Status, err)
	}
}

func (d *db) exec(sql string, args ...any) {
	d.t.Helper()
	if _, err := d.conn.Exec(context.Background(), sql, args...); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
}

// TestDeleteSnapshotExcludesCreates deletes a snapshot while a capsule is
// being created from it: the deletion waits for a create that holds the
// template, and a create after it fails with ErrTemplateGone; the files,
// removed by the caller after the commit, are then orphans until removed.
func TestDeleteSnapshotExcludesCreates(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team := d.team()
	tid := uuid.NewString()
	h := d.host(hostSpec{cpus: 8, memoryMB: 100000, templates: []string{"minimal", tid}})
	tmpl, err := d.store.CreateSnapshot(ctx, store.NewSnapshot{
		ID: tid, Name: "snap", TeamID: team, HostID: h, SourceCapsuleID: uuid.NewString(), VCPUs: 1, MemoryMB: 256, DiskMB: 1024,
	}, store.Event{TeamID: team, ActorType: store.ActorSystem, Action: "snapshot.create"})
	if err != nil {
		t.Fatal(err)
	}
	fromSnap := capsule(team, "snap", 1, 256)
	fromSnap.TemplateID, fromSnap.AgentTemplate, fromSnap.HostID = tmpl.ID, tmpl.AgentName, h

	ev := store.Event{TeamID: team, ActorType: store.ActorSystem, Action: "snapshot.delete"}
	// A create under way holds the row FOR SHARE: the deletion waits for
	// it, and then finds the capsule using the snapshot.
	tx, err := d.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM templates WHERE id = $1 FOR SHARE`, tmpl.ID); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- d.store.DeleteSnapshot(ctx, team, tmpl.ID, ev) }()
	select {
	case err := <-deleted:
		t.Fatalf("DeleteSnapshot did not wait for a create holding the template: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("DeleteSnapshot: %v", err)
	}
	// Once deleted (and committed, before any file is touched), a create
	// from it finds it gone.
	if _, _, err := d.store.CreateCapsule(ctx, fromSnap, createEvent(team)); !errors.Is(err, store.ErrTemplateGone) {
		t.Fatalf("create from a deleted snapshot = %v, want ErrTemplateGone", err)
	}
	if orphans, err := d.store.OrphanTemplates(ctx, []string{"minimal", tid}, time.Hour); err != nil || len(orphans) != 1 || orphans[0] != tid {
		t.Errorf("after the deletion the host's files are orphans to remove: got %v, %v; want [%s]", orphans, err, tid)
	}
	var n int
	if err := d.conn.QueryRow(ctx, `SELECT count(*) FROM capsules`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d capsules were created (%v)", n, err)
	}
}
