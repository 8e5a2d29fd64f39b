package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// remotePath splits "<id>:/path" (the path must be absolute, which tells
// it apart from a local path with a colon).
func remotePath(s string) (id, p string, ok bool) {
	id, p, ok = strings.Cut(s, ":")
	if !ok || id == "" || !strings.HasPrefix(p, "/") || strings.Contains(id, "/") {
		return "", "", false
	}
	return id, p, true
}

// cp copies one file between here and a capsule, streaming.
func (c *cli) cp(ctx context.Context, args []string) error {
	fs := c.flags("cp")
	c.jsonFlag(fs)
	progress := fs.Bool("progress", false, "show progress on stderr (default: when stderr is a terminal)")
	mode := fs.String("mode", "", "permission bits of an uploaded file, octal (default 644)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usageError("cp: want a source and a destination: wrenn cp ./file <id>:/path, or wrenn cp <id>:/path ./file")
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	srcID, srcPath, srcRemote := remotePath(src)
	dstID, dstPath, dstRemote := remotePath(dst)
	if srcRemote == dstRemote {
		return usageError("cp: exactly one of source and destination must be <id>:/path")
	}
	show := *progress
	if !show {
		if f, ok := c.stderr.(*os.File); ok && isTerminal(f) {
			show = true
		}
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	if dstRemote {
		var opts wrenn.FileOptions
		if *mode != "" {
			m, err := strconv.ParseUint(*mode, 8, 32)
			if err != nil || m > 0o7777 {
				return usageError("cp: --mode %q is not octal permission bits", *mode)
			}
			opts.Mode = os.FileMode(m)
		}
		return c.upload(ctx, cl, src, dstID, dstPath, opts, show)
	}
	return c.download(ctx, cl, srcID, srcPath, dst, show)
}

func (c *cli) upload(ctx context.Context, cl *wrenn.Client, src, id, dst string, opts wrenn.FileOptions, show bool) error {
	var (
		r    io.Reader
		size int64 = -1
		name       = filepath.Base(src)
	)
	if src == "-" {
		r, name = c.stdin, ""
	} else {
		f, err := os.Open(src)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if st.IsDir() {
			return fmt.Errorf("cp: %s is a directory; copy files one at a time (or tar them)", src)
		}
		r, size = f, st.Size()
	}
	if strings.HasSuffix(dst, "/") {
		if name == "" {
			return usageError("cp: give the file's name in the capsule for stdin")
		}
		dst += name
	}
	var p *progressBar
	if show {
		p = newProgress(c.stderr, size)
		r = io.TeeReader(r, p)
	}
	res, err := cl.Upload(ctx, id, dst, r, size, opts)
	p.done(err == nil)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(res)
	}
	return nil
}

func (c *cli) download(ctx context.Context, cl *wrenn.Client, id, src, dst string, show bool) error {
	d, err := cl.Download(ctx, id, src, wrenn.FileOptions{})
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }()
	w := c.stdout
	var f *os.File
	if dst != "-" {
		if st, err := os.Stat(dst); err == nil && st.IsDir() {
			dst = filepath.Join(dst, path.Base(src))
		}
		// Into a temporary file beside dst, renamed at the end, so that a
		// broken download leaves no half file.
		f, err = os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
		if err != nil {
			return err
		}
		defer func() { _ = os.Remove(f.Name()) }()
		w = f
	}
	var p *progressBar
	if show {
		p = newProgress(c.stderr, d.Size)
		w = io.MultiWriter(w, p)
	}
	n, err := io.Copy(w, d)
	if err == nil && d.Size >= 0 && n != d.Size {
		err = fmt.Errorf("download ended after %d of %d bytes", n, d.Size)
	}
	p.done(err == nil)
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Chmod(f.Name(), 0o644)
		}
		if err == nil {
			err = os.Rename(f.Name(), dst)
		}
	}
	if err != nil {
		return err
	}
	if c.json && dst != "-" {
		return c.printJSON(wrenn.WriteResult{Path: dst, Size: n})
	}
	return nil
}

// progressBar prints "  12.0 MiB / 100.0 MiB  12%  34.5 MiB/s" on one
// line, at most five times a second. A nil one does nothing.
type progressBar struct {
	w     io.Writer
	total int64
	start time.Time

	mu   sync.Mutex
	n    int64
	last time.Time
}

func newProgress(w io.Writer, total int64) *progressBar {
	return &progressBar{w: w, total: total, start: time.Now()}
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(len(b))
	if time.Since(p.last) >= 200*time.Millisecond {
		p.last = time.Now()
		p.print()
	}
	return len(b), nil
}

func (p *progressBar) print() {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	rate := float64(p.n) / (1 << 20) / max(time.Since(p.start).Seconds(), 0.001)
	if p.total >= 0 {
		pct := 100
		if p.total > 0 {
			pct = int(p.n * 100 / p.total)
		}
		fmt.Fprintf(p.w, "\r  %s / %s  %3d%%  %.1f MiB/s ", mib(p.n), mib(p.total), pct, rate)
		return
	}
	fmt.Fprintf(p.w, "\r  %s  %.1f MiB/s ", mib(p.n), rate)
}

func (p *progressBar) done(ok bool) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print()
	if ok {
		fmt.Fprintln(p.w)
	} else {
		fmt.Fprintln(p.w, " failed")
	}
}

// ls lists a directory in a capsule.
func (c *cli) ls(ctx context.Context, args []string) error {
	fs := c.flags("ls")
	c.jsonFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError("ls: want <id>:/path")
	}
	id, p, ok := remotePath(fs.Arg(0))
	if !ok {
		return usageError("ls: %q is not <id>:/path", fs.Arg(0))
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	entries, err := cl.ListFiles(ctx, id, p, 1, wrenn.FileOptions{})
	if err != nil {
		return err
	}
	if c.json {
		if entries == nil {
			entries = []wrenn.FileEntry{}
		}
		return c.printJSON(entries)
	}
	rows := make([][]string, 0, len(entries))
	for _, e := range entries {
		name := e.Name
		if e.SymlinkTarget != nil {
			name += " -> " + *e.SymlinkTarget
		}
		rows = append(rows, []string{e.Permissions, e.Owner, e.Group, strconv.FormatInt(e.Size, 10),
			e.ModifiedAt.Format("2006-01-02 15:04"), name})
	}
	return c.table([]string{"MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "NAME"}, rows)
}

var errNotTerminal = errors.New("not a terminal")
