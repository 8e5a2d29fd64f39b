package store_test

import (
	"context"
	"errors"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// TestPlanTemplateCopy picks a host with room that lacks the template and
// a source of the same runtime that has it; a team's own host is a source
// for that team's own hosts only.
func TestPlanTemplateCopy(t *testing.T) {
	d := newDB(t)
	ctx := context.Background()
	team, other := d.team(), d.team()
	ask := scheduler.Ask{VCPUs: 1, MemoryMB: 512, DiskMB: 1024}

	// Only another team's host has "tool": nothing to copy from.
	d.host(hostSpec{team: other, cpus: 4, memoryMB: 8000, templates: []string{"minimal", "tool"}})
	regular := d.host(hostSpec{cpus: 4, memoryMB: 8000})
	if _, err := d.store.PlanTemplateCopy(ctx, team, "tool", ask, 400); !errors.Is(err, store.ErrNoHost) {
		t.Errorf("template only on another team's host: %v, want ErrNoHost", err)
	}

	// The team's own host has "own": it goes to the team's other own
	// host, never to a shared one.
	ownA := d.host(hostSpec{team: team, cpus: 4, memoryMB: 8000, templates: []string{"minimal", "own"}})
	plan, err := d.store.PlanTemplateCopy(ctx, team, "own", ask, 400)
	if !errors.Is(err, store.ErrNoHost) {
		t.Errorf("own template with no other own host: %+v, %v; want ErrNoHost (the shared host may not take it)", plan, err)
	}
	ownB := d.host(hostSpec{team: team, cpus: 4, memoryMB: 8000})
	plan, err = d.store.PlanTemplateCopy(ctx, team, "own", ask, 400)
	if err != nil || plan.From.ID != ownA || plan.To.ID != ownB {
		t.Errorf("own template: %s -> %s, %v; want %s -> %s", plan.From.ID, plan.To.ID, err, ownA, ownB)
	}

	// A shared host's template goes to the host with room, of its runtime.
	src := d.host(hostSpec{cpus: 4, memoryMB: 8000, templates: []string{"minimal", "base"}})
	d.exec(`UPDATE hosts SET runtime = 'gvisor'`)
	d.exec(`UPDATE hosts SET runtime = 'firecracker' WHERE id = $1`, ownB)
	plan, err = d.store.PlanTemplateCopy(ctx, team, "base", ask, 400)
	if err != nil || plan.From.ID != src || (plan.To.ID != regular && plan.To.ID != ownA) {
		t.Errorf("base: %s -> %s, %v; want %s -> a gVisor host that lacks it", plan.From.ID, plan.To.ID, err, src)
	}
	// Too big for any host that lacks it.
	if _, err := d.store.PlanTemplateCopy(ctx, team, "base", scheduler.Ask{VCPUs: 1, MemoryMB: 7900, DiskMB: 1024}, 400); !errors.Is(err, store.ErrNoHost) {
		t.Errorf("a capsule no host can take: %v, want ErrNoHost", err)
	}
}
