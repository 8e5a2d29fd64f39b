package wrenn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/coder/websocket"
)

// Command is what to run in a capsule. Without Args, Cmd is a shell line
// (/bin/sh -c Cmd); with Args (even empty, non-nil), Cmd is the program
// and nothing goes through a shell.
type Command struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
	// TimeoutSec bounds a foreground command (default 60, at most 3600);
	// for a stream it applies only if set. Background commands have none.
	TimeoutSec int               `json:"timeout_sec,omitempty"`
	Envs       map[string]string `json:"envs,omitempty"`
	Cwd        string            `json:"cwd,omitempty"`
	User       string            `json:"user,omitempty"`
	// Tag names the process, unique among the capsule's running ones.
	Tag string `json:"tag,omitempty"`
}

// commandBody is a Command as the API takes it: Args as a pointer keeps
// args: [] (a program without arguments) apart from no args (a shell line).
type commandBody struct {
	Cmd        string            `json:"cmd"`
	Args       *[]string         `json:"args,omitempty"`
	TimeoutSec int               `json:"timeout_sec,omitempty"`
	Envs       map[string]string `json:"envs,omitempty"`
	Cwd        string            `json:"cwd,omitempty"`
	User       string            `json:"user,omitempty"`
	Tag        string            `json:"tag,omitempty"`
	Background bool              `json:"background,omitempty"`
}

func (cmd Command) body(background bool) commandBody {
	b := commandBody{Cmd: cmd.Cmd, TimeoutSec: cmd.TimeoutSec, Envs: cmd.Envs, Cwd: cmd.Cwd,
		User: cmd.User, Tag: cmd.Tag, Background: background}
	if cmd.Args != nil {
		b.Args = &cmd.Args
	}
	return b
}

