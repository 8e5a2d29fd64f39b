package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/store"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// This file holds the WebSocket side of processes: /exec/stream here, and
// the session both it and /pty (pty.go) run on.

// WebSocket limits.
const (
	// maxWSMessage bounds one client message (stdin, terminal input).
	maxWSMessage = 1 << 20
	// firstMessageTimeout is how long /exec/stream waits for the message
	// that says what to run.
	firstMessageTimeout = 30 * time.Second
	// wsWriteTimeout is how long a client may leave a message unread
	// before the connection is given up.
	wsWriteTimeout = time.Minute
	// wsPingEvery keeps idle connections open through proxies and finds
	// clients that vanished without closing.
	wsPingEvery = 30 * time.Second
	// hangupGrace is how long a terminal's process gets after SIGHUP,
	// when its client went away, before it is killed.
	hangupGrace = 2 * time.Second
)

// wsMessage is every JSON text message, both ways; fields are set by type.
type wsMessage struct {
	Type string `json:"type"`
	// stdout, stderr, stdin: the bytes (base64 in JSON).
	Data []byte `json:"data,omitempty"`
	// start
	PID uint32 `json:"pid,omitempty"`
	Tag string `json:"tag,omitempty"`
	// exit
	ExitCode *int32 `json:"exit_code,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	// signal (client), exit (server: the signal that ended the process)
	Signal string `json:"signal,omitempty"`
	// resize
	Cols uint32 `json:"cols,omitempty"`
	Rows uint32 `json:"rows,omitempty"`
	// dropped: output lost because the buffer overflowed
	Bytes uint64 `json:"bytes,omitempty"`
	// error
	Error *wsError `json:"error,omitempty"`
	// fatal marks an error after which the server closes the connection
	// (only the compatible dialect says so; see compat_ws.go).
	fatal bool
}

type wsError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// procStream is a Start or Connect stream of process events.
type procStream struct {
	receive func() bool
	event   func() *envdv1.ProcessEvent
	err     func() error
	close   func() error
}

func startStream(s *connect.ServerStreamForClient[envdv1.StartResponse]) procStream {
	return procStream{s.Receive, func() *envdv1.ProcessEvent { return s.Msg().GetEvent() }, s.Err, s.Close}
}

func connectStream(s *connect.ServerStreamForClient[envdv1.ConnectResponse]) procStream {
	return procStream{s.Receive, func() *envdv1.ProcessEvent { return s.Msg().GetEvent() }, s.Err, s.Close}
}

// awaitStart reads events up to the start event.
func (ps procStream) awaitStart() (*envdv1.StartEvent, error) {
	for ps.receive() {
		if st := ps.event().GetStart(); st != nil {
			return st, nil
		}
	}
	return nil, streamEnded(ps.err())
}

// checkUpgrade refuses a request to a WebSocket route that does not ask
// for a WebSocket, before anything is started in the capsule, in the
// API's error shape (websocket.Accept would answer 426 in plain text).
func checkUpgrade(r *http.Request) error {
	hasToken := func(header, token string) bool {
		for _, v := range r.Header.Values(header) {
			for t := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(t), token) {
					return true
				}
			}
		}
		return false
	}
	if !hasToken("Connection", "upgrade") || !hasToken("Upgrade", "websocket") {
		return errorf(codeInvalid, "%s is a WebSocket route: send a WebSocket upgrade request", r.URL.Path)
	}
	return nil
}

// startProcess starts req in ec's capsule and returns its event stream,
// read up to the start event, under ctx.
func startProcess(ctx context.Context, ec *envdclient.Client, req *envdv1.StartRequest) (procStream, *envdv1.StartEvent, error) {
	st, err := ec.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		return procStream{}, nil, err
	}
	ps := startStream(st)
	ev, err := ps.awaitStart()
	if err != nil {
		_ = ps.close()
		return procStream{}, nil, err
	}
	return ps, ev, nil
}

// connectProcess attaches to the process sel and returns its event stream,
// read up to the start event, under ctx.
func connectProcess(ctx context.Context, ec *envdclient.Client, sel *envdv1.ProcessSelector) (procStream, *envdv1.StartEvent, error) {
	st, err := ec.Process.Connect(ctx, connect.NewRequest(&envdv1.ConnectRequest{Process: sel}))
	if err != nil {
		return procStream{}, nil, err
	}
	ps := connectStream(st)
	start, err := ps.awaitStart()
	if err != nil {
		_ = ps.close()
		return procStream{}, nil, err
	}
	return ps, start, nil
}

// session is one WebSocket attached to one process.
type session struct {
	s    *server
	conn *websocket.Conn
	ec   *envdclient.Client
	c    store.Capsule
	pid  uint32
	// pty sends output as binary frames and takes binary frames as input.
	pty bool
	// timedOut is set when the process was killed for its timeout.
	timedOut atomic.Bool
	// finished is set once the connection is being closed because the
	// process ended or its stream failed.
	finished atomic.Bool
	// gone is set once the client is gone: output is no longer sent.
	gone atomic.Bool
	// dialect, when set, speaks the Wrenn Python SDK's message shapes
	// instead of this API's own (compat_ws.go).
	dialect *wsDialect
}

// send writes one JSON text message.
func (ss *session) send(ctx context.Context, m wsMessage) error {
	msgs := []any{m}
	if ss.dialect != nil {
		msgs = ss.dialect.out(m)
	}
	for _, v := range msgs {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
		err = ss.conn.Write(wctx, websocket.MessageText, b)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// sendError tells the client about a failed request without closing.
func (ss *session) sendError(ctx context.Context, err error) {
	e := ss.apiError(ctx, err)
	_ = ss.send(ctx, wsMessage{Type: "error", Error: &wsError{Code: e.Code, Message: e.Message}})
}

// apiError turns err into the *Error the client is told about.
func (ss *session) apiError(ctx context.Context, err error) *Error {
	var e *Error
	if !errors.As(ss.s.envdError(ctx, ss.c, processErrors, err), &e) {
		ss.s.log.ErrorContext(ctx, "process stream failed", "capsule_id", ss.c.ID, "err", err)
		e = errorf(codeInternal, "internal error; see the control plane log")
	}
	return e
}

// fail sends err as an error message and closes the connection with a
// status that says whose fault it was.
func (ss *session) fail(ctx context.Context, err error) {
	e := ss.apiError(ctx, err)
	_ = ss.send(ctx, wsMessage{Type: "error", Error: &wsError{Code: e.Code, Message: e.Message}, fatal: true})
	status := websocket.StatusPolicyViolation
	if statusOf[e.Code] >= 500 {
		status = websocket.StatusInternalError
	}
	_ = ss.conn.Close(status, e.Code)
}

// run forwards the process's output to the client and the client's input
// to the process until the process ends (then the client gets exit and a
// normal close) or the client goes away. With hangup, a client that goes
// away takes the process with it, as closing a terminal does: SIGHUP, and
// SIGKILL if it is still there after hangupGrace. Without it the process
// goes on and can be reattached. ps was opened under ctx and has been read
// up to the start event; cancel ends it.
func (ss *session) run(ctx context.Context, cancel context.CancelFunc, ps procStream, hangup bool) {
	defer func() { _ = ps.close() }()
	go ss.s.keepActive(ctx, ss.c)
	go ss.ping(ctx)
	ended := make(chan struct{}) // closed when the output pump returns
	go func() {
		defer close(ended)
		ss.pump(ctx, ps)
	}()
	ss.readInput(ctx)
	if !ss.finished.Load() {
		ss.gone.Store(true)
		if hangup {
			ss.s.signal(ss.ec, ss.pid, envdv1.Signal_SIGNAL_SIGHUP)
			select {
			case <-ended:
			case <-time.After(hangupGrace):
				ss.s.kill(ss.ec, ss.pid)
				select {
				case <-ended:
				case <-time.After(killGrace):
				}
			}
		}
		cancel()
	}
	<-ended
}

// pump forwards events until the end event, then sends exit and closes
// the connection. Once the client is gone it goes on reading (so that run
// sees the end of a hung-up process) without sending.
func (ss *session) pump(ctx context.Context, ps procStream) {
	for ps.receive() {
		ev := ps.event()
		if end := ev.GetEnd(); end != nil {
			ss.finished.Store(true)
			code := end.GetExitCode()
			_ = ss.send(ctx, wsMessage{Type: "exit", ExitCode: &code, Signal: end.GetSignal(), TimedOut: ss.timedOut.Load()})
			_ = ss.conn.Close(websocket.StatusNormalClosure, "")
			return
		}
		if ss.gone.Load() {
			continue
		}
		var err error
		switch {
		case ev.GetData() != nil:
			d := ev.GetData()
			switch {
			case ss.pty && ss.dialect != nil:
				err = ss.send(ctx, wsMessage{Type: "stdout", Data: d.GetPty()})
			case ss.pty:
				wctx, cancel := context.WithTimeout(ctx, wsWriteTimeout)
				err = ss.conn.Write(wctx, websocket.MessageBinary, d.GetPty())
				cancel()
			case d.GetStderr() != nil:
				err = ss.send(ctx, wsMessage{Type: "stderr", Data: d.GetStderr()})
			default:
				out := d.GetStdout()
				if out == nil {
					out = d.GetPty()
				}
				err = ss.send(ctx, wsMessage{Type: "stdout", Data: out})
			}
		case ev.GetDropped() != nil:
			err = ss.send(ctx, wsMessage{Type: "dropped", Bytes: ev.GetDropped().GetBytes()})
		}
		if err != nil {
			ss.gone.Store(true)
			_ = ss.conn.CloseNow()
		}
	}
	if ctx.Err() == nil {
		// envd or the agent went away mid-stream.
		ss.finished.Store(true)
		ss.fail(ctx, streamEnded(ps.err()))
	}
}

// readInput handles client messages until the connection fails or closes.
func (ss *session) readInput(ctx context.Context) {
	for {
		typ, b, err := ss.conn.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			if !ss.pty {
				ss.sendError(ctx, errorf(codeInvalid, "send JSON text messages; binary input is for /pty"))
				continue
			}
			ss.input(ctx, &envdv1.SendInputRequest{Process: pidSelector(ss.pid), Data: b})
			continue
		}
		var m wsMessage
		if ss.dialect != nil {
			if m, err = ss.dialect.in(b); err != nil {
				ss.sendError(ctx, err)
				continue
			}
		} else {
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				ss.sendError(ctx, decodeError(err, maxWSMessage))
				continue
			}
		}
		ss.control(ctx, m)
	}
}

// control carries out one client message.
func (ss *session) control(ctx context.Context, m wsMessage) {
	sel := pidSelector(ss.pid)
	var err error
	rctx, cancel := context.WithTimeout(ctx, envdCallTimeout)
	defer cancel()
	switch m.Type {
	case "noop": // a keepalive of the compatible dialect
		return
	case "stdin":
		if ss.pty && ss.dialect == nil {
			err = errorf(codeInvalid, "send terminal input as binary messages")
			break
		}
		ss.input(ctx, &envdv1.SendInputRequest{Process: sel, Data: m.Data})
		return
	case "close_stdin":
		_, err = ss.ec.Process.CloseStdin(rctx, connect.NewRequest(&envdv1.CloseStdinRequest{Process: sel}))
	case "signal":
		var sig envdv1.Signal
		if sig, err = parseSignal(m.Signal); err == nil {
			_, err = ss.ec.Process.SendSignal(rctx, connect.NewRequest(&envdv1.SendSignalRequest{Process: sel, Signal: sig}))
		}
	case "resize":
		if !ss.pty {
			err = errorf(codeInvalid, "resize applies to /pty only")
			break
		}
		if err = checkPTYSize(m.Cols, m.Rows); err == nil {
			_, err = ss.ec.Process.Update(rctx, connect.NewRequest(&envdv1.UpdateRequest{
				Process: sel, Pty: &envdv1.Pty{Cols: m.Cols, Rows: m.Rows},
			}))
		}
	default:
		err = errorf(codeInvalid, "unknown message type %q", m.Type)
	}
	if err != nil {
		ss.sendError(ctx, err)
	}
}

// input writes bytes to the process's stdin or terminal.
func (ss *session) input(ctx context.Context, req *envdv1.SendInputRequest) {
	if len(req.Data) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, envdCallTimeout)
	defer cancel()
	if _, err := ss.ec.Process.SendInput(rctx, connect.NewRequest(req)); err != nil {
		ss.sendError(ctx, err)
	}
}

// ping pings the client every wsPingEvery; a client that does not answer
// in time is cut off.
func (ss *session) ping(ctx context.Context) {
	t := time.NewTicker(wsPingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, wsPingEvery)
			err := ss.conn.Ping(pctx)
			cancel()
			if err != nil {
				_ = ss.conn.CloseNow()
				return
			}
		}
	}
}

// killAfter kills the session's process after d and marks it timed out.
func (ss *session) killAfter(d time.Duration) *time.Timer {
	return time.AfterFunc(d, func() {
		ss.timedOut.Store(true)
		ss.s.kill(ss.ec, ss.pid)
	})
}

func (s *server) handleExecStream() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		sel, err := attachSelector(r)
		if err != nil {
			return err
		}
		return s.execStream(w, r, sel, nil)
	})
}

// execStream serves /exec/stream in dialect d (nil: this API's own):
// attached to the process sel, or, when sel is nil, to one started from
// the client's first message.
func (s *server) execStream(w http.ResponseWriter, r *http.Request, sel *envdv1.ProcessSelector, d *wsDialect) error {
	c, ec, err := s.runningEnvd(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if sel != nil {
		return s.attach(ctx, cancel, w, r, c, ec, sel, d)
	}
	if err := checkUpgrade(r); err != nil {
		return err
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil // Accept has answered
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(maxWSMessage)
	ss := &session{s: s, conn: conn, ec: ec, c: c, dialect: d}
	read := readSpec
	if d != nil {
		read = d.readSpec
	}
	spec, err := read(ctx, conn)
	if err != nil {
		ss.fail(ctx, err)
		return nil
	}
	cfg, err := spec.config()
	if err != nil {
		ss.fail(ctx, err)
		return nil
	}
	timeout, err := spec.timeout(0)
	if err != nil {
		ss.fail(ctx, err)
		return nil
	}
	if err := s.startUse(ctx, c); err != nil {
		ss.fail(ctx, err)
		return nil
	}
	ps, start, err := startProcess(ctx, ec, &envdv1.StartRequest{Process: cfg, Tag: spec.Tag, Stdin: true})
	if err != nil {
		// As for POST /exec: not_found is the program or cwd.
		ss.fail(ctx, s.envdError(ctx, c, execErrors, err))
		return nil
	}
	meta := execMeta(spec, "stream")
	meta["pid"] = start.GetPid()
	s.used(r, c, "capsule.exec", meta)
	ss.pid = start.GetPid()
	if timeout > 0 {
		defer ss.killAfter(timeout).Stop()
	}
	if ss.send(ctx, wsMessage{Type: "start", PID: start.GetPid(), Tag: start.GetTag()}) != nil {
		return nil
	}
	// A process started here outlives a lost connection, like a
	// background exec: the client reattaches with ?pid= or ?tag=.
	ss.run(ctx, cancel, ps, false)
	return nil
}

// attach connects to an existing process (?pid= or ?tag=). The process is
// looked up before the upgrade, so an unknown one is a plain 404.
func (s *server) attach(ctx context.Context, cancel context.CancelFunc, w http.ResponseWriter, r *http.Request,
	c store.Capsule, ec *envdclient.Client, sel *envdv1.ProcessSelector, d *wsDialect) error {
	if err := s.startUse(r.Context(), c); err != nil {
		return err
	}
	ps, start, err := connectProcess(ctx, ec, sel)
	if err != nil {
		return s.envdError(r.Context(), c, processErrors, err)
	}
	if err := checkUpgrade(r); err != nil {
		_ = ps.close()
		return err
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		_ = ps.close()
		return nil
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(maxWSMessage)
	s.used(r, c, "", nil)
	ss := &session{s: s, conn: conn, ec: ec, c: c, pid: start.GetPid(), dialect: d}
	if ss.send(ctx, wsMessage{Type: "start", PID: start.GetPid(), Tag: start.GetTag()}) != nil {
		_ = ps.close()
		return nil
	}
	ss.run(ctx, cancel, ps, false)
	return nil
}

// attachSelector reads ?pid= or ?tag=; nil means neither (start a process).
func attachSelector(r *http.Request) (*envdv1.ProcessSelector, error) {
	q := r.URL.Query()
	switch {
	case q.Has("pid") && q.Has("tag"):
		return nil, errorf(codeInvalid, "give pid or tag, not both")
	case q.Has("pid"):
		pid, err := strconv.ParseUint(q.Get("pid"), 10, 32)
		if err != nil || pid == 0 {
			return nil, errorf(codeInvalid, "pid must be a positive integer, not %q", q.Get("pid"))
		}
		return pidSelector(uint32(pid)), nil
	case q.Has("tag"):
		tag := q.Get("tag")
		if tag == "" {
			return nil, errorf(codeInvalid, "tag must not be empty")
		}
		if err := checkText("tag", tag, maxTagLen); err != nil {
			return nil, err
		}
		return &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Tag{Tag: tag}}, nil
	}
	return nil, nil
}

// readSpec reads the first message of /exec/stream: what to run.
func readSpec(ctx context.Context, conn *websocket.Conn) (processSpec, error) {
	var spec processSpec
	b, err := firstMessage(ctx, conn)
	if err != nil {
		return spec, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, decodeError(err, maxWSMessage)
	}
	return spec, nil
}

// firstMessage reads the client's first message, which must be JSON text
// saying what to run, within firstMessageTimeout.
func firstMessage(ctx context.Context, conn *websocket.Conn) ([]byte, error) {
	rctx, cancel := context.WithTimeout(ctx, firstMessageTimeout)
	defer cancel()
	typ, b, err := conn.Read(rctx)
	if err != nil {
		return nil, errorf(codeInvalid, "no message saying what to run within %s", firstMessageTimeout)
	}
	if typ != websocket.MessageText {
		return nil, errorf(codeInvalid, "the first message must be a JSON text message saying what to run")
	}
	return b, nil
}
