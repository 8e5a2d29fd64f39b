package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wrenn-dev/wrenn/internal/durable"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/ociimage"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// This file holds template imports: the control plane streams an OCI image
// (an OCI image layout or a `docker save` archive, as one tar file) to
// POST /templates/{name}/import, and the agent unpacks it (internal/ociimage),
// adds envd and what every template has, and renames the result into
// $WRENN_DIR/images/<name>. The answer is a stream of JSON lines: progress
// ({"log": "..."}), then {"template": {...}} or {"error": {...}}.

// importMeta is the marker file of an imported template: what the image
// said about running it. Its presence also lets DeleteTemplate remove the
// template, which it refuses for the base templates an operator built.
const importMeta = "import.json"

// importedMeta is import.json.
type importedMeta struct {
	Config     hostproto.ImageConfig `json:"config"`
	ImportedAt time.Time             `json:"imported_at"`
}

// importHandler serves hostproto.TemplateImportPath. The control plane's token names the
// template and is bound to the request line, like the envd proxy's.
func (s *Server) importHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if s.capsules == nil {
			proxyError(w, http.StatusServiceUnavailable, "unavailable", "this agent runs no capsules")
			return
		}
		if err := s.verifier.Verify(r.Header, hostproto.TemplateImportProcedure(name), hostauth.RequestDigest(r.Method, r.RequestURI)); err != nil {
			proxyError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
			return
		}
		if !rules.ValidTemplateName(name) {
			proxyError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("template name %q: %s", name, rules.TemplateNameRule))
			return
		}
		q := r.URL.Query()
		var sizes [3]int
		for i, k := range []string{"vcpus", "memory_mb", "disk_mb"} {
			n, err := strconv.Atoi(q.Get(k))
			if err != nil || n < 1 {
				proxyError(w, http.StatusBadRequest, "invalid_argument", k+" must be a positive integer")
				return
			}
			sizes[i] = n
		}
		// The answer starts with the first line, once the image is
		// received: an HTTP/1.1 server may not read a body after it has
		// begun to answer.
		w.Header().Set("Content-Type", "application/x-ndjson")
		rc := http.NewResponseController(w)
		enc := json.NewEncoder(w)
		send := func(l hostproto.ImportLine) {
			_ = enc.Encode(l)
			_ = rc.Flush()
		}
		info, err := s.capsules.Import(r.Context(), name, r.Body, sizes, func(msg string) { send(hostproto.ImportLine{Log: msg}) })
		if err != nil {
			code := "internal"
			if errors.Is(err, ociimage.ErrInvalid) || errors.Is(err, errInvalidSpec) {
				code = "invalid_argument"
			} else if errors.Is(err, errTemplateExists) {
				code = "already_exists"
			}
			s.capsules.log.Warn("template import failed", "template", name, "err", err)
			send(hostproto.ImportLine{Error: &hostproto.ImportError{Code: code, Message: err.Error()}})
			return
		}
		send(hostproto.ImportLine{Template: &info})
	})
}

