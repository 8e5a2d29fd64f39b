package ociimage

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A tree is a directory copied whole between hosts (a template going to a
// host that lacks it) as one tar stream: PackTree writes it, UnpackTree
// applies it with the same care as an image layer. Owners, modes with the
// set-uid, set-gid and sticky bits, extended attributes, symlinks, hard
// links and times cross; device nodes and sockets do not (a capsule's /dev
// comes from its runtime).

// PackTree writes the files under dir to w as a tar stream whose entry
// names are prefix joined with their path relative to dir (prefix "" puts
// them at the top). Entries come in lexical order, each directory before
// what it holds; a file with several links is written once and linked
// after.
func PackTree(ctx context.Context, tw *tar.Writer, dir, prefix string) error {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join(prefix, rel))
		if name == "." {
			return nil // the top itself: its parent makes it
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket) != 0 {
			return nil
		}
		var link string
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		hdr.Name, hdr.Uname, hdr.Gname = name, "", ""
		hdr.Format = tar.FormatPAX
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := inode{st.Dev, st.Ino}
			if first, ok := seen[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[key] = name
			}
		}
		if hdr.PAXRecords, err = xattrRecords(p); err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
}

// xattrRecords returns p's extended attributes as PAX records (nil when it
// has none, or its file system keeps none).
func xattrRecords(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || size <= 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing extended attributes of %s: %w", p, err)
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil, fmt.Errorf("listing extended attributes of %s: %w", p, err)
	}
	var out map[string]string
	for _, attr := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if attr == "" {
			continue
		}
		n, err := unix.Lgetxattr(p, attr, nil)
		if err != nil {
			return nil, fmt.Errorf("reading extended attribute %s of %s: %w", attr, p, err)
		}
		v := make([]byte, n)
		if n, err = unix.Lgetxattr(p, attr, v); err != nil {
			return nil, fmt.Errorf("reading extended attribute %s of %s: %w", attr, p, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out["SCHILY.xattr."+attr] = string(v[:n])
	}
	return out, nil
}

// UnpackTree applies the tar stream r (as PackTree writes it) to the
// directory dir, which should be empty. Names are taken literally (an
// entry called .wh.x is a file, not a whiteout) and resolved inside dir.
func UnpackTree(ctx context.Context, r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer func() { _ = root.Close() }()
	u := &unpacker{root: root, dir: dir, progress: func(string) {}, literal: true}
	defer u.closeDir()
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalidf("reading tree: %v", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
}

// fresh makes entry name of a tree's stream. A regular file — most of a
// template — gets its content, owner, mode, extended attributes and times
// through the one descriptor that created it: each path resolved inside an
// os.Root costs a system call per component, and doing it once instead of
// five times makes a copy of the base template several times faster.
func (u *unpacker) fresh(name string, hdr *tar.Header, body io.Reader) error {
	if hdr.Typeflag == tar.TypeDir {
		// The stream need not hold its prefix's directories.
		if err := u.root.MkdirAll(path.Dir(name), 0o755); err != nil {
			return fmt.Errorf("making parent of %s: %w", name, err)
		}
	}
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA { //nolint:staticcheck // TypeRegA is still written by old tools
		return u.create(name, hdr, body)
	}
	dir, base := path.Split(name)
	in, err := u.dirRoot(strings.TrimSuffix(dir, "/"))
	if err != nil {
		return err
	}
	f, err := in.OpenFile(base, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	defer func() { _ = f.Close() }()
	if _, err := io.Copy(f, body); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	// The owner first: chown clears the set-uid and set-gid bits.
	if err := f.Chown(hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("setting owner of %s: %w", name, err)
	}
	if err := f.Chmod(hdr.FileInfo().Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)); err != nil {
		return fmt.Errorf("setting mode of %s: %w", name, err)
	}
	fd := int(f.Fd())
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if err := unix.Fsetxattr(fd, attr, []byte(v), 0); err != nil {
				return fmt.Errorf("setting extended attribute %s of %s: %w", attr, name, err)
			}
		}
	}
	if !hdr.ModTime.IsZero() {
		at := hdr.AccessTime
		if at.IsZero() {
			at = hdr.ModTime
		}
		ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("setting times of %s: %w", name, err)
		}
	}
	return f.Close()
}

// dirRoot returns directory dir of the root as an os.Root of its own,
// keeping the last one open: the files of a directory come one after the
// other, and each is then opened in one step instead of one per component
// of its path.
func (u *unpacker) dirRoot(dir string) (*os.Root, error) {
	if dir == "" {
		return u.root, nil
	}
	if u.cur != nil && u.curDir == dir {
		return u.cur, nil
	}
	u.closeDir()
	r, err := u.root.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening directory %s: %w", dir, err)
	}
	u.cur, u.curDir = r, dir
	return r, nil
}

// closeDir closes the directory dirRoot kept open.
func (u *unpacker) closeDir() {
	if u.cur != nil {
		_ = u.cur.Close()
		u.cur, u.curDir = nil, ""
	}
}
