package agent

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
	"github.com/wrenn-dev/wrenn/internal/runtime/firecracker"
)

// firecrackerHost is a Capsules with a Firecracker driver and only what
// template imports and transfers use. Nothing boots: the driver needs a
// binary that says its release and a kernel file to exist.
func firecrackerHost(t *testing.T) *Capsules {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "firecracker-bin")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho Firecracker v1.13.1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kernel := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(kernel, []byte("not booted here"), 0o644); err != nil {
		t.Fatal(err)
	}
	drv, err := firecracker.New(firecracker.Config{Firecracker: bin, Kernel: kernel, StateDir: filepath.Join(dir, "firecracker")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Capsules{cfg: CapsulesConfig{Dir: dir, Driver: drv}, log: slog.New(slog.DiscardHandler)}
}

// debugfsCat reads path out of the ext4 image img without mounting it.
func debugfsCat(t *testing.T, img, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s in %s: %v", path, img, err)
	}
	return string(out)
}

// TestTemplatesGetDiskImagesOnFirecracker: a Firecracker host boots a
// template from <name>.ext4, which only `make images` wrote. A template it
// imports from an image archive, or receives from a gVisor host (which
// sends none), now gets one made from its rootfs, holding the template's
// files, and lands whole: directory and image, nothing else left.
func TestTemplatesGetDiskImagesOnFirecracker(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: `make test` installs e2fsprogs", tool)
		}
	}
	ctx := context.Background()
	from, to := transferHost(t), firecrackerHost(t)

	// Received from a gVisor host.
	writeTemplate(t, from, "tpl", false)
	stream, digest := exported(t, from, "tpl")
	if _, err := to.ReceiveTemplate(ctx, "tpl", bytes.NewReader(stream), func() string { return digest }); err != nil {
		t.Fatalf("ReceiveTemplate on a Firecracker host: %v", err)
	}
	img := firecracker.ImagePath(filepath.Join(to.imagesDir(), "tpl"))
	if got := debugfsCat(t, img, "/usr/bin/envd"); got != "envd binary" {
		t.Fatalf("envd in the received template's image: %q", got)
	}
	if err := to.cfg.Driver.UsableTemplate(filepath.Join(to.imagesDir(), "tpl")); err != nil {
		t.Fatal(err)
	}

	// Imported from an image archive, with envd from the host's minimal.
	writeTemplate(t, to, "minimal", false)
	if _, err := to.cfg.Driver.(*firecracker.Driver).MakeTemplateImage(ctx, filepath.Join(to.imagesDir(), "minimal")); err != nil {
		t.Fatal(err)
	}
	archive := ocitest.LayoutArchive(t, t.TempDir(), ocitest.Image(t, ocitest.Layers(t)...))
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var steps []string
	if _, err := to.Import(ctx, "imported", f, [3]int{1, 256, 1024}, func(s string) { steps = append(steps, s) }); err != nil {
		t.Fatalf("Import on a Firecracker host: %v", err)
	}
	img = firecracker.ImagePath(filepath.Join(to.imagesDir(), "imported"))
	if got := debugfsCat(t, img, "/data/keep"); got != "kept\n" {
		t.Fatalf("/data/keep in the imported template's image: %q", got)
	}
	if got := debugfsCat(t, img, "/usr/bin/envd"); got != "envd binary" {
		t.Fatalf("envd in the imported template's image: %q", got)
	}
	if !slices.ContainsFunc(steps, func(s string) bool { return strings.HasPrefix(s, "disk image for firecracker") }) {
		t.Errorf("the import's progress never told of the disk image: %q", steps)
	}
	want := []string{"imported", "imported.ext4", "minimal", "minimal.ext4", "tpl", "tpl.ext4"}
	if got := leftInImages(t, to); !slices.Equal(got, want) {
		t.Errorf("images directory holds %v, want %v", got, want)
	}

	// A rootfs without envd cannot become a template.
	bare := filepath.Join(t.TempDir(), "bare")
	if err := os.MkdirAll(filepath.Join(bare, "rootfs", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := to.cfg.Driver.(*firecracker.Driver).MakeTemplateImage(ctx, bare); err == nil || !strings.Contains(err.Error(), "envd") {
		t.Errorf("MakeTemplateImage without envd = %v, want a refusal naming envd", err)
	}
	if _, err := os.Stat(firecracker.ImagePath(bare)); err == nil {
		t.Error("a refused image was left")
	}
}
