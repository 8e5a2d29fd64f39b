package agent

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/durable"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/ociimage"
	"github.com/wrenn-dev/wrenn/internal/rules"
)

// This file moves templates between hosts. A host that lacks a template a
// capsule needs gets it from one that has it, through the control plane:
// GET /templates/{name}/export on the one streams it as tar, and the
// control plane passes the stream on to POST /templates/{name}/receive on
// the other, with the SHA-256 of the stream as a trailer, checked before
// the template is put in place. Snapshot templates do not move: their
// saved state belongs to their host's runtime.

// transferBuffer is the buffer on each side of a template's stream.
const transferBuffer = 1 << 20

// Entry names of a template's tar stream.
const (
	transferDir   = "template"   // the template's directory
	transferImage = "image.ext4" // its disk image, for runtimes that boot one
)

var (
	errTemplateMissing  = errors.New("no such template on this host")
	errTemplateSnapshot = errors.New("a snapshot's saved state stays on its host")
	errTransferDigest   = errors.New("the template's stream does not match its digest")
)

// exportHandler serves hostproto.TemplateExportPath.
func (s *Server) exportHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !s.transferAllowed(w, r, name, hostproto.TemplateExportProcedure(name)) {
			return
		}
		if err := s.capsules.exportable(name); err != nil {
			status, code := http.StatusNotFound, "not_found"
			if errors.Is(err, errTemplateSnapshot) {
				status, code = http.StatusConflict, "failed_precondition"
			}
			proxyError(w, status, code, err.Error())
			return
		}
		w.Header().Set("Trailer", hostproto.TemplateDigestTrailer)
		w.Header().Set("Content-Type", "application/x-tar")
		sum := sha256.New()
		if err := s.capsules.ExportTemplate(r.Context(), name, io.MultiWriter(w, sum)); err != nil {
			// The status is sent: ending the stream without its trailer
			// is how the receiver learns that it is incomplete.
			s.capsules.log.Warn("template export failed", "template", name, "err", err)
			panic(http.ErrAbortHandler)
		}
		w.Header().Set(hostproto.TemplateDigestTrailer, hex.EncodeToString(sum.Sum(nil)))
	})
}

// receiveHandler serves hostproto.TemplateReceivePath.
func (s *Server) receiveHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !s.transferAllowed(w, r, name, hostproto.TemplateReceiveProcedure(name)) {
			return
		}
		got, err := s.capsules.ReceiveTemplate(r.Context(), name, r.Body, func() string {
			return r.Trailer.Get(hostproto.TemplateDigestTrailer)
		})
		switch {
		case errors.Is(err, errTransferDigest) || errors.Is(err, ociimage.ErrInvalid) || errors.Is(err, errTemplateSnapshot):
			proxyError(w, http.StatusUnprocessableEntity, "invalid_argument", err.Error())
		case err != nil:
			s.capsules.log.Warn("receiving template failed", "template", name, "err", err)
			proxyError(w, http.StatusInternalServerError, "internal", err.Error())
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(got)
		}
	})
}

// transferAllowed checks a template transfer's token (bound to procedure
// and to the request line) and name, answering and reporting false when
// the call may not go on.
func (s *Server) transferAllowed(w http.ResponseWriter, r *http.Request, name, procedure string) bool {
	if err := s.verifier.Verify(r.Header, procedure, hostauth.RequestDigest(r.Method, r.RequestURI)); err != nil {
		proxyError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
		return false
	}
	if s.capsules == nil {
		proxyError(w, http.StatusServiceUnavailable, "unavailable", "this agent runs no capsules")
		return false
	}
	if !rules.ValidTemplateName(name) {
		proxyError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("template name %q: %s", name, rules.TemplateNameRule))
		return false
	}
	return true
}

// exportable reports why template name cannot be exported, if it cannot.
func (c *Capsules) exportable(name string) error {
	if c.isSnapshot(name) {
		return fmt.Errorf("template %s: %w", name, errTemplateSnapshot)
	}
	if err := c.cfg.Driver.UsableTemplate(filepath.Join(c.imagesDir(), name)); err != nil {
		return fmt.Errorf("%w: %s", errTemplateMissing, name)
	}
	return nil
}

