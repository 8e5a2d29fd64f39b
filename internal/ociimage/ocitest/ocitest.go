// Package ocitest builds the OCI image the template tests import: two
// layers with a whiteout, an opaque directory, hard links (one inside a
// layer, one to a file of the layer below), a set-uid file owned by uid
// 1000, a symlink and an extended attribute; and checks a root file system
// unpacked from it. Tests only.
package ocitest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// Entry is one tar entry of a layer.
type Entry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Body     string
	Link     string
	Xattrs   map[string]string
}

// Layer returns a layer made of entries (written in order).
func Layer(t testing.TB, entries []Entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID,
			Linkname: e.Link, ModTime: mtime, Format: tar.FormatPAX}
		if e.Type == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
		}
		for k, v := range e.Xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.Type == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// BusyboxLayer returns a layer with the static busybox of rootfs (a
// template's root file system) at /bin/busybox and /bin/sh and /bin/stat
// linking to it, so that a capsule of the image can run commands.
func BusyboxLayer(t testing.TB, rootfs string) v1.Layer {
	t.Helper()
	bb, err := os.ReadFile(filepath.Join(rootfs, "bin", "busybox"))
	if err != nil {
		t.Fatalf("reading busybox of the minimal template: %v", err)
	}
	entries := []Entry{{Name: "bin/", Type: tar.TypeDir, Mode: 0o755}, {Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Body: string(bb)}}
	for _, applet := range []string{"sh", "stat", "ls", "cat", "id", "echo", "test"} {
		entries = append(entries, Entry{Name: "bin/" + applet, Type: tar.TypeSymlink, Mode: 0o777, Link: "busybox"})
	}
	return Layer(t, entries)
}

// Layers are the two layers whose result Check checks.
func Layers(t testing.TB) []v1.Layer {
	return []v1.Layer{
		Layer(t, []Entry{
			{Name: "data/", Type: tar.TypeDir, Mode: 0o755},
			{Name: "data/keep", Type: tar.TypeReg, Mode: 0o640, UID: 1000, GID: 1000, Body: "kept\n",
				Xattrs: map[string]string{"user.wrenn": "yes"}},
			{Name: "data/gone", Type: tar.TypeReg, Mode: 0o644, Body: "whited out\n"},
			{Name: "data/orig", Type: tar.TypeReg, Mode: 0o600, UID: 1000, GID: 1000, Body: "linked\n"},
			{Name: "data/same", Type: tar.TypeLink, Link: "data/orig"},
			{Name: "opq/", Type: tar.TypeDir, Mode: 0o750},
			{Name: "opq/old", Type: tar.TypeReg, Mode: 0o644, Body: "old\n"},
			{Name: "opq/sub/", Type: tar.TypeDir, Mode: 0o755},
			{Name: "opq/sub/deep", Type: tar.TypeReg, Mode: 0o644, Body: "deep\n"},
		}),
		Layer(t, []Entry{
			{Name: "data/.wh.gone", Type: tar.TypeReg, Mode: 0o644},
			{Name: "data/link", Type: tar.TypeLink, Link: "data/orig"},
			{Name: "data/suid", Type: tar.TypeReg, Mode: 0o4755, UID: 1000, GID: 1000, Body: "#!/bin/sh\n"},
			{Name: "data/sym", Type: tar.TypeSymlink, Link: "keep"},
			{Name: "opq/.wh..wh..opq", Type: tar.TypeReg, Mode: 0o644},
			{Name: "opq/new", Type: tar.TypeReg, Mode: 0o644, Body: "new\n"},
		}),
	}
}

