// Package runtimetest is the conformance suite every runtime driver runs:
// the same lifecycle checks, whatever the isolation technology.
package runtimetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// NewSpec returns a ready-to-use spec for a new capsule with the given id:
// a directory of its own and a template image with envd.
type NewSpec func(t *testing.T, id string) runtime.Spec

// Run runs the conformance suite against d.
func Run(t *testing.T, d runtime.Driver, newSpec NewSpec) {
	t.Run("Lifecycle", func(t *testing.T) { lifecycle(t, d, newSpec) })
	if cp, ok := d.(runtime.Checkpointer); ok {
		t.Run("Checkpoint", func(t *testing.T) { checkpoint(t, d, cp, newSpec) })
	}
	t.Run("UsableTemplate", func(t *testing.T) {
		if err := d.UsableTemplate(newSpec(t, "c0000000-0000-4000-8000-00000000000a").Image); err != nil {
			t.Errorf("UsableTemplate of the template the specs use: %v", err)
		}
		if err := d.UsableTemplate(t.TempDir()); err == nil {
			t.Error("UsableTemplate of an empty directory: nil, want an error saying what is missing")
		}
	})
	t.Run("DestroyUnknown", func(t *testing.T) {
		if err := d.Destroy(context.Background(), uuid.NewString()); err != nil {
			t.Fatalf("Destroy of an unknown capsule = %v, want nil", err)
		}
	})
	t.Run("InfoUnknown", func(t *testing.T) {
		_, err := d.Info(context.Background(), uuid.NewString())
		if !errors.Is(err, runtime.ErrNotFound) {
			t.Fatalf("Info of an unknown capsule = %v, want ErrNotFound", err)
		}
	})
	t.Run("BadSpec", func(t *testing.T) {
		spec := newSpec(t, uuid.NewString())
		spec.MemoryMB = 0
		if _, err := d.Create(context.Background(), spec); err == nil {
			_ = d.Destroy(context.Background(), spec.ID)
			t.Fatal("Create with 0 MB of memory succeeded")
		}
		if _, err := d.Info(context.Background(), spec.ID); !errors.Is(err, runtime.ErrNotFound) {
			t.Fatalf("after a refused Create, Info = %v, want ErrNotFound", err)
		}
	})
}

func lifecycle(t *testing.T, d runtime.Driver, newSpec NewSpec) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := newSpec(t, uuid.NewString())
	before := time.Now().Add(-time.Second)
	info, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	if info.ID != spec.ID || info.State != runtime.StateRunning {
		t.Fatalf("Create = %+v, want id %s running", info, spec.ID)
	}
	if info.StartedAt.Before(before) {
		t.Errorf("StartedAt = %v, before the call (%v)", info.StartedAt, before)
	}
	if _, err := d.Create(ctx, spec); !errors.Is(err, runtime.ErrExists) {
		t.Fatalf("second Create with the same id = %v, want ErrExists", err)
	}
	got, err := d.Info(ctx, spec.ID)
	if err != nil || got.State != runtime.StateRunning {
		t.Fatalf("Info = %+v, %v; want running", got, err)
	}
	list, err := d.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if !slices.ContainsFunc(list, func(i runtime.Info) bool { return i.ID == spec.ID }) {
		t.Fatalf("List = %+v, lacks %s", list, spec.ID)
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := d.Info(ctx, spec.ID); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Info after Destroy = %v, want ErrNotFound", err)
	}
	list, err = d.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if slices.ContainsFunc(list, func(i runtime.Info) bool { return i.ID == spec.ID }) {
		t.Fatalf("List after Destroy still has %s", spec.ID)
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatalf("second Destroy = %v, want nil", err)
	}
}

// checkpoint saves a capsule (which stays frozen), thaws it (twice: the
// second time it already runs, which is not an error), saves it
// again and restores that state twice, under its own id after a Destroy
// and under a new one: a saved state is only read, never used up.
func checkpoint(t *testing.T, d runtime.Driver, cp runtime.Checkpointer, newSpec NewSpec) {
	ctx := context.Background()
	spec := newSpec(t, uuid.NewString())
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	image := t.TempDir()
	if err := cp.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if info, err := d.Info(ctx, spec.ID); err != nil || info.State != runtime.StateFrozen {
		t.Fatalf("after Checkpoint Info = %+v, %v; want frozen", info, err)
	}
	if err := cp.Thaw(ctx, spec.ID); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if err := cp.Thaw(ctx, spec.ID); err != nil {
		t.Fatalf("Thaw of a running capsule = %v, want nil (it runs, as asked)", err)
	}
	if info, err := d.Info(ctx, spec.ID); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("after Thaw Info = %+v, %v; want running", info, err)
	}
	image = t.TempDir()
	if err := cp.Checkpoint(ctx, spec.ID, image); err != nil {
		t.Fatalf("second Checkpoint: %v", err)
	}
	if err := d.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Restore(ctx, spec, image); err != nil {
		t.Fatalf("Restore under the same id: %v", err)
	}
	if info, err := d.Info(ctx, spec.ID); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("after Restore Info = %+v, %v; want running", info, err)
	}
	other := newSpec(t, uuid.NewString())
	if _, err := cp.Restore(ctx, other, image); err != nil {
		t.Fatalf("Restore under a new id: %v", err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), other.ID) })
	if info, err := d.Info(ctx, other.ID); err != nil || info.State != runtime.StateRunning {
		t.Fatalf("after Restore under a new id Info = %+v, %v; want running", info, err)
	}
	if _, err := cp.Restore(ctx, other, image); !errors.Is(err, runtime.ErrExists) {
		t.Fatalf("Restore under an id in use = %v, want ErrExists", err)
	}
	empty := newSpec(t, uuid.NewString())
	if _, err := cp.Restore(ctx, empty, t.TempDir()); err == nil {
		_ = d.Destroy(context.Background(), empty.ID)
		t.Fatal("Restore from an empty directory succeeded")
	}
	if err := cp.Checkpoint(ctx, uuid.NewString(), t.TempDir()); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Checkpoint of an unknown capsule = %v, want ErrNotFound", err)
	}
}