// Import makes template name from the image archive read from body, with
// default sizes sizes (vcpus, memory MB, disk MB). The template appears
// whole or not at all: it is built in a directory of its own beside the
// others and renamed into place. progress is told each step.
func (c *Capsules) Import(ctx context.Context, name string, body io.Reader, sizes [3]int, progress func(string)) (hostproto.ImportedTemplate, error) {
	if !rules.ValidTemplateName(name) {
		return hostproto.ImportedTemplate{}, fmt.Errorf("%w: template name %q", errInvalidSpec, name)
	}
	final := filepath.Join(c.imagesDir(), name)
	if _, err := os.Lstat(final); err == nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("%w: %s", errTemplateExists, name)
	}
	envd, envdVersion, err := c.envdSource()
	if err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	if err := os.MkdirAll(c.imagesDir(), 0o755); err != nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("importing template: %w", err)
	}
	build, err := os.MkdirTemp(c.imagesDir(), ".import-"+name+".")
	if err != nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("importing template: %w", err)
	}
	defer func() { _ = os.RemoveAll(build) }()
	work, tmpl := filepath.Join(build, "work"), filepath.Join(build, "template")
	rootfs := filepath.Join(tmpl, "rootfs")
	for _, d := range []string{work, tmpl, rootfs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return hostproto.ImportedTemplate{}, fmt.Errorf("importing template: %w", err)
		}
	}

	archive := filepath.Join(build, "image.tar")
	n, err := receive(archive, body)
	if err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	progress(fmt.Sprintf("received the image: %d bytes", n))
	img, err := ociimage.Open(archive, work)
	if err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	oc, err := ociimage.ImageConfig(img)
	if err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	cfg := hostproto.ImageConfig(oc)
	if err := ociimage.Unpack(ctx, img, rootfs, progress); err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	// The archive and the layout are not part of the template.
	_ = os.Remove(archive)
	_ = os.RemoveAll(work)
	if err := addBaseFiles(rootfs, envd, progress); err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	size, err := treeSize(rootfs)
	if err != nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("measuring template: %w", err)
	}
	meta := map[string]any{
		"name": name, "size_bytes": size, "default_vcpus": sizes[0], "default_memory_mb": sizes[1],
		"default_disk_mb": sizes[2], "built_at": time.Now().UTC().Format(time.RFC3339), "envd_version": envdVersion,
	}
	if err := writeJSONDurable(filepath.Join(tmpl, "template.json"), meta); err != nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("writing template.json: %w", err)
	}
	if err := writeJSONDurable(filepath.Join(tmpl, importMeta), importedMeta{Config: cfg, ImportedAt: time.Now().UTC()}); err != nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("writing %s: %w", importMeta, err)
	}
	suffix, err := c.templateImage(ctx, tmpl, progress)
	if err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	if err := c.cfg.Driver.UsableTemplate(tmpl); err != nil {
		return hostproto.ImportedTemplate{}, fmt.Errorf("imported template is not usable: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	if err := placeTemplate(tmpl, final, suffix); err != nil {
		if _, serr := os.Lstat(final); serr == nil {
			return hostproto.ImportedTemplate{}, fmt.Errorf("%w: %s", errTemplateExists, name)
		}
		return hostproto.ImportedTemplate{}, fmt.Errorf("putting template in place: %w", err)
	}
	if err := durable.Sync(c.imagesDir()); err != nil {
		return hostproto.ImportedTemplate{}, err
	}
	progress(fmt.Sprintf("template ready: %d bytes", size))
	c.log.Info("template imported", "template", name, "size_bytes", size)
	return hostproto.ImportedTemplate{Name: name, SizeBytes: size, EnvdVersion: envdVersion, Config: cfg}, nil
}

// templateImage makes the boot file of template directory dir where the
// driver boots one (runtime.TemplateImager: Firecracker's ext4 image), and
// returns its suffix beside dir; "" when the driver boots the directory.
func (c *Capsules) templateImage(ctx context.Context, dir string, progress func(string)) (string, error) {
	ti, ok := c.cfg.Driver.(runtime.TemplateImager)
	if !ok {
		return "", nil
	}
	suffix, err := ti.MakeTemplateImage(ctx, dir)
	if err != nil {
		return "", err
	}
	if st, err := os.Stat(dir + suffix); err == nil {
		progress(fmt.Sprintf("disk image for %s: %d bytes", c.cfg.Driver.Name(), st.Size()))
	}
	return suffix, nil
}

// placeTemplate renames the template directory tmpl to final, and its
// boot file tmpl+suffix (if suffix is not "") to final+suffix first: a
// template whose directory is in place is whole. On failure neither is
// left at final.
func placeTemplate(tmpl, final, suffix string) error {
	if suffix != "" {
		if _, err := os.Lstat(final); err == nil {
			return fmt.Errorf("%s exists", final)
		}
		if err := os.Rename(tmpl+suffix, final+suffix); err != nil {
			return err
		}
	}
	if err := os.Rename(tmpl, final); err != nil {
		if suffix != "" {
			_ = os.Remove(final + suffix)
		}
		return err
	}
	return nil
}

// receive writes body to the file p and returns its size.
func receive(p string, body io.Reader) (int64, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, fmt.Errorf("receiving image: %w", err)
	}
	n, err := io.Copy(f, bufio.NewReaderSize(body, 1<<20))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("receiving image: %w", err)
	}
	return n, nil
}

// envdSource returns the envd binary an imported template gets, and its
// version: the one of this host's minimal template, else of the first
// base template (by name) that is not itself imported.
func (c *Capsules) envdSource() (string, string, error) {
	names := c.Templates()
	for i, n := range names {
		if n == "minimal" {
			names[0], names[i] = names[i], names[0]
		}
	}
	for _, n := range names {
		dir := filepath.Join(c.imagesDir(), n)
		if _, err := os.Stat(filepath.Join(dir, importMeta)); err == nil {
			continue
		}
		p := filepath.Join(dir, "rootfs", runtime.EnvdPath)
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			continue
		}
		var t struct {
			EnvdVersion string `json:"envd_version"`
		}
		if b, err := os.ReadFile(filepath.Join(dir, "template.json")); err == nil {
			_ = json.Unmarshal(b, &t)
		}
		return p, t.EnvdVersion, nil
	}
	return "", "", errors.New("importing template: this host has no base template with envd to take it from (build `minimal` with `make images`)")
}

