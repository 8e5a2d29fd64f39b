package ociimage_test

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/ociimage"
	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
)

// TestTreeRoundTrip copies an unpacked image through PackTree and
// UnpackTree: owners, modes (set-uid too), symlinks, hard links and
// extended attributes arrive as they were, under the prefix.
func TestTreeRoundTrip(t *testing.T) {
	needRoot(t)
	archive := ocitest.LayoutArchive(t, t.TempDir(), ocitest.Image(t, ocitest.Layers(t)...))
	rootfs, _ := unpack(t, archive)
	// A file named like a whiteout is a file here.
	if err := os.WriteFile(filepath.Join(rootfs, ".wh.kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := ociimage.PackTree(context.Background(), tw, rootfs, "template/rootfs"); err != nil {
		t.Fatalf("PackTree: %v", err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := ociimage.UnpackTree(context.Background(), &buf, out); err != nil {
		t.Fatalf("UnpackTree: %v", err)
	}
	ocitest.Check(t, filepath.Join(out, "template/rootfs"))
	for _, p := range []string{"data/keep", "data/orig"} {
		a, errA := os.Stat(filepath.Join(rootfs, p))
		b, errB := os.Stat(filepath.Join(out, "template/rootfs", p))
		if errA != nil || errB != nil || !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%s: modified %v, want %v as in the source (%v %v)", p, b, a, errA, errB)
		}
	}
	if b, err := os.ReadFile(filepath.Join(out, "template/rootfs/.wh.kept")); err != nil || string(b) != "x" {
		t.Errorf(".wh.kept: %q %v, want the file", b, err)
	}
}

// TestUnpackTreeStaysInside refuses a stream whose entries climb out of
// the directory.
func TestUnpackTreeStaysInside(t *testing.T) {
	needRoot(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/", Mode: 0o777},
		{Name: "evil/escaped", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			_, _ = tw.Write([]byte("x"))
		}
	}
	_ = tw.Close()
	parent := t.TempDir()
	out := filepath.Join(parent, "in")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ociimage.UnpackTree(context.Background(), &buf, out); err == nil {
		t.Error("UnpackTree followed a symlink out of its directory")
	}
	if _, err := os.Lstat("/escaped"); err == nil {
		t.Fatal("/escaped was written")
	}
}
