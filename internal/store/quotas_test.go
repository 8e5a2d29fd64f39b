package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// wantQuota fails the test unless err is a *QuotaError on limit.
func wantQuota(t *testing.T, what string, err error, limit string) {
	t.Helper()
	var qe *store.QuotaError
	if !errors.As(err, &qe) || qe.Limit != limit {
		t.Fatalf("%s: got %v, want a quota error on %s", what, err, limit)
	}
}

// TestQuotas checks each limit of a team's quota at the boundary, that
// another team is not affected, that a platform admin's override applies
// over the default, and that paused capsules count for disk and are
// bounded on resume.
func TestQuotas(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	d.host(hostSpec{cpus: 64, memoryMB: 1 << 20})
	a, b := d.team(), d.team()
	def := store.Quota{RunningCapsules: 2, VCPUs: 3, MemoryMB: 2048, DiskMB: 3072, ConcurrentCreates: 3}
	with := func(nc store.NewCapsule) store.NewCapsule { nc.Quota = def; return nc }

	c1 := d.mustPlace(with(capsule(a, "minimal", 2, 512)))
	_, err := d.place(with(capsule(a, "minimal", 2, 512)))
	wantQuota(t, "vcpus 2+2 > 3", err, "vcpus")
	_, err = d.place(with(capsule(a, "minimal", 1, 1600)))
	wantQuota(t, "memory 512+1600 > 2048", err, "memory_mb")
	c2 := d.mustPlace(with(capsule(a, "minimal", 1, 512)))
	_, err = d.place(with(capsule(a, "minimal", 1, 128)))
	wantQuota(t, "a third capsule", err, "running_capsules")
	// Another team has its own count.
	d.mustPlace(with(capsule(b, "minimal", 2, 512)))

	// Nothing of a refused capsule is left.
	var n int
	if err := d.conn.QueryRow(ctx, `SELECT count(*) FROM capsules WHERE team_id = $1`, a).Scan(&n); err != nil || n != 2 {
		t.Fatalf("team a has %d capsules (%v), want 2", n, err)
	}

	// A paused capsule frees CPU, memory and a running slot, not its disk.
	if _, err := d.store.MarkCapsulePaused(ctx, c1.ID, []string{store.CapsuleStarting}, 1, ""); err != nil {
		t.Fatal(err)
	}
	d.mustPlace(with(capsule(a, "minimal", 1, 128))) // c3: running c2, c3; paused c1
	_, err = d.place(with(capsule(a, "minimal", 1, 128)))
	wantQuota(t, "a third running capsule", err, "running_capsules")
	if _, err := d.store.SetCapsuleStatus(ctx, c2.ID, []string{store.CapsuleStarting}, store.CapsuleStopped, ""); err != nil {
		t.Fatal(err)
	}
	big := with(capsule(a, "minimal", 1, 128))
	big.DiskMB = 2048
	_, err = d.place(big)
	wantQuota(t, "disk: 1024 paused + 1024 running + 2048 > 3072", err, "disk_mb")
	// Resuming must fit the running limit too.
	if _, err := d.store.ClaimResume(ctx, c1.ID, store.Quota{RunningCapsules: 1}); err == nil {
		t.Fatal("resume with one running capsule and a limit of one: no error")
	} else {
		wantQuota(t, "resume past running_capsules", err, "running_capsules")
	}

	// A platform admin's override wins over the default, field by field.
	three := 3
	if err := d.store.SetTeamQuota(ctx, a, store.QuotaOverride{RunningCapsules: &three}, store.Event{TeamID: a, ActorType: store.ActorSystem, Action: "team.quota"}); err != nil {
		t.Fatal(err)
	}
	q, o, u, err := d.store.TeamQuota(ctx, a, def)
	if err != nil {
		t.Fatal(err)
	}
	if q.RunningCapsules != 3 || q.VCPUs != def.VCPUs || o.RunningCapsules == nil || o.VCPUs != nil {
		t.Errorf("quota %+v, override %+v; want running 3 from the override and the rest default", q, o)
	}
	if u.RunningCapsules != 1 || u.PausedCapsules != 1 || u.DiskMB != 2048 {
		t.Errorf("usage %+v; want 1 running, 1 paused, 2048 MB of disk", u)
	}
	if _, err := d.store.ClaimResume(ctx, c1.ID, store.Quota{RunningCapsules: 1}); err != nil {
		t.Errorf("resume with the override (3 running) over a default of 1: %v", err)
	}
	if err := d.store.SetTeamQuota(ctx, "00000000-0000-0000-0000-000000000000", store.QuotaOverride{}, store.Event{ActorType: store.ActorSystem, Action: "team.quota"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("quota of an unknown team: got %v, want ErrNotFound", err)
	}
}

// TestConcurrentCreatesQuota races ten creates of one team with a limit of
// three creates under way: exactly three are placed.
func TestConcurrentCreatesQuota(t *testing.T) {
	d := newDB(t)
	d.host(hostSpec{cpus: 64, memoryMB: 1 << 20})
	team := d.team()
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		placed int
		busy   int
	)
	for range 10 {
		wg.Go(func() {
			nc := capsule(team, "minimal", 1, 128)
			nc.Quota = store.Quota{ConcurrentCreates: 3}
			_, _, err := d.store.CreateCapsule(context.Background(), nc, createEvent(team))
			var qe *store.QuotaError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				placed++
			case errors.As(err, &qe) && qe.Limit == "concurrent_creates":
				busy++
			default:
				t.Errorf("CreateCapsule: %v", err)
			}
		})
	}
	wg.Wait()
	if placed != 3 || busy != 7 {
		t.Errorf("%d placed and %d refused as busy, want 3 and 7", placed, busy)
	}
}

