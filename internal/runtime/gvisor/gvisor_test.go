package gvisor_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
	"github.com/wrenn-dev/wrenn/internal/runtime/runtimetest"
)

// testEnv returns runsc and the images directory that `make test` prepares.
func testEnv(t *testing.T) (runsc, images string) {
	t.Helper()
	runsc, images = os.Getenv("WRENN_TEST_RUNSC"), os.Getenv("WRENN_TEST_IMAGES")
	if runsc == "" || images == "" {
		t.Fatal("WRENN_TEST_RUNSC and WRENN_TEST_IMAGES are not set: run the tests with `make test`, which builds runsc and the minimal template")
	}
	return runsc, images
}

func TestConformance(t *testing.T) {
	runsc, images := testEnv(t)
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: filepath.Join(scratch(t), "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, d, func(t *testing.T, id string) runtime.Spec {
		dir := filepath.Join(scratch(t), id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return runtime.Spec{
			ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "conformance",
			VCPUs: 1, MemoryMB: 256, DiskMB: 256,
		}
	})
}

// scratch returns a directory outside /tmp (runsc mounts its own /tmp over
// the sandbox's view), removed at the end of the test.
func scratch(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "wrenn-gvisor-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// runsc --network=none bind-mounts an empty namespace at
		// <root>/null-netns and leaves it mounted.
		_ = unix.Unmount(filepath.Join(dir, "runsc", "null-netns"), unix.MNT_DETACH)
		_ = os.RemoveAll(dir)
	})
	return dir
}
