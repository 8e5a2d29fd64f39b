package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/testdb"
)

// db is a migrated test database, through the store and directly.
type db struct {
	t     *testing.T
	store *store.Store
	conn  *pgx.Conn
}

func newDB(t *testing.T) *db {
	t.Helper()
	ctx := context.Background()
	st, url := testdb.Store(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return &db{t: t, store: st, conn: conn}
}

func (d *db) id(sql string, args ...any) string {
	d.t.Helper()
	var id string
	if err := d.conn.QueryRow(context.Background(), sql, args...).Scan(&id); err != nil {
		d.t.Fatalf("%s: %v", sql, err)
	}
	return id
}

func (d *db) team() string {
	return d.id(`INSERT INTO teams (name) VALUES ('t') RETURNING id::text`)
}

// hostSpec is a host to insert; zero fields take the defaults of host().
type hostSpec struct {
	team      string // "" for a regular host
	status    string
	cpus      int
	memoryMB  int64
	templates []string
}

func (d *db) host(h hostSpec) string {
	d.t.Helper()
	typ := "regular"
	if h.team != "" {
		typ = "byoc"
	}
	if h.status == "" {
		h.status = "online"
	}
	if h.templates == nil {
		h.templates = []string{"minimal"}
	}
	var team *string
	if h.team != "" {
		team = &h.team
	}
	return d.id(`
		INSERT INTO hosts (type, team_id, status, cpus, memory_mb, disk_mb, address, templates)
		VALUES ($1, $2, $3, $4, $5, 100000, '127.0.0.1:1', $6) RETURNING id::text`,
		typ, team, h.status, h.cpus, h.memoryMB, h.templates)
}

func capsule(team, template string, vcpus, memoryMB int) store.NewCapsule {
	return store.NewCapsule{TeamID: team, Template: template, VCPUs: vcpus, MemoryMB: memoryMB, DiskMB: 1024,
		Metadata: map[string]string{"k": "v"}}
}

func createEvent(team string) store.Event {
	return store.Event{TeamID: team, ActorType: store.ActorSystem, Action: "capsule.create"}
}

// place creates a capsule and returns the host it went to.
func (d *db) place(nc store.NewCapsule) (store.Capsule, error) {
	d.t.Helper()
	c, h, err := d.store.CreateCapsule(context.Background(), nc, createEvent(nc.TeamID))
	if err == nil && (c.HostID != h.ID || c.Status != store.CapsuleStarting) {
		d.t.Fatalf("CreateCapsule: got capsule on %s (%s) and host %s, want the host it is on, starting", c.HostID, c.Status, h.ID)
	}
	return c, err
}

func (d *db) mustPlace(nc store.NewCapsule) store.Capsule {
	d.t.Helper()
	c, err := d.place(nc)
	if err != nil {
		d.t.Fatalf("CreateCapsule(%+v): %v", nc, err)
	}
	return c
}

func TestPlacement(t *testing.T) {
	d := newDB(t)
	teamA, teamB := d.team(), d.team()
	r1 := d.host(hostSpec{cpus: 4, memoryMB: 10000})
	r2 := d.host(hostSpec{cpus: 4, memoryMB: 10000, templates: []string{"debian", "minimal"}})
	byocA := d.host(hostSpec{team: teamA, cpus: 2, memoryMB: 4000})
	d.host(hostSpec{cpus: 64, memoryMB: 100000, status: "unreachable"})
	d.host(hostSpec{cpus: 64, memoryMB: 100000, status: "pending"})

	// Only r2 has debian.
	if c := d.mustPlace(capsule(teamB, "debian", 1, 1000)); c.HostID != r2 {
		t.Errorf("debian: placed on %s, want r2 %s (the only host with it)", c.HostID, r2)
	}
	// r1 is empty, r2 holds 1000 MB: least loaded is r1; then r1 holds
	// 2000 and r2 1000, so r2.
	if c := d.mustPlace(capsule(teamB, "minimal", 1, 2000)); c.HostID != r1 {
		t.Errorf("second: placed on %s, want least-loaded r1 %s", c.HostID, r1)
	}
	if c := d.mustPlace(capsule(teamB, "minimal", 1, 500)); c.HostID != r2 {
		t.Errorf("third: placed on %s, want least-loaded r2 %s", c.HostID, r2)
	}
	// Team B never lands on team A's host, even when it is the emptiest;
	// team A does.
	for range 3 {
		if c := d.mustPlace(capsule(teamB, "minimal", 1, 128)); c.HostID == byocA {
			t.Errorf("team B placed on team A's BYOC host")
		}
	}
	if c := d.mustPlace(capsule(teamA, "minimal", 1, 500)); c.HostID != byocA {
		t.Errorf("team A: placed on %s, want its empty BYOC host %s", c.HostID, byocA)
	}

	if _, err := d.place(capsule(teamA, "nope", 1, 128)); !errors.Is(err, store.ErrNoHost) {
		t.Errorf("unknown template: got %v, want ErrNoHost", err)
	}
	if _, err := d.place(capsule(d.team(), "debian", 5, 128)); !errors.Is(err, store.ErrNoCapacity) {
		t.Errorf("5 vCPUs on 4-CPU hosts: got %v, want ErrNoCapacity", err)
	}
	// r1 holds 2000 of its 9000 usable MB; r2 1000 + 500 + 3 × 128 (the
	// three went to it, the less loaded): 7116 is the most free.
	_, err := d.place(capsule(teamB, "minimal", 1, 7117))
	var full *store.NoCapacityError
	if !errors.As(err, &full) || !errors.Is(err, store.ErrNoCapacity) {
		t.Fatalf("7117 MB: got %v, want a NoCapacityError", err)
	}
	if full.Hosts != 2 || full.FreeMemoryMB != 7116 || full.FreeVCPUs != 4 {
		t.Errorf("7117 MB: got %+v, want 2 hosts, 7116 MB and 4 vCPUs free", full)
	}
	c := d.mustPlace(capsule(teamB, "minimal", 1, 7116))

	// A paused capsule takes nothing: its memory is free again.
	if _, err := d.place(capsule(teamB, "minimal", 1, 7116)); !errors.Is(err, store.ErrNoCapacity) {
		t.Fatalf("second 7116 MB: got %v, want ErrNoCapacity", err)
	}
	if _, err := d.store.SetCapsuleStatus(t.Context(), c.ID, []string{store.CapsuleStarting}, store.CapsulePaused, ""); err != nil {
		t.Fatal(err)
	}
	if c2 := d.mustPlace(capsule(teamB, "minimal", 1, 7116)); c2.HostID != c.HostID {
		t.Errorf("after pause: placed on %s, want %s where the paused capsule was", c2.HostID, c.HostID)
	}

	var events int
	if err := d.conn.QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE action = 'capsule.create'`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	var capsules int
	if err := d.conn.QueryRow(t.Context(), `SELECT count(*) FROM capsules`).Scan(&capsules); err != nil {
		t.Fatal(err)
	}
	if events != capsules {
		t.Errorf("got %d capsule.create events for %d capsules, want one each", events, capsules)
	}
}

func TestPlacementVCPUOvercommit(t *testing.T) {
	d := newDB(t)
	team := d.team()
	d.host(hostSpec{cpus: 2, memoryMB: 1 << 20})
	// 2 CPUs take 2×CPUOvercommit vCPUs in total, each capsule at most 2.
	for i := range scheduler.CPUOvercommit {
		if _, err := d.place(capsule(team, "minimal", 2, 128)); err != nil {
			t.Fatalf("capsule %d of 2 vCPUs: %v", i, err)
		}
	}
	if _, err := d.place(capsule(team, "minimal", 1, 128)); !errors.Is(err, store.ErrNoCapacity) {
		t.Errorf("vCPU %d: got %v, want ErrNoCapacity", 2*scheduler.CPUOvercommit+1, err)
	}
}

func TestPlacementConcurrentNeverOvercommits(t *testing.T) {
	d := newDB(t)
	team := d.team()
	// 1000 MB, of which 900 usable: room for exactly 5 capsules of 180.
	host := d.host(hostSpec{cpus: 64, memoryMB: 1000})
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, full int
		other    []error
	)
	for range 10 {
		wg.Go(func() {
			_, _, err := d.store.CreateCapsule(context.Background(), capsule(team, "minimal", 1, 180), createEvent(team))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrNoCapacity):
				full++
			default:
				other = append(other, err)
			}
		})
	}
	wg.Wait()
	if ok != 5 || full != 5 || len(other) > 0 {
		t.Errorf("10 concurrent creates on room for 5: got %d placed, %d refused, errors %v; want 5 and 5", ok, full, other)
	}
	h, err := d.store.Host(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	if h.AllocatedMemoryMB != 900 || h.AllocatedVCPUs != 5 {
		t.Errorf("host allocation: got %d MB and %d vCPUs, want 900 and 5", h.AllocatedMemoryMB, h.AllocatedVCPUs)
	}
}

func TestCapsuleStatusCAS(t *testing.T) {
	d := newDB(t)
	team := d.team()
	d.host(hostSpec{cpus: 4, memoryMB: 10000})
	c := d.mustPlace(capsule(team, "minimal", 1, 256))
	ctx := t.Context()

	started := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	got, err := d.store.MarkCapsuleRunning(ctx, c.ID, "10.88.0.2", started)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.CapsuleRunning || got.Address != "10.88.0.2" || got.StartedAt == nil || !got.StartedAt.Equal(started) {
		t.Errorf("MarkCapsuleRunning: got %s at %q started %v, want running at 10.88.0.2 started %v", got.Status, got.Address, got.StartedAt, started)
	}
	got, err = d.store.MarkCapsuleRunning(ctx, c.ID, "10.88.0.3", started)
	if !errors.Is(err, store.ErrConflict) || got.Status != store.CapsuleRunning || got.Address != "10.88.0.2" {
		t.Errorf("second MarkCapsuleRunning: got %v, %s at %s; want ErrConflict and the running capsule unchanged", err, got.Status, got.Address)
	}
	got, err = d.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsulePaused}, store.CapsuleResuming, "")
	if !errors.Is(err, store.ErrConflict) || got.Status != store.CapsuleRunning {
		t.Errorf("paused→resuming of a running capsule: got %v and %s, want ErrConflict and running", err, got.Status)
	}
	ev := store.Event{TeamID: team, ActorType: store.ActorSystem, Action: "capsule.destroy"}
	got, err = d.store.SetCapsuleStatus(ctx, c.ID, []string{store.CapsuleRunning}, store.CapsuleStopped, "", ev)
	if err != nil || got.Status != store.CapsuleStopped || got.StoppedAt == nil {
		t.Errorf("running→stopped: got %v, %s, stopped_at %v; want stopped with stopped_at", err, got.Status, got.StoppedAt)
	}
	var resource string
	if err := d.conn.QueryRow(ctx, `SELECT resource_id::text FROM audit_log WHERE action = 'capsule.destroy'`).Scan(&resource); err != nil || resource != c.ID {
		t.Errorf("capsule.destroy event: got resource %q (%v), want %s", resource, err, c.ID)
	}
	if _, err := d.store.SetCapsuleStatus(ctx, "7a0e7d8c-3c1f-4d0e-9d55-5d3b9d6b1a11", []string{store.CapsuleRunning}, store.CapsuleStopped, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown capsule: got %v, want ErrNotFound", err)
	}

	// Concurrent compare-and-sets from one status: exactly one wins.
	c = d.mustPlace(capsule(team, "minimal", 1, 256))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for i := range 10 {
		wg.Go(func() {
			_, err := d.store.SetCapsuleStatus(context.Background(), c.ID, []string{store.CapsuleStarting}, store.CapsuleError, fmt.Sprint("attempt ", i))
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("10 concurrent starting→error: %d won, want 1", wins)
	}
}

func TestListCapsules(t *testing.T) {
	d := newDB(t)
	teamA, teamB := d.team(), d.team()
	d.host(hostSpec{cpus: 64, memoryMB: 1 << 20})
	ctx := t.Context()
	var ids []string // newest first
	for i := range 7 {
		nc := capsule(teamA, "minimal", 1, 128)
		nc.Metadata = map[string]string{"parity": []string{"even", "odd"}[i%2], "app": "x"}
		ids = append([]string{d.mustPlace(nc).ID}, ids...)
	}
	d.mustPlace(capsule(teamB, "minimal", 1, 128))
	// All seven share created_at (one per transaction, but maybe the same
	// microsecond): make some equal on purpose to test the id tie-break.
	if _, err := d.conn.Exec(ctx, `UPDATE capsules SET created_at = '2026-01-01T00:00:00Z' WHERE id = ANY($1::uuid[])`, ids[2:5]); err != nil {
		t.Fatal(err)
	}
	all, next, err := d.store.ListCapsules(ctx, teamA, store.CapsuleFilter{Limit: 100})
	if err != nil || next != nil || len(all) != 7 {
		t.Fatalf("list all: got %d capsules, next %v, err %v; want 7 and no next page", len(all), next, err)
	}
	var paged []string
	f := store.CapsuleFilter{Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		page, next, err := d.store.ListCapsules(ctx, teamA, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			paged = append(paged, c.ID)
		}
		if next == nil {
			break
		}
		f.After = next
	}
	var want []string
	for _, c := range all {
		want = append(want, c.ID)
	}
	if fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Errorf("pages of 3: got %v, want %v", paged, want)
	}

	odd, _, err := d.store.ListCapsules(ctx, teamA, store.CapsuleFilter{Limit: 100, Metadata: map[string]string{"parity": "odd", "app": "x"}})
	if err != nil || len(odd) != 3 {
		t.Errorf("metadata parity=odd: got %d (%v), want 3", len(odd), err)
	}
	if _, err := d.store.SetCapsuleStatus(ctx, ids[0], []string{store.CapsuleStarting}, store.CapsuleStopped, ""); err != nil {
		t.Fatal(err)
	}
	stopped, _, err := d.store.ListCapsules(ctx, teamA, store.CapsuleFilter{Limit: 100, Statuses: []string{store.CapsuleStopped, store.CapsulePaused}})
	if err != nil || len(stopped) != 1 || stopped[0].ID != ids[0] {
		t.Errorf("status stopped,paused: got %v (%v), want only %s", stopped, err, ids[0])
	}
}

// TestPlacementDiskAndAddresses: the scheduler counts each live or paused
// capsule's disk (disk_mb + memory_mb, its saved state) against the host's
// disk, and its address against the free addresses the host reported,
// less the capsules placed since that report. A paused capsule keeps both;
// a stopped one gives them back.
func TestPlacementDiskAndAddresses(t *testing.T) {
	ctx := context.Background()
	d := newDB(t)
	team := d.team()
	// Disk: 5000 MB, 4500 usable; each capsule takes 1024 + 128 = 1152.
	disk := d.host(hostSpec{cpus: 64, memoryMB: 1 << 20, templates: []string{"disky"}})
	if _, err := d.conn.Exec(ctx, `UPDATE hosts SET disk_mb = 5000, free_disk_mb = 5000, last_heartbeat_at = now() WHERE id = $1`, disk); err != nil {
		t.Fatal(err)
	}
	var placed []store.Capsule
	for range 3 {
		placed = append(placed, d.mustPlace(capsule(team, "disky", 1, 128)))
	}
	var full *store.NoCapacityError
	if _, err := d.place(capsule(team, "disky", 1, 128)); !errors.As(err, &full) || full.Short != "disk" {
		t.Fatalf("4th capsule on 4500 MB usable: got %v, want no capacity for disk", err)
	}
	if _, err := d.conn.Exec(ctx, `UPDATE capsules SET status = 'paused' WHERE id = $1`, placed[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.place(capsule(team, "disky", 1, 128)); !errors.As(err, &full) || full.Short != "disk" {
		t.Errorf("with one capsule paused: got %v, want no capacity for disk (paused capsules hold their disk)", err)
	}
	if _, err := d.conn.Exec(ctx, `UPDATE capsules SET status = 'stopped' WHERE id = $1`, placed[0].ID); err != nil {
		t.Fatal(err)
	}
	d.mustPlace(capsule(team, "disky", 1, 128))
	// Reported free disk: 3000 MB free fits 2 capsules placed after the
	// report, not 3.
	if _, err := d.conn.Exec(ctx, `UPDATE capsules SET status = 'stopped' WHERE host_id = $1`, disk); err != nil {
		t.Fatal(err)
	}
	if _, err := d.conn.Exec(ctx, `UPDATE hosts SET free_disk_mb = 3000, last_heartbeat_at = clock_timestamp() WHERE id = $1`, disk); err != nil {
		t.Fatal(err)
	}
	d.mustPlace(capsule(team, "disky", 1, 128))
	d.mustPlace(capsule(team, "disky", 1, 128))
	if _, err := d.place(capsule(team, "disky", 1, 128)); !errors.As(err, &full) || full.Short != "disk" {
		t.Errorf("past the reported free disk: got %v, want no capacity for disk", err)
	}

	// Addresses: the host reported 2 free.
	addr := d.host(hostSpec{cpus: 64, memoryMB: 1 << 20, templates: []string{"addry"}})
	if _, err := d.conn.Exec(ctx, `UPDATE hosts SET free_disk_mb = 100000, free_addresses = 2, last_heartbeat_at = now() WHERE id = $1`, addr); err != nil {
		t.Fatal(err)
	}
	a := d.mustPlace(capsule(team, "addry", 1, 128))
	d.mustPlace(capsule(team, "addry", 1, 128))
	if _, err := d.place(capsule(team, "addry", 1, 128)); !errors.As(err, &full) || full.Short != "addresses" {
		t.Fatalf("3rd capsule on 2 free addresses: got %v, want no capacity for addresses", err)
	}
	// The next heartbeat reports none free (one capsule is paused: it
	// keeps its address); still no room.
	if _, err := d.conn.Exec(ctx, `UPDATE capsules SET status = 'paused' WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.conn.Exec(ctx, `UPDATE hosts SET free_addresses = 0, last_heartbeat_at = clock_timestamp() WHERE id = $1`, addr); err != nil {
		t.Fatal(err)
	}
	if _, err := d.place(capsule(team, "addry", 1, 128)); !errors.As(err, &full) || full.Short != "addresses" {
		t.Errorf("no address free: got %v, want no capacity for addresses", err)
	}
	// A resume needs no new address.
	if _, err := d.store.ClaimResume(ctx, a.ID, store.Quota{}); err != nil {
		t.Errorf("resuming the paused capsule on a host with no address free: %v", err)
	}
}