// addBaseFiles gives rootfs what every template has (see docs/templates.md):
// envd, the directories a capsule needs, the network files, and the users
// root and user when the image's /etc/passwd lacks them.
func addBaseFiles(rootfs, envd string, progress func(string)) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("adding envd: %w", err)
	}
	defer func() { _ = root.Close() }()
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{"etc", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755}, {"root", 0o700},
		{"tmp", 0o1777}, {"var/tmp", 0o1777}, {"usr/bin", 0o755}, {"home/user", 0o755}} {
		if _, err := root.Lstat(d.path); err == nil {
			continue
		}
		if err := root.MkdirAll(d.path, 0o755); err != nil {
			return fmt.Errorf("making /%s: %w", d.path, err)
		}
		if err := root.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("making /%s: %w", d.path, err)
		}
	}
	if err := copyInto(root, envd, strings.TrimPrefix(runtime.EnvdPath, "/"), 0o755); err != nil {
		return fmt.Errorf("adding envd: %w", err)
	}
	progress("added envd at " + runtime.EnvdPath)
	files := map[string]string{
		"etc/hosts":       "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tcapsule\n",
		"etc/resolv.conf": "nameserver 1.1.1.1\nnameserver 8.8.8.8\n",
		"etc/hostname":    "capsule\n",
	}
	for p, body := range files {
		// A symlink (resolv.conf often is one) is replaced: the capsule
		// needs the file itself.
		if err := root.RemoveAll(p); err != nil {
			return fmt.Errorf("writing /%s: %w", p, err)
		}
		if err := root.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("writing /%s: %w", p, err)
		}
	}
	added, err := ensureAccounts(root)
	if err != nil {
		return err
	}
	if added != "" {
		progress("added to /etc/passwd and /etc/group: " + added)
	}
	if _, err := root.Lstat("home/user"); err == nil {
		if err := root.Lchown("home/user", 1000, 1000); err != nil {
			return fmt.Errorf("giving /home/user to user: %w", err)
		}
	}
	return nil
}

// ensureAccounts appends root and user (uid/gid 1000) to /etc/passwd and
// /etc/group where the image has no account of that name, and says which.
func ensureAccounts(root *os.Root) (string, error) {
	var added []string
	for _, f := range []struct {
		path  string
		lines map[string]string
	}{
		{"etc/passwd", map[string]string{"root": "root:x:0:0:root:/root:/bin/sh", "user": "user:x:1000:1000::/home/user:/bin/sh"}},
		{"etc/group", map[string]string{"root": "root:x:0:", "user": "user:x:1000:"}},
	} {
		b, err := root.ReadFile(f.path)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("reading /%s: %w", f.path, err)
		}
		have := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			if name, _, ok := strings.Cut(l, ":"); ok {
				have[name] = true
			}
		}
		out := string(b)
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		changed := false
		for _, name := range []string{"root", "user"} {
			if !have[name] {
				out += f.lines[name] + "\n"
				added = append(added, "/"+f.path+":"+name)
				changed = true
			}
		}
		if changed {
			if err := root.RemoveAll(f.path); err != nil {
				return "", fmt.Errorf("writing /%s: %w", f.path, err)
			}
			if err := root.WriteFile(f.path, []byte(out), 0o644); err != nil {
				return "", fmt.Errorf("writing /%s: %w", f.path, err)
			}
		}
	}
	return strings.Join(added, " "), nil
}

// copyInto copies the host file src to name inside root, replacing what
// is there.
func copyInto(root *os.Root, src, name string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	if err := root.RemoveAll(name); err != nil {
		return err
	}
	out, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return root.Chmod(name, mode)
}

// treeSize is the apparent size of the files under dir, each inode once.
func treeSize(dir string) (int64, error) {
	var total int64
	seen := map[uint64]bool{}
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		total += fi.Size()
		return nil
	})
	return total, err
}

// isImported reports whether template directory name was made by Import.
func (c *Capsules) isImported(name string) bool {
	_, err := os.Stat(filepath.Join(c.imagesDir(), name, importMeta))
	return err == nil
}
