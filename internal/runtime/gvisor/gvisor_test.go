package gvisor_test

import (
	"os"
	"path/filepath"
	"testing"

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
