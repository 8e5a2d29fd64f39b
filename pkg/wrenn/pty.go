package wrenn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"

	"github.com/coder/websocket"
)

// TerminalOptions describe a terminal to open. Zero values take the
// server's defaults (80 × 24, the login shell, the default user).
type TerminalOptions struct {
	Cols, Rows int
	// Cmd is a shell line to run instead of the login shell.
	Cmd  string
	Cwd  string
	User string
}

// Terminal is a process on a pseudo-terminal in a capsule, over the pty
// WebSocket. Read returns its output and io.EOF once it has ended; Write
// sends input. Read must be called from one goroutine; the other methods
// are safe for concurrent use.
type Terminal struct {
	PID uint32

	conn *websocket.Conn
	ctx  context.Context
	pr   *io.PipeReader
	wmu  sync.Mutex
	done chan struct{}
	exit *ExitStatus
}

// OpenTerminal starts a process on a new terminal. When the connection
// closes, the process is hung up (SIGHUP), as when a terminal window
// closes. The terminal lives until ctx ends or Close.
func (c *Client) OpenTerminal(ctx context.Context, capsuleID string, opts TerminalOptions) (*Terminal, error) {
	q := url.Values{}
	if opts.Cols > 0 {
		q.Set("cols", strconv.Itoa(opts.Cols))
	}
	if opts.Rows > 0 {
		q.Set("rows", strconv.Itoa(opts.Rows))
	}
	for k, v := range map[string]string{"cmd": opts.Cmd, "cwd": opts.Cwd, "user": opts.User} {
		if v != "" {
			q.Set(k, v)
		}
	}
	conn, err := c.dial(ctx, capsulePath(capsuleID, "/pty"), q)
	if err != nil {
		return nil, err
	}
	m, err := readMessage(ctx, conn)
	if err == nil && m.Type != "start" {
		err = messageError(m)
	}
	if err != nil {
		_ = conn.CloseNow()
		return nil, err
	}
	pr, pw := io.Pipe()
	t := &Terminal{PID: m.PID, conn: conn, ctx: ctx, pr: pr, done: make(chan struct{})}
	go t.read(pw)
	return t, nil
}

func (t *Terminal) read(pw *io.PipeWriter) {
	defer close(t.done)
	defer func() { _ = t.conn.CloseNow() }()
	for {
		typ, b, err := t.conn.Read(t.ctx)
		if err != nil {
			if websocket.CloseStatus(err) == websocket.StatusNormalClosure && t.exit != nil {
				err = nil
			}
			_ = pw.CloseWithError(err)
			return
		}
		if typ == websocket.MessageBinary {
			if _, err := pw.Write(b); err != nil {
				return // the reader closed
			}
			continue
		}
		var m wsMessage
		if json.Unmarshal(b, &m) != nil {
			continue
		}
		if m.Type == "exit" {
			t.exit = &ExitStatus{Signal: m.Signal, TimedOut: m.TimedOut}
			if m.ExitCode != nil {
				t.exit.ExitCode = *m.ExitCode
			}
			_ = pw.Close()
			_ = t.conn.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}

// Read reads the terminal's output.
func (t *Terminal) Read(p []byte) (int, error) { return t.pr.Read(p) }

// Write sends input to the terminal.
func (t *Terminal) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	for off := 0; off < len(p); {
		n := min(len(p)-off, maxStdinChunk)
		if err := t.conn.Write(t.ctx, websocket.MessageBinary, p[off:off+n]); err != nil {
			return off, fmt.Errorf("wrenn: writing to the terminal: %w", err)
		}
		off += n
	}
	return len(p), nil
}

func (t *Terminal) control(ctx context.Context, m wsMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.conn.Write(ctx, websocket.MessageText, b)
}

// Resize changes the terminal's size.
func (t *Terminal) Resize(ctx context.Context, cols, rows int) error {
	return t.control(ctx, wsMessage{Type: "resize", Cols: cols, Rows: rows})
}

// Signal sends a signal ("SIGINT", …) to the terminal's process.
func (t *Terminal) Signal(ctx context.Context, signal string) error {
	return t.control(ctx, wsMessage{Type: "signal", Signal: signal})
}

// Wait waits until the terminal's process has ended and the output has
// been read (or the connection failed) and returns how it ended.
func (t *Terminal) Wait() (*ExitStatus, error) {
	<-t.done
	if t.exit == nil {
		return nil, errors.New("wrenn: the terminal closed before its process ended")
	}
	return t.exit, nil
}

// Close closes the terminal; its process is hung up.
func (t *Terminal) Close() error {
	err := t.conn.Close(websocket.StatusNormalClosure, "")
	_ = t.pr.Close()
	<-t.done
	return err
}
