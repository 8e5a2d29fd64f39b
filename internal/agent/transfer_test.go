package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
)

// transferHost is a Capsules with only what template transfers use: an
// images directory and a driver that can tell a usable template.
func transferHost(t testing.TB) *Capsules {
	t.Helper()
	dir := t.TempDir()
	drv, err := gvisor.New(gvisor.Config{Runsc: "/bin/true", StateDir: filepath.Join(dir, "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Capsules{cfg: CapsulesConfig{Dir: dir, Driver: drv}, log: slog.New(slog.DiscardHandler)}
}

// writeTemplate makes template name in c's images: envd, a set-uid file
// owned by uid 1000, a hard link and a symlink.
func writeTemplate(t *testing.T, c *Capsules, name string, snapshot bool) {
	t.Helper()
	root := filepath.Join(c.imagesDir(), name, "rootfs")
	files := map[string]string{"usr/bin/envd": "envd binary", "usr/bin/tool": "tool", "home/user/notes": "hello"}
	for p, body := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chown(filepath.Join(root, "home/user/notes"), 1000, 1000))
	must(os.Chmod(filepath.Join(root, "usr/bin/tool"), os.ModeSetuid|0o755))
	must(os.Link(filepath.Join(root, "usr/bin/tool"), filepath.Join(root, "usr/bin/tool2")))
	must(os.Symlink("tool", filepath.Join(root, "usr/bin/tool-link")))
	must(os.WriteFile(filepath.Join(c.imagesDir(), name, "template.json"), []byte(`{"name": "`+name+`", "size_bytes": 4242}`), 0o644))
	if snapshot {
		must(os.WriteFile(filepath.Join(c.imagesDir(), name, templateSnapMeta), []byte(`{}`), 0o644))
	}
}

// exported returns template name of c as ExportTemplate streams it, and
// the stream's digest.
func exported(t *testing.T, c *Capsules, name string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	if err := c.ExportTemplate(context.Background(), name, &buf); err != nil {
		t.Fatalf("ExportTemplate: %v", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:])
}

// leftInImages lists c's images directory.
func leftInImages(t *testing.T, c *Capsules) []string {
	t.Helper()
	entries, err := os.ReadDir(c.imagesDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a template's files keep their owners (uid 1000), which needs root; run as root as `make test` does")
	}
}

// TestTemplateTransfer moves a template from one host to another: it
// arrives whole (owners, set-uid, links), a second send keeps it, and a
// stream whose digest does not match — altered, or cut short at an entry's
// boundary — leaves nothing behind.
func TestTemplateTransfer(t *testing.T) {
	needRoot(t)
	from, to := transferHost(t), transferHost(t)
	writeTemplate(t, from, "tpl", false)
	// Linked in from elsewhere, as an operator (and the tests) may do.
	elsewhere := transferHost(t)
	writeTemplate(t, elsewhere, "linked", false)
	if err := os.Symlink(filepath.Join(elsewhere.imagesDir(), "linked"), filepath.Join(from.imagesDir(), "linked")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tpl", "linked"} {
		stream, digest := exported(t, from, name)
		got, err := to.ReceiveTemplate(context.Background(), name, bytes.NewReader(stream), func() string { return digest })
		if err != nil || got.Existed || got.SizeBytes != 4242 {
			t.Fatalf("ReceiveTemplate(%s) = %+v, %v; want it received, 4242 bytes", name, got, err)
		}
		root := filepath.Join(to.imagesDir(), name, "rootfs")
		fi, err := os.Lstat(filepath.Join(to.imagesDir(), name))
		if err != nil || !fi.IsDir() {
			t.Fatalf("%s on the receiving host: %v, %v; want a directory", name, fi, err)
		}
		if fi, err := os.Stat(filepath.Join(root, "usr/bin/tool")); err != nil || fi.Mode() != os.ModeSetuid|0o755 {
			t.Errorf("%s: usr/bin/tool %v %v, want set-uid 0755", name, fi, err)
		}
		st1, _ := os.Stat(filepath.Join(root, "usr/bin/tool"))
		st2, _ := os.Stat(filepath.Join(root, "usr/bin/tool2"))
		if st1 == nil || st2 == nil || !os.SameFile(st1, st2) {
			t.Errorf("%s: usr/bin/tool2 is not a hard link of usr/bin/tool", name)
		}
		if l, _ := os.Readlink(filepath.Join(root, "usr/bin/tool-link")); l != "tool" {
			t.Errorf("%s: usr/bin/tool-link -> %q, want tool", name, l)
		}
		if fi, err := os.Stat(filepath.Join(root, "home/user/notes")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 1000 {
			t.Errorf("%s: home/user/notes is not uid 1000 (%v)", name, err)
		}
		if !to.hasTemplate(name) {
			t.Errorf("%s: the receiving host does not see it as a template", name)
		}
	}
	stream, digest := exported(t, from, "tpl")
	if got, err := to.ReceiveTemplate(context.Background(), "tpl", bytes.NewReader(stream), func() string { return digest }); err != nil || !got.Existed {
		t.Errorf("second ReceiveTemplate = %+v, %v; want it kept as it was", got, err)
	}

	bad := transferHost(t)
	altered := bytes.Clone(stream)
	altered[len(altered)/2] ^= 0xff
	cut := stream[:1024] // the first entries only: still a tar stream
	for name, tc := range map[string]struct {
		body   []byte
		digest string
	}{
		"altered":     {altered, digest},
		"cut short":   {cut, digest},
		"no trailer":  {stream, ""},
		"wrong claim": {stream, hex.EncodeToString(make([]byte, 32))},
	} {
		if _, err := bad.ReceiveTemplate(context.Background(), "tpl", bytes.NewReader(tc.body), func() string { return tc.digest }); err == nil {
			t.Errorf("%s stream: received", name)
		}
		if left := leftInImages(t, bad); len(left) != 0 {
			t.Errorf("%s stream left %v in the images directory", name, left)
		}
	}
}

// TestTemplateTransferRefusals: snapshots and unknown templates are not
// exported, and neither route answers without the control plane's token.
func TestTemplateTransferRefusals(t *testing.T) {
	needRoot(t)
	c := transferHost(t)
	writeTemplate(t, c, "snap", true)
	if err := c.ExportTemplate(context.Background(), "snap", &bytes.Buffer{}); !errors.Is(err, errTemplateSnapshot) {
		t.Errorf("export of a snapshot: %v, want %v", err, errTemplateSnapshot)
	}
	if err := c.ExportTemplate(context.Background(), "absent", &bytes.Buffer{}); !errors.Is(err, errTemplateMissing) {
		t.Errorf("export of an unknown template: %v, want %v", err, errTemplateMissing)
	}

	cp := newSigner(t)
	base, pin := startRPC(t, cp)
	client := pinnedClient(pin, hosttls.HTTP1Only)
	for _, tc := range []struct {
		method, path, procedure string
	}{
		{http.MethodGet, hostproto.TemplateExportPath("minimal"), hostproto.TemplateExportProcedure("minimal")},
		{http.MethodPost, hostproto.TemplateReceivePath("minimal"), hostproto.TemplateReceiveProcedure("minimal")},
	} {
		for _, auth := range []struct {
			name string
			tok  func() string
			want int
		}{
			{"no token", func() string { return "" }, http.StatusUnauthorized},
			{"token for another template", func() string {
				tok, _ := cp.BoundToken(testHostID, tc.procedure+"x", hostauth.RequestDigest(tc.method, tc.path))
				return tok
			}, http.StatusUnauthorized},
			// This agent runs no capsules: past the check, it says so.
			{"control-plane token", func() string {
				tok, _ := cp.BoundToken(testHostID, tc.procedure, hostauth.RequestDigest(tc.method, tc.path))
				return tok
			}, http.StatusServiceUnavailable},
		} {
			req, _ := http.NewRequest(tc.method, base+tc.path, bytes.NewReader(nil))
			if tok := auth.tok(); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != auth.want {
				t.Errorf("%s %s with %s: %d, want %d", tc.method, tc.path, auth.name, resp.StatusCode, auth.want)
			}
		}
	}
}