// ExecResult is the outcome of a foreground command.
type ExecResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
	// Signal is set (with ExitCode -1) when a signal ended the process.
	Signal     string `json:"signal,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	// Truncated says output beyond 16 MiB a stream was dropped.
	Truncated bool `json:"truncated"`
	// TimedOut says the process was killed at its timeout.
	TimedOut bool `json:"timed_out"`
}

// Exec runs a command and waits for it to end. A command that exits
// non-zero is not an error: see ExecResult.ExitCode.
func (c *Client) Exec(ctx context.Context, capsuleID string, cmd Command) (*ExecResult, error) {
	var out ExecResult
	err := c.call(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/exec"), json: cmd.body(false)}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Background is a process started in the background.
type Background struct {
	PID uint32  `json:"pid"`
	Tag *string `json:"tag"`
}

// ExecBackground starts a command that runs on its own (stdin /dev/null,
// no timeout) and answers at once. Read its output with Attach.
func (c *Client) ExecBackground(ctx context.Context, capsuleID string, cmd Command) (*Background, error) {
	var out Background
	err := c.call(ctx, request{method: http.MethodPost, path: capsulePath(capsuleID, "/exec"), json: cmd.body(true)}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// ProcessInfo is a process that runs or ended lately in a capsule.
type ProcessInfo struct {
	PID      uint32   `json:"pid"`
	Tag      *string  `json:"tag"`
	Cmd      string   `json:"cmd"`
	Args     []string `json:"args"`
	PTY      bool     `json:"pty"`
	Running  bool     `json:"running"`
	ExitCode *int     `json:"exit_code"`
	Signal   *string  `json:"signal"`
}

// ListProcesses lists a capsule's processes.
func (c *Client) ListProcesses(ctx context.Context, capsuleID string) ([]ProcessInfo, error) {
	var out []ProcessInfo
	if err := c.call(ctx, request{method: http.MethodGet, path: capsulePath(capsuleID, "/processes")}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// KillProcess sends signal (default SIGKILL when empty; e.g. "SIGTERM") to
// a process's group; it does not wait for the process to end.
func (c *Client) KillProcess(ctx context.Context, capsuleID string, pid uint32, signal string) error {
	q := url.Values{}
	if signal != "" {
		q.Set("signal", signal)
	}
	path := capsulePath(capsuleID, "/processes/"+strconv.FormatUint(uint64(pid), 10))
	return c.call(ctx, request{method: http.MethodDelete, path: path, query: q}, nil)
}

// StreamHandlers receive a streamed process's events, in order, from one
// goroutine. Any may be nil. The byte slices are not reused.
type StreamHandlers struct {
	OnStdout func([]byte)
	OnStderr func([]byte)
	// OnDropped reports output lost before the next event (the server's
	// buffer overflowed before an attach).
	OnDropped func(bytes uint64)
	// OnError reports a failed client message (stdin to an ended
	// process, say); the stream goes on.
	OnError func(*Error)
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	ExitCode int `json:"exit_code"`
	// Signal is set when a signal ended it (ExitCode is then -1).
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

// Process is a process attached over the exec stream WebSocket. Its
// methods are safe for concurrent use.
type Process struct {
	PID uint32
	Tag string

	conn *websocket.Conn
	ctx  context.Context
	// wmu serialises writes to conn.
	wmu  sync.Mutex
	done chan struct{}
	// exit and err are set before done is closed.
	exit *ExitStatus
	err  error
}

// wsMessage is a JSON message of the exec stream, both ways.
type wsMessage struct {
	Type     string `json:"type"`
	Data     []byte `json:"data,omitempty"`
	PID      uint32 `json:"pid,omitempty"`
	Tag      string `json:"tag,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Signal   string `json:"signal,omitempty"`
	Cols     int    `json:"cols,omitempty"`
	Rows     int    `json:"rows,omitempty"`
	Bytes    uint64 `json:"bytes,omitempty"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// wsReadLimit bounds one server message (base64 output chunks).
const wsReadLimit = 32 << 20

// dial opens a WebSocket to path with the API key.
func (c *Client) dial(ctx context.Context, path string, q url.Values) (*websocket.Conn, error) {
	h := http.Header{}
	h.Set("X-API-Key", c.apiKey)
	conn, res, err := websocket.Dial(ctx, c.url(path, q), &websocket.DialOptions{HTTPClient: c.hc, HTTPHeader: h})
	if err != nil {
		if res != nil && res.StatusCode != http.StatusSwitchingProtocols && res.Body != nil {
			return nil, decodeError(res) // closes the body
		}
		return nil, fmt.Errorf("wrenn: opening %s: %w", path, err)
	}
	if res != nil && res.Body != nil {
		_ = res.Body.Close() // the connection is conn's now
	}
	conn.SetReadLimit(wsReadLimit)
	return conn, nil
}

// Stream starts a command with an open stdin and streams its output to h.
// It answers once the process runs; Wait for its end. The stream lives
// until ctx ends or Close: closing it does not stop the process (Attach
// again, or KillProcess).
func (c *Client) Stream(ctx context.Context, capsuleID string, cmd Command, h StreamHandlers) (*Process, error) {
	conn, err := c.dial(ctx, capsulePath(capsuleID, "/exec/stream"), nil)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(cmd.body(false))
	if err != nil {
		_ = conn.CloseNow()
		return nil, err
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		_ = conn.CloseNow()
		return nil, fmt.Errorf("wrenn: sending the command: %w", err)
	}
	return startProcess(ctx, conn, h)
}

// Attach attaches to a running or recently ended process by pid (or, when
// tag is not empty, by tag): its buffered output is replayed from the start
// and then streamed live. An unknown process is ErrNotFound
// (process_not_found).
func (c *Client) Attach(ctx context.Context, capsuleID string, pid uint32, tag string, h StreamHandlers) (*Process, error) {
	q := url.Values{}
	if tag != "" {
		q.Set("tag", tag)
	} else {
		q.Set("pid", strconv.FormatUint(uint64(pid), 10))
	}
	conn, err := c.dial(ctx, capsulePath(capsuleID, "/exec/stream"), q)
	if err != nil {
		return nil, err
	}
	return startProcess(ctx, conn, h)
}

// startProcess reads up to the start message, then hands the rest of the
// stream to a goroutine calling h.
func startProcess(ctx context.Context, conn *websocket.Conn, h StreamHandlers) (*Process, error) {
	p := &Process{conn: conn, ctx: ctx, done: make(chan struct{})}
	for {
		m, err := readMessage(ctx, conn)
		if err != nil {
			_ = conn.CloseNow()
			return nil, err
		}
		switch m.Type {
		case "start":
			p.PID, p.Tag = m.PID, m.Tag
			go p.read(h)
			return p, nil
		case "error":
			_ = conn.CloseNow()
			return nil, messageError(m)
		}
	}
}

func messageError(m wsMessage) *Error {
	e := &Error{Code: "stream_error"}
	if m.Error != nil {
		e.Code, e.Message = m.Error.Code, m.Error.Message
	}
	return e
}

func readMessage(ctx context.Context, conn *websocket.Conn) (wsMessage, error) {
	var m wsMessage
	typ, b, err := conn.Read(ctx)
	if err != nil {
		return m, fmt.Errorf("wrenn: reading the stream: %w", err)
	}
	if typ != websocket.MessageText {
		return m, errors.New("wrenn: the stream sent a binary message")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("wrenn: decoding a stream message: %w", err)
	}
	return m, nil
}

func (p *Process) read(h StreamHandlers) {
	defer close(p.done)
	defer func() { _ = p.conn.CloseNow() }()
	for {
		m, err := readMessage(p.ctx, p.conn)
		if err != nil {
			p.err = err
			return
		}
		switch m.Type {
		case "stdout":
			if h.OnStdout != nil {
				h.OnStdout(m.Data)
			}
		case "stderr":
			if h.OnStderr != nil {
				h.OnStderr(m.Data)
			}
		case "dropped":
			if h.OnDropped != nil {
				h.OnDropped(m.Bytes)
			}
		case "error":
			if h.OnError != nil {
				h.OnError(messageError(m))
			}
		case "exit":
			p.exit = &ExitStatus{Signal: m.Signal, TimedOut: m.TimedOut}
			if m.ExitCode != nil {
				p.exit.ExitCode = *m.ExitCode
			}
			_ = p.conn.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}

// Wait waits for the process to end (or the stream to fail) and returns
// how it ended. Every handler call has returned by then.
func (p *Process) Wait() (*ExitStatus, error) {
	<-p.done
	if p.exit != nil {
		return p.exit, nil
	}
	return nil, p.err
}

func (p *Process) send(ctx context.Context, m wsMessage) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("wrenn: writing to the stream: %w", err)
	}
	return nil
}

// maxStdinChunk keeps stdin messages under the server's 1 MiB limit
// (base64 grows them by a third).
const maxStdinChunk = 512 << 10

// SendStdin writes data to the process's stdin.
func (p *Process) SendStdin(ctx context.Context, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), maxStdinChunk)
		if err := p.send(ctx, wsMessage{Type: "stdin", Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// CloseStdin ends the process's input.
func (p *Process) CloseStdin(ctx context.Context) error {
	return p.send(ctx, wsMessage{Type: "close_stdin"})
}

// Signal sends a signal ("SIGINT", "SIGTERM", …) to the process.
func (p *Process) Signal(ctx context.Context, signal string) error {
	return p.send(ctx, wsMessage{Type: "signal", Signal: signal})
}

// Close detaches from the process, which goes on running.
func (p *Process) Close() error {
	err := p.conn.Close(websocket.StatusNormalClosure, "")
	<-p.done
	return err
}
