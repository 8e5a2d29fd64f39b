package gvisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Files of a capsule's console.
const (
	consoleFIFO = "console.fifo"  // the sandbox's stdout/stderr
	consoleOld  = "console.log.1" // the half of the log rotated away
)

// DefaultConsoleBytes bounds a capsule's console log on the host when
// Config.ConsoleBytes is 0.
const DefaultConsoleBytes = 4 << 20

// consolePipeBytes is the pipe buffer asked for the console FIFO: what a
// capsule can write while no agent drains it before its writes block.
const consolePipeBytes = 1 << 20

// openConsole creates the capsule's console FIFO in dir and opens it for
// reading and writing: the sandbox inherits that end, so it always holds a
// reader of its own and its writes never fail with EPIPE, whether or not an
// agent drains the FIFO. While nobody drains it, its writes block once the
// pipe buffer is full: a capsule can stall only itself, never fill the disk.
func openConsole(dir string) (*os.File, error) {
	path := filepath.Join(dir, consoleFIFO)
	if err := syscall.Mkfifo(path, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("creating console fifo: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening console fifo: %w", err)
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		_ = f.Close()
		return nil, fmt.Errorf("console fifo %s is not a fifo", path)
	}
	// Best effort: a smaller buffer only makes writers block sooner.
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, consolePipeBytes)
	return f, nil
}

// drainer copies one capsule's console FIFO into console.log, rotating it
// to console.log.1 whenever it reaches half the bound, so the two files
// together never exceed it.
type drainer struct {
	done chan struct{}
	stop func()
}

// drain starts draining the console FIFO of the capsule in dir, unless a
// drainer for id runs already. It returns once the FIFO is open.
func (d *Driver) drain(id, dir string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dr, ok := d.drainers[id]; ok {
		select {
		case <-dr.done:
		default:
			return nil
		}
	}
	// Non-blocking, so that the open does not wait for a writer; reads go
	// through Go's poller. Once every writer (the sandbox) is gone, a read
	// answers EOF and the drainer ends.
	fifo, err := os.OpenFile(filepath.Join(dir, consoleFIFO), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("opening console fifo: %w", err)
	}
	if st, err := fifo.Stat(); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		_ = fifo.Close()
		return fmt.Errorf("console fifo of %s is not a fifo", id)
	}
	dr := &drainer{done: make(chan struct{})}
	var once sync.Once
	dr.stop = func() { once.Do(func() { _ = fifo.Close() }) }
	d.drainers[id] = dr
	go func() {
		defer close(dr.done)
		defer dr.stop()
		if err := copyBounded(fifo, dir, d.consoleBytes()); err != nil {
			d.log.Warn("console log of a capsule", "capsule_id", id, "err", err)
		}
	}()
	return nil
}

// stopDrain stops the drainer of id, if any, and waits for it.
func (d *Driver) stopDrain(id string) {
	d.mu.Lock()
	dr, ok := d.drainers[id]
	delete(d.drainers, id)
	d.mu.Unlock()
	if ok {
		dr.stop()
		<-dr.done
	}
}

// drainerDone is closed once the drainer of id has read everything its
// sandbox wrote and the sandbox is gone.
func (d *Driver) drainerDone(id string) <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dr, ok := d.drainers[id]; ok {
		return dr.done
	}
	c := make(chan struct{})
	close(c)
	return c
}

func (d *Driver) consoleBytes() int64 {
	if d.cfg.ConsoleBytes > 0 {
		return d.cfg.ConsoleBytes
	}
	return DefaultConsoleBytes
}

// copyBounded copies r into dir's console.log until EOF, keeping
// console.log and console.log.1 each at most max/2 bytes.
func copyBounded(r io.Reader, dir string, max int64) error {
	half := max / 2
	if half < 1 {
		half = 1
	}
	path := filepath.Join(dir, consoleFile)
	open := func() (*os.File, int64, error) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, 0, err
		}
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, 0, err
		}
		return f, st.Size(), nil
	}
	out, size, err := open()
	if err != nil {
		return err
	}
	defer func() { _ = out.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, rerr := r.Read(buf)
		for p := buf[:n]; len(p) > 0; {
			if size >= half {
				_ = out.Close()
				if err := os.Rename(path, filepath.Join(dir, consoleOld)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("rotating console log: %w", err)
				}
				if out, size, err = open(); err != nil {
					return err
				}
			}
			k := int64(len(p))
			if k > half-size {
				k = half - size
			}
			if _, err := out.Write(p[:k]); err != nil {
				// The capsule's directory is gone (destroyed) or the
				// host disk is full: keep draining, so the capsule
				// does not block, but drop what it writes.
				_, _ = io.Copy(io.Discard, r)
				return fmt.Errorf("writing console log: %w", err)
			}
			size += k
			p = p[k:]
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, os.ErrClosed) {
				return nil
			}
			return rerr
		}
	}
}