// ExportTemplate writes template name to w as a tar stream: its directory
// under "template/" and, when the runtime boots a disk image kept beside
// it, that image as "image.ext4".
func (c *Capsules) ExportTemplate(ctx context.Context, name string, w io.Writer) error {
	if err := c.exportable(name); err != nil {
		return err
	}
	// An operator may keep a template elsewhere and link it in.
	dir, err := filepath.EvalSymlinks(filepath.Join(c.imagesDir(), name))
	if err != nil {
		return fmt.Errorf("exporting template %s: %w", name, err)
	}
	// A template is tens of thousands of small entries: buffered, they
	// leave in large writes instead of a TLS record each.
	bw := bufio.NewWriterSize(w, transferBuffer)
	tw := tar.NewWriter(bw)
	if err := ociimage.PackTree(ctx, tw, dir, transferDir); err != nil {
		return fmt.Errorf("exporting template %s: %w", name, err)
	}
	if err := packFile(tw, filepath.Join(c.imagesDir(), name)+".ext4", transferImage); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("exporting template %s: %w", name, err)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// packFile writes the regular file p to tw as entry name.
func packFile(tw *tar.Writer, p, name string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	hdr, err := tar.FileInfoHeader(fi, "")
	if err != nil {
		return err
	}
	hdr.Name, hdr.Uname, hdr.Gname = name, "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, fi.Size())
	return err
}

// ReceiveTemplate makes template name from body, a stream written by
// ExportTemplate; digest returns the stream's SHA-256 as the sender
// computed it, once body has been read to its end. The template appears
// whole, synced to disk, or not at all. A template this host already has
// is kept as it is (Existed).
func (c *Capsules) ReceiveTemplate(ctx context.Context, name string, body io.Reader, digest func() string) (hostproto.ReceivedTemplate, error) {
	out := hostproto.ReceivedTemplate{Name: name}
	if !rules.ValidTemplateName(name) {
		return out, fmt.Errorf("%w: template name %q", errInvalidSpec, name)
	}
	// One receive at a time on a host: two control planes sending the
	// same template must not both rename it into place.
	c.receiving.Lock()
	defer c.receiving.Unlock()
	final := filepath.Join(c.imagesDir(), name)
	if c.hasTemplate(name) {
		out.Existed = true
		out.SizeBytes = templateSize(final)
		return out, nil
	}
	if err := os.MkdirAll(c.imagesDir(), 0o755); err != nil {
		return out, fmt.Errorf("receiving template: %w", err)
	}
	staging, err := os.MkdirTemp(c.imagesDir(), ".receive-"+name+".")
	if err != nil {
		return out, fmt.Errorf("receiving template: %w", err)
	}
	defer func() { _ = os.RemoveAll(staging) }()
	sum := sha256.New()
	guarded := &diskGuard{r: body, dir: staging}
	// Everything read from body is hashed once, read-ahead included: the
	// rest is drained through the same reader before the digest is taken.
	stream := bufio.NewReaderSize(io.TeeReader(guarded, sum), transferBuffer)
	if err := ociimage.UnpackTree(ctx, stream, staging); err != nil {
		if guarded.err != nil {
			err = guarded.err
		}
		return out, fmt.Errorf("receiving template %s: %w", name, err)
	}
	if err := checkDigest(stream, sum, digest); err != nil {
		return out, err
	}
	tmpl, image := filepath.Join(staging, transferDir), filepath.Join(staging, transferImage)
	if _, err := os.Stat(filepath.Join(tmpl, templateSnapMeta)); err == nil {
		return out, fmt.Errorf("template %s: %w", name, errTemplateSnapshot)
	}
	// The runtime looks for a disk image beside the directory: the one the
	// sender had, or one made here from the rootfs (a template from a
	// gVisor host reaching a Firecracker one).
	suffix := ""
	if _, err := os.Stat(image); err == nil {
		suffix = ".ext4"
		if err := os.Rename(image, tmpl+suffix); err != nil {
			return out, fmt.Errorf("receiving template %s: %w", name, err)
		}
	} else if suffix, err = c.templateImage(ctx, tmpl, func(string) {}); err != nil {
		return out, fmt.Errorf("receiving template %s: %w", name, err)
	}
	if err := c.cfg.Driver.UsableTemplate(tmpl); err != nil {
		return out, fmt.Errorf("%w: the received template is not usable here: %w", ociimage.ErrInvalid, err)
	}
	if err := syncFS(staging); err != nil {
		return out, err
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	if err := placeTemplate(tmpl, final, suffix); err != nil {
		return out, fmt.Errorf("putting template in place: %w", err)
	}
	if err := durable.Sync(c.imagesDir()); err != nil {
		return out, err
	}
	out.SizeBytes = templateSize(final)
	c.log.Info("template received", "template", name, "size_bytes", out.SizeBytes)
	return out, nil
}

// receiveDiskReserve is the disk a template received from another host
// must leave free on this one, for the capsules' writable layers and
// saved states: a template bigger than the sender said stops there.
const receiveDiskReserve = 1 << 30

// diskGuard reads r and fails once the file system of dir has less than
// receiveDiskReserve free, looking every 64 MiB.
type diskGuard struct {
	r       io.Reader
	dir     string
	unseen  int64
	err     error
	checked bool
}

func (g *diskGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if !g.checked || g.unseen >= 64<<20 {
		g.checked, g.unseen = true, 0
		d, err := statDisk(g.dir)
		if err == nil && d.free < receiveDiskReserve {
			g.err = fmt.Errorf("receiving template: this host's disk has only %d MiB free, less than the %d MiB it keeps for capsules",
				d.free>>20, receiveDiskReserve>>20)
			return 0, g.err
		}
	}
	n, err := g.r.Read(p)
	g.unseen += int64(n)
	return n, err
}

// checkDigest reads what is left of stream (a tar stream's padding), whose
// bytes sum hashes as they are read, so that the body's trailer has
// arrived, and compares the digest of the whole stream with the one the
// sender gave.
func checkDigest(stream io.Reader, sum hash.Hash, digest func() string) error {
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return fmt.Errorf("receiving template: %w", err)
	}
	want, got := digest(), hex.EncodeToString(sum.Sum(nil))
	if want == "" {
		return fmt.Errorf("%w: the stream came without one (cut short?)", errTransferDigest)
	}
	if want != got {
		return fmt.Errorf("%w: got %s, the sender said %s", errTransferDigest, got, want)
	}
	return nil
}

// templateSize is the size template.json in dir records (0 if unknown).
func templateSize(dir string) int64 {
	var meta struct {
		SizeBytes int64 `json:"size_bytes"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "template.json"))
	if err == nil {
		_ = json.Unmarshal(b, &meta)
	}
	return meta.SizeBytes
}

// syncFS makes everything written to the file system holding dir durable:
// one call instead of an fsync per file of a template.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
