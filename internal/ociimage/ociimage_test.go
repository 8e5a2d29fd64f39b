package ociimage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/ociimage"
	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking sets file owners (uid 1000), which needs root; run as root as `make test` does")
	}
}

func unpack(t *testing.T, archive string) (string, ociimage.Config) {
	t.Helper()
	dir := t.TempDir()
	work, rootfs := filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{work, rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img, err := ociimage.Open(archive, work)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	cfg, err := ociimage.ImageConfig(img)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	if err := ociimage.Unpack(context.Background(), img, rootfs, func(s string) { steps = append(steps, s) }); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if len(steps) != 2 || !strings.HasPrefix(steps[0], "layer 1/2 sha256:") {
		t.Errorf("progress = %q, want one line per layer", steps)
	}
	return rootfs, cfg
}

func TestUnpackOCILayout(t *testing.T) {
	needRoot(t)
	archive := ocitest.LayoutArchive(t, t.TempDir(), ocitest.Image(t, ocitest.Layers(t)...))
	rootfs, cfg := unpack(t, archive)
	ocitest.Check(t, rootfs)
	if cfg.WorkingDir != "/data" || len(cfg.Env) != 2 {
		t.Errorf("config = %+v, want workdir /data and two envs", cfg)
	}
}

func TestUnpackDockerSave(t *testing.T) {
	needRoot(t)
	archive := ocitest.DockerArchive(t, t.TempDir(), ocitest.Image(t, ocitest.Layers(t)...))
	rootfs, _ := unpack(t, archive)
	ocitest.Check(t, rootfs)
}

func TestOpenRefusesWhatIsNoImage(t *testing.T) {
	dir := t.TempDir()
	notTar := filepath.Join(dir, "x")
	if err := os.WriteFile(notTar, []byte("hello, this is not a tar file at all, it is text"), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyTar := filepath.Join(dir, "empty.tar")
	if err := ocitest.TarDir(t.TempDir(), emptyTar); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{notTar, emptyTar} {
		work := t.TempDir()
		if _, err := ociimage.Open(p, work); !errors.Is(err, ociimage.ErrInvalid) {
			t.Errorf("Open(%s) = %v, want ErrInvalid", filepath.Base(p), err)
		}
	}
}

func TestUnpackStaysInside(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	img := ocitest.Image(t, ocitest.Layer(t, []ocitest.Entry{
		{Name: "esc", Type: '2', Link: outside},
		{Name: "../../../../" + filepath.Base(outside) + "/x", Type: '0', Mode: 0o644, Body: "x"},
		{Name: "esc/y", Type: '0', Mode: 0o644, Body: "y"},
	}))
	rootfs := t.TempDir()
	err := ociimage.Unpack(context.Background(), img, rootfs, nil)
	if err == nil {
		t.Error("Unpack wrote through a symlink that leaves the root, want an error")
	}
	for _, n := range []string{"x", "y"} {
		if _, err := os.Stat(filepath.Join(outside, n)); err == nil {
			t.Errorf("%s was written outside the root file system", n)
		}
	}
}