// Image returns an image of layers with a configuration that names an
// environment variable and a working directory.
func Image(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Env = []string{"PATH=/bin", "WRENN_IMAGE=ocitest"}
	cf.Config.WorkingDir = "/data"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// LayoutArchive writes img as an OCI image layout packed in one tar file
// in dir and returns its path.
func LayoutArchive(t testing.TB, dir string, img v1.Image) string {
	t.Helper()
	lp := filepath.Join(dir, "layout")
	p, err := layout.Write(lp, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "image.tar")
	if err := TarDir(lp, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// DockerArchive writes img as `docker save` would, into dir, and returns
// the file's path.
func DockerArchive(t testing.TB, dir string, img v1.Image) string {
	t.Helper()
	out := filepath.Join(dir, "docker.tar")
	if err := tarball.WriteToFile(out, nil, img); err != nil {
		t.Fatal(err)
	}
	return out
}

// TarDir packs the regular files and directories under dir into the tar
// file out, with names relative to dir.
func TarDir(dir, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			_ = src.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// Want is what Check expects at one path of the root file system.
type Want struct {
	Path     string
	Mode     os.FileMode // type and permission bits, as os.Lstat reports
	UID, GID int
	Body     string
}

// Wants lists the files Layers leaves, with their modes and owners.
var Wants = []Want{
	{Path: "data", Mode: os.ModeDir | 0o755},
	{Path: "data/keep", Mode: 0o640, UID: 1000, GID: 1000, Body: "kept\n"},
	{Path: "data/orig", Mode: 0o600, UID: 1000, GID: 1000, Body: "linked\n"},
	{Path: "data/same", Mode: 0o600, UID: 1000, GID: 1000, Body: "linked\n"},
	{Path: "data/link", Mode: 0o600, UID: 1000, GID: 1000, Body: "linked\n"},
	{Path: "data/suid", Mode: os.ModeSetuid | 0o755, UID: 1000, GID: 1000, Body: "#!/bin/sh\n"},
	{Path: "data/sym", Mode: os.ModeSymlink | 0o777},
	{Path: "opq", Mode: os.ModeDir | 0o750},
	{Path: "opq/new", Mode: 0o644, Body: "new\n"},
}

// Gone lists the paths Layers removes with a whiteout or an opaque marker.
var Gone = []string{"data/gone", "data/.wh.gone", "opq/old", "opq/sub", "opq/.wh..wh..opq"}

// Check compares the root file system at rootfs with Wants and Gone, and
// checks that the hard links share one inode and that data/keep has its
// extended attribute.
func Check(t testing.TB, rootfs string) {
	t.Helper()
	for _, w := range Wants {
		p := filepath.Join(rootfs, w.Path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", w.Path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != w.Mode || int(st.Uid) != w.UID || int(st.Gid) != w.GID {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", w.Path, fi.Mode(), st.Uid, st.Gid, w.Mode, w.UID, w.GID)
		}
		if w.Body != "" {
			b, err := os.ReadFile(p)
			if err != nil || string(b) != w.Body {
				t.Errorf("%s: body %q (%v), want %q", w.Path, b, err, w.Body)
			}
		}
	}
	for _, g := range Gone {
		if _, err := os.Lstat(filepath.Join(rootfs, g)); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v), want it removed", g, err)
		}
	}
	if got, _ := os.Readlink(filepath.Join(rootfs, "data/sym")); got != "keep" {
		t.Errorf("data/sym links to %q, want keep", got)
	}
	inode := func(p string) (uint64, uint64) {
		fi, err := os.Lstat(filepath.Join(rootfs, p))
		if err != nil {
			return 0, 0
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Ino, st.Nlink
	}
	ino, n := inode("data/orig")
	for _, l := range []string{"data/same", "data/link"} {
		if i, _ := inode(l); i != ino || ino == 0 {
			t.Errorf("%s: inode %d, want %d (a hard link to data/orig)", l, i, ino)
		}
	}
	if n != 3 {
		t.Errorf("data/orig has %d links, want 3", n)
	}
	buf := make([]byte, 16)
	sz, err := unix.Lgetxattr(filepath.Join(rootfs, "data/keep"), "user.wrenn", buf)
	if err != nil || string(buf[:sz]) != "yes" {
		t.Errorf("data/keep: xattr user.wrenn = %q (%v), want yes", buf[:max(sz, 0)], err)
	}
}

// String describes w, for messages.
func (w Want) String() string { return fmt.Sprintf("%s %v %d:%d", w.Path, w.Mode, w.UID, w.GID) }