// TestConcurrentSnapshotsQuota starts 10 snapshots at once (of 10 running
// capsules) for a team allowed 3 snapshots, one of which it holds: the
// quota is checked under the team's lock in the claim, counting snapshots
// under way, so exactly 2 get through. Once they are recorded as
// templates and their requests end, the count is still 3: no more.
func TestConcurrentSnapshotsQuota(t *testing.T) {
	ctx := context.Background()
	d := newDB(t)
	host := d.host(hostSpec{cpus: 64, memoryMB: 1 << 20})
	team := d.team()
	quota := store.Quota{Snapshots: 3}
	var ids []string
	for range 10 {
		c := d.mustPlace(capsule(team, "minimal", 1, 128))
		if _, err := d.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleStarting}, store.CapsuleRunning, ""); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, c.ID)
	}
	if _, err := d.store.CreateSnapshot(ctx, store.NewSnapshot{
		ID: uuid.NewString(), Name: "held", TeamID: team, HostID: host, SourceCapsuleID: ids[0], VCPUs: 1, MemoryMB: 128, DiskMB: 1024,
	}, createEvent(team)); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		claimed []string // template ids
		refused []string // capsule ids, still running
	)
	for _, id := range ids {
		wg.Go(func() {
			tid := uuid.NewString()
			_, err := d.store.ClaimSnapshot(ctx, team, id, store.CapsuleRunning, tid, host, quota)
			var qe *store.QuotaError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				claimed = append(claimed, tid)
			case errors.As(err, &qe) && qe.Limit == "snapshots":
				refused = append(refused, id)
			default:
				t.Errorf("ClaimSnapshot: %v", err)
			}
		})
	}
	wg.Wait()
	if len(claimed) != 2 || len(refused) != 8 {
		t.Fatalf("10 concurrent snapshots with 1 of 3 held: %d claimed, %d refused; want 2 and 8", len(claimed), len(refused))
	}
	// Recorded (the template row before the request ends, as the service
	// does): counted once, not twice, and still full.
	for i, tid := range claimed {
		if _, err := d.store.CreateSnapshot(ctx, store.NewSnapshot{
			ID: tid, Name: fmt.Sprintf("s%d", i), TeamID: team, HostID: host, SourceCapsuleID: ids[0], VCPUs: 1, MemoryMB: 128, DiskMB: 1024,
		}, createEvent(team)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.store.ClaimSnapshot(ctx, team, refused[0], store.CapsuleRunning, uuid.NewString(), host, store.Quota{Snapshots: 4}); err != nil {
		t.Errorf("a 4th snapshot with a quota of 4 while 2 recorded ones still have requests: %v (counted twice?)", err)
	}
	for _, tid := range claimed {
		if err := d.store.EndSnapshot(ctx, tid); err != nil {
			t.Fatal(err)
		}
	}
	_, err := d.store.ClaimSnapshot(ctx, team, refused[1], store.CapsuleRunning, uuid.NewString(), host, quota)
	wantQuota(t, "a snapshot past 3 held", err, "snapshots")
}
