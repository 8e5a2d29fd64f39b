package gvisor_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
	"github.com/wrenn-dev/wrenn/internal/runtime/runtimetest"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

func TestConformance(t *testing.T) {
	runsc, images := stacktest.Env(t)
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: filepath.Join(stacktest.ScratchDir(t), "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, d, func(t *testing.T, id string) runtime.Spec {
		dir := filepath.Join(stacktest.ScratchDir(t), id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return runtime.Spec{
			ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "conformance",
			VCPUs: 1, MemoryMB: 256, DiskMB: 256,
		}
	})
}

// TestCreateCancelledLeavesNothing cancels Creates at points through
// `runsc run --detach`: whatever runsc had started by then must be gone
// once Create returns, as the agent does when a caller gives up or the
// warm pool closes.
func TestCreateCancelledLeavesNothing(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: filepath.Join(scratch, "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []time.Duration{10, 20, 30, 40, 50, 60, 70, 80} {
		id := uuid.NewString()
		dir := filepath.Join(scratch, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), after*time.Millisecond)
		_, err := d.Create(ctx, runtime.Spec{
			ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "cancelled",
			VCPUs: 1, MemoryMB: 256, DiskMB: 256,
		})
		cancel()
		if err == nil {
			if err := d.Destroy(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if procs := stacktest.ProcessesNaming(t, id); len(procs) > 0 {
			t.Errorf("Create cancelled after %d ms failed (%v) but left runsc processes %v", after, err, procs)
			for _, p := range procs {
				if pid, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}
