package imagepull_test

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wrenn-dev/wrenn/internal/imagepull"
	"github.com/wrenn-dev/wrenn/internal/ociimage"
	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
)

// serve runs a registry (go-containerregistry's own server) holding the
// test image as wrenn/app:v1, and returns its host:port.
func serve(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	ref, err := name.ParseReference(addr + "/wrenn/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, ocitest.Image(t, ocitest.Layers(t)...)); err != nil {
		t.Fatal(err)
	}
	return addr
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}

// TestPull fetches an image from a registry into an archive that
// ociimage opens and unpacks to the image's exact files.
func TestPull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking sets file owners (uid 1000), which needs root; run as root as `make test` does")
	}
	addr := serve(t)
	p, err := imagepull.New([]string{"http://" + addr}, loopback, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := p.Parse(addr + "/wrenn/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	archive := filepath.Join(dir, "image.tar")
	var lines []string
	n, err := p.Pull(context.Background(), ref, archive, func(l string) { lines = append(lines, l) })
	if err != nil || n <= 0 || len(lines) != 2 || !strings.Contains(lines[0], "sha256:") {
		t.Fatalf("Pull = %d, %v; progress %q", n, err, lines)
	}
	img, err := ociimage.Open(archive, filepath.Join(dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ociimage.Unpack(context.Background(), img, rootfs, nil); err != nil {
		t.Fatal(err)
	}
	ocitest.Check(t, rootfs)
}

// TestPullRefusals: registries not named, addresses outside the allowed
// ranges (loopback here, the way to the control plane's own services), a
// missing image and an image over the size bound fail, leaving no file.
func TestPullRefusals(t *testing.T) {
	addr := serve(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name       string
		registries []string
		cidrs      []netip.Prefix
		max        int64
		ref        string
		parseErr   string // refused by Parse
		pullErr    string // refused by Pull
	}{
		{"registry not allowed", []string{"ghcr.io"}, nil, 1 << 30, addr + "/wrenn/app:v1", "is not one this control plane pulls from", ""},
		{"no registries", nil, nil, 1 << 30, "python:3", "pulls no images", ""},
		{"not a reference", []string{"docker.io"}, nil, 1 << 30, "Not A Ref!", "not an image reference", ""},
		{"loopback not allowed", []string{"http://" + addr}, nil, 1 << 30, addr + "/wrenn/app:v1", "", "registry address refused"},
		{"missing image", []string{"http://" + addr}, loopback, 1 << 30, addr + "/wrenn/none:v1", "", "fetching"},
		{"too big", []string{"http://" + addr}, loopback, 100, addr + "/wrenn/app:v1", "", "more than the 100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := imagepull.New(tc.registries, tc.cidrs, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := p.Parse(tc.ref)
			if tc.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
					t.Fatalf("Parse(%q) = %v, want an error saying %q", tc.ref, err, tc.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(dir, tc.name+".tar")
			if _, err := p.Pull(context.Background(), ref, dst, func(string) {}); err == nil || !strings.Contains(err.Error(), tc.pullErr) {
				t.Fatalf("Pull = %v, want an error saying %q", err, tc.pullErr)
			}
			if _, err := os.Stat(dst); err == nil {
				t.Error("a failed pull left its archive")
			}
		})
	}
	if _, err := imagepull.New([]string{"https://example.com/path"}, nil, 1); err == nil {
		t.Error("New took a registry with a path")
	}
}
