// Package ociimage turns an OCI image — an OCI image layout or a `docker
// save` archive, as one tar file — into a root file system on disk, without
// Docker. go-containerregistry reads the archive; the layers are applied
// here one after the other, lowest first, as the OCI image spec says:
// whiteouts (".wh.<name>") delete what lower layers made, opaque markers
// (".wh..wh..opq") empty a directory of lower layers' content, hard links
// link to files already written, and every file gets the owner, mode
// (set-uid, set-gid and sticky bits too), extended attributes and times of
// its tar header.
//
// Every path is resolved inside the root file system with an os.Root, so an
// entry or a link in the image cannot write outside it. Device nodes are
// skipped: a capsule's /dev comes from its runtime. Unpacking needs root to
// set owners, as the agent is.
package ociimage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// Whiteout markers of the OCI image spec (and Docker's, the same).
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// ErrInvalid means the archive is not an image this package can read; the
// message says why, in words for the person who uploaded it.
var ErrInvalid = errors.New("not a usable image")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Config is what an image's configuration says about running it.
type Config struct {
	Env        []string `json:"env,omitempty"`
	User       string   `json:"user,omitempty"`
	WorkingDir string   `json:"workdir,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	// ExposedPorts are "80/tcp" and the like.
	ExposedPorts []string `json:"exposed_ports,omitempty"`
}

// Open reads the image in archive, an OCI image layout or a `docker save`
// tarball as one tar file. An OCI layout is first unpacked into work (an
// empty directory the caller removes afterwards), because its blobs are
// read by path. A layout or archive of several images is ErrInvalid.
func Open(archive, work string) (v1.Image, error) {
	names, err := tarNames(archive)
	if err != nil {
		return nil, err
	}
	switch {
	case names["oci-layout"] && names["index.json"]:
		if err := extractLayout(archive, work); err != nil {
			return nil, err
		}
		return fromLayout(work)
	case names["manifest.json"]:
		img, err := tarball.ImageFromPath(archive, nil)
		if err != nil {
			return nil, invalidf("reading docker save archive: %v", err)
		}
		return img, nil
	default:
		return nil, invalidf("the archive has neither oci-layout and index.json (an OCI image layout) nor manifest.json (docker save)")
	}
}

// Check reports, as ErrInvalid, why archive is not an image Open can
// read, from its table of contents alone (the control plane checks an
// upload with it before it starts a build).
func Check(archive string) error {
	names, err := tarNames(archive)
	if err != nil {
		return err
	}
	if (names["oci-layout"] && names["index.json"]) || names["manifest.json"] {
		return nil
	}
	return invalidf("the archive has neither oci-layout and index.json (an OCI image layout) nor manifest.json (docker save)")
}

// tarNames returns the names of the top-level files of the tar file at p.
func tarNames(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("opening image archive: %w", err)
	}
	defer func() { _ = f.Close() }()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalidf("the upload is not a tar file: %v", err)
		}
		names[strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")] = true
	}
	return names, nil
}

// extractLayout writes the regular files and directories of the OCI layout
// archive into dir; anything else in it is refused.
func extractLayout(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("opening image archive: %w", err)
	}
	defer func() { _ = f.Close() }()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("opening layout directory: %w", err)
	}
	defer func() { _ = root.Close() }()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalidf("reading OCI layout archive: %v", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if name == "" {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return invalidf("OCI layout entry %s: %v", name, err)
			}
		case tar.TypeReg:
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return invalidf("OCI layout entry %s: %v", name, err)
			}
			out, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				return invalidf("OCI layout entry %s: %v", name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing OCI layout entry %s: %w", name, err)
			}
		default:
			return invalidf("OCI layout entry %s is not a file or directory", name)
		}
	}
}

// fromLayout returns the one image of the OCI layout in dir: the index's
// only manifest, or the linux/amd64 one of a multi-platform index.
func fromLayout(dir string) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, invalidf("reading OCI layout: %v", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, invalidf("reading OCI layout index: %v", err)
	}
	return pickImage(idx, 0)
}

func pickImage(idx v1.ImageIndex, depth int) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, invalidf("reading image index: %v", err)
	}
	var cands []v1.Descriptor
	for _, d := range im.Manifests {
		if d.Platform == nil || (d.Platform.OS == "linux" && d.Platform.Architecture == "amd64") {
			cands = append(cands, d)
		}
	}
	if len(cands) != 1 {
		return nil, invalidf("the index has %d images (for linux/amd64 or without platform); it must have exactly one", len(cands))
	}
	d := cands[0]
	switch {
	case d.MediaType.IsImage():
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, invalidf("reading image %s: %v", d.Digest, err)
		}
		return img, nil
	case d.MediaType.IsIndex() && depth == 0:
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, invalidf("reading image index %s: %v", d.Digest, err)
		}
		return pickImage(child, depth+1)
	default:
		return nil, invalidf("the index names a %s, not an image", d.MediaType)
	}
}

// ImageConfig returns what img's configuration says about running it.
func ImageConfig(img v1.Image) (Config, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return Config{}, invalidf("reading image configuration: %v", err)
	}
	c := Config{Env: cf.Config.Env, User: cf.Config.User, WorkingDir: cf.Config.WorkingDir,
		Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd}
	for p := range cf.Config.ExposedPorts {
		c.ExposedPorts = append(c.ExposedPorts, p)
	}
	return c, nil
}

// Unpack applies img's layers, lowest first, to the directory rootfs (which
// should be empty). progress, when not nil, is told of each layer and of
// what is skipped.
func Unpack(ctx context.Context, img v1.Image, rootfs string, progress func(string)) error {
	if progress == nil {
		progress = func(string) {}
	}
	layers, err := img.Layers()
	if err != nil {
		return invalidf("reading image layers: %v", err)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("opening root file system: %w", err)
	}
	defer func() { _ = root.Close() }()
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		digest, _ := l.Digest()
		size, _ := l.Size()
		progress(fmt.Sprintf("layer %d/%d %s (%d bytes)", i+1, len(layers), digest, size))
		// Whiteouts act on the layers below, so they go first, in a pass
		// of their own, before any entry of this layer is written.
		if err := eachEntry(l, func(hdr *tar.Header, _ io.Reader) error { return whiteout(root, hdr) }); err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		u := &unpacker{root: root, dir: rootfs, progress: progress}
		if err := eachEntry(l, u.entry); err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
	}
	return nil
}

// eachEntry calls fn for every entry of layer l's uncompressed tar stream.
func eachEntry(l v1.Layer, fn func(*tar.Header, io.Reader) error) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return invalidf("opening layer: %v", err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalidf("reading layer: %v", err)
		}
		if err := fn(hdr, tr); err != nil {
			return err
		}
	}
}

// clean returns a tar entry name as a path relative to the root, "" for
// the root itself.
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// whiteout applies hdr if it is a whiteout or an opaque marker.
func whiteout(root *os.Root, hdr *tar.Header) error {
	name := clean(hdr.Name)
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	switch {
	case base == opaqueMarker:
		entries, err := readDir(root, dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := root.RemoveAll(path.Join(dir, e)); err != nil {
				return fmt.Errorf("emptying opaque directory %s: %w", dir, err)
			}
		}
	case strings.HasPrefix(base, whiteoutPrefix):
		target := path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))
		if target == "." || target == "" {
			return invalidf("whiteout %s names the root", hdr.Name)
		}
		if err := root.RemoveAll(target); err != nil {
			return fmt.Errorf("applying whiteout of %s: %w", target, err)
		}
	}
	return nil
}

// readDir lists directory dir of root; a directory that does not exist has
// nothing in it.
func readDir(root *os.Root, dir string) ([]string, error) {
	f, err := root.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dir, err)
	}
	defer func() { _ = f.Close() }()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	return names, nil
}

// unpacker writes one layer's entries.
type unpacker struct {
	root     *os.Root
	dir      string
	progress func(string)
	// literal: names are plain names, not whiteouts (UnpackTree).
	literal bool
	// cur is directory curDir of root, open (see dirRoot).
	cur    *os.Root
	curDir string
}

func (u *unpacker) entry(hdr *tar.Header, body io.Reader) error {
	name := clean(hdr.Name)
	base := path.Base(name)
	if !u.literal && strings.HasPrefix(base, whiteoutPrefix) {
		return nil // applied in the first pass
	}
	if name == "" {
		// The root's own entry: its owner and mode, nothing to create.
		return u.meta(".", hdr)
	}
	if u.literal {
		// A tree's stream has each directory before what it holds, into
		// an empty directory: nothing to make first or to replace.
		return u.fresh(name, hdr, body)
	}
	if err := u.root.MkdirAll(path.Dir(name), 0o755); err != nil {
		return fmt.Errorf("making parent of %s: %w", name, err)
	}
	// What a lower layer had at this path goes, unless both are
	// directories: then the lower one's content stays (that is what
	// opaque markers are for).
	if fi, err := u.root.Lstat(name); err == nil {
		if bothDirs := fi.IsDir() && hdr.Typeflag == tar.TypeDir; !bothDirs {
			if err := u.root.RemoveAll(name); err != nil {
				return fmt.Errorf("replacing %s: %w", name, err)
			}
		}
	}
	return u.create(name, hdr, body)
}

// create makes entry name of hdr, whose parent exists.
func (u *unpacker) create(name string, hdr *tar.Header, body io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("making directory %s: %w", name, err)
		}
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // TypeRegA is still written by old tools
		f, err := u.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("creating %s: %w", name, err)
		}
		_, err = io.Copy(f, body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	case tar.TypeSymlink:
		if err := u.root.Symlink(hdr.Linkname, name); err != nil {
			return fmt.Errorf("making symlink %s: %w", name, err)
		}
	case tar.TypeLink:
		// The target is a path in the image, written by this layer or
		// one below; the link shares its inode, owner and mode.
		if err := u.root.Link(clean(hdr.Linkname), name); err != nil {
			return fmt.Errorf("making hard link %s to %s: %w", name, hdr.Linkname, err)
		}
		return nil
	case tar.TypeFifo:
		if err := u.mkfifo(name, hdr); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock:
		u.progress("skipped device node /" + name + " (a capsule's /dev comes from its runtime)")
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	default:
		u.progress(fmt.Sprintf("skipped /%s: tar entry type %q", name, hdr.Typeflag))
		return nil
	}
	return u.meta(name, hdr)
}

// mkfifo makes a named pipe at name, whose parent is a directory inside
// the root (made by MkdirAll above).
func (u *unpacker) mkfifo(name string, hdr *tar.Header) error {
	p, err := u.inside(name)
	if err != nil {
		return err
	}
	if err := unix.Mkfifo(p, uint32(hdr.Mode&0o777)); err != nil {
		return fmt.Errorf("making fifo %s: %w", name, err)
	}
	return nil
}

// inside returns the host path of name after checking that its parent,
// symlinks resolved, is inside the root: for the calls os.Root has no
// method for.
func (u *unpacker) inside(name string) (string, error) {
	parent, err := filepath.EvalSymlinks(filepath.Join(u.dir, filepath.Dir(name)))
	if err != nil {
		return "", fmt.Errorf("resolving parent of %s: %w", name, err)
	}
	rootDir, err := filepath.EvalSymlinks(u.dir)
	if err != nil {
		return "", fmt.Errorf("resolving root: %w", err)
	}
	if parent != rootDir && !strings.HasPrefix(parent, rootDir+string(filepath.Separator)) {
		return "", invalidf("%s resolves outside the root file system", name)
	}
	return filepath.Join(parent, filepath.Base(name)), nil
}

// meta gives name the owner, mode, extended attributes and times of hdr.
// The owner goes first: chown clears the set-uid and set-gid bits.
func (u *unpacker) meta(name string, hdr *tar.Header) error {
	if err := u.root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("setting owner of %s: %w", name, err)
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := u.root.Chmod(name, hdr.FileInfo().Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
			return fmt.Errorf("setting mode of %s: %w", name, err)
		}
	}
	if err := u.xattrs(name, hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeSymlink && !hdr.ModTime.IsZero() {
		at := hdr.AccessTime
		if at.IsZero() {
			at = hdr.ModTime
		}
		if err := u.root.Chtimes(name, at, hdr.ModTime); err != nil {
			return fmt.Errorf("setting times of %s: %w", name, err)
		}
	}
	return nil
}

// xattrs sets the extended attributes hdr carries as PAX records.
func (u *unpacker) xattrs(name string, hdr *tar.Header) error {
	const prefix = "SCHILY.xattr."
	var p string
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if p == "" {
			var err error
			if p, err = u.inside(name); err != nil {
				return err
			}
		}
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil {
			return fmt.Errorf("setting extended attribute %s of %s: %w", attr, name, err)
		}
	}
	return nil
}
