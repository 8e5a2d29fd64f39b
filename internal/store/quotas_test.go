package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

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
