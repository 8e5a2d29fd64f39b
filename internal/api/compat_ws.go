package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// This file holds the WebSocket side of the compatible API (compat.go):
// the message shapes the Wrenn Python SDK sends and parses, spoken on the
// same sessions as this API's own (stream.go).
//
// Exec streams (/exec/stream, /processes/{selector}/stream):
//
//	client: {"type":"start","cmd":"...","args":[...]} first, then {"type":"stop"}
//	server: {"type":"start","pid":N}, {"type":"stdout","data":"<text>"},
//	        {"type":"stderr","data":"<text>"}, {"type":"exit","exit_code":N},
//	        {"type":"error","data":"<message>","code":"<code>"}
//
// Output is text: UTF-8 characters cut between chunks are held back until
// they are whole, and bytes that are not UTF-8 become U+FFFD.
//
// Terminals (/pty):
//
//	client: {"type":"start","cmd":"/bin/bash","args":[],"cols":80,"rows":24,"envs":{},"cwd":"..."}
//	        or {"type":"connect","tag":"pty-..."} first; then
//	        {"type":"input","data":"<base64>"}, {"type":"resize","cols":N,"rows":N}, {"type":"kill"}
//	server: {"type":"started","tag":"pty-...","pid":N}, {"type":"output","data":"<base64>"},
//	        {"type":"exit","exit_code":N}, {"type":"error","data":"...","fatal":true}
//
// A terminal outlives its connection there: the client reconnects with
// its tag.

// wsDialect translates a session's messages to and from the SDK's shapes.
type wsDialect struct {
	pty bool
	mu  sync.Mutex
	// pending holds the start of a character cut at the end of the last
	// stdout (0) or stderr (1) chunk.
	pending [2][]byte
}

// compatMessage is every message of the dialect, both ways.
type compatMessage struct {
	Type     string  `json:"type"`
	PID      uint32  `json:"pid,omitempty"`
	Tag      string  `json:"tag,omitempty"`
	Data     *string `json:"data,omitempty"`
	ExitCode *int32  `json:"exit_code,omitempty"`
	Signal   string  `json:"signal,omitempty"`
	TimedOut bool    `json:"timed_out,omitempty"`
	Code     string  `json:"code,omitempty"`
	Fatal    *bool   `json:"fatal,omitempty"`
	Cols     uint32  `json:"cols,omitempty"`
	Rows     uint32  `json:"rows,omitempty"`
}

// out returns what the client is sent for m, in order; none for what the
// SDK has no message for (dropped output).
func (d *wsDialect) out(m wsMessage) []any {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch m.Type {
	case "start":
		if d.pty {
			return []any{compatMessage{Type: "started", PID: m.PID, Tag: m.Tag}}
		}
		return []any{compatMessage{Type: "start", PID: m.PID, Tag: m.Tag}}
	case "stdout", "stderr":
		if d.pty {
			data := base64.StdEncoding.EncodeToString(m.Data)
			return []any{compatMessage{Type: "output", Data: &data}}
		}
		if text := d.text(m.Type, m.Data, false); text != "" {
			return []any{compatMessage{Type: m.Type, Data: &text}}
		}
		return nil
	case "exit":
		var out []any
		for _, typ := range []string{"stdout", "stderr"} {
			if text := d.text(typ, nil, true); text != "" {
				out = append(out, compatMessage{Type: typ, Data: &text})
			}
		}
		return append(out, compatMessage{Type: "exit", ExitCode: m.ExitCode, Signal: m.Signal, TimedOut: m.TimedOut})
	case "error":
		msg := compatMessage{Type: "error", Data: &m.Error.Message, Code: compatCode(m.Error.Code)}
		if d.pty {
			msg.Fatal = &m.fatal
		}
		return []any{msg}
	}
	return nil
}

// text returns the whole characters of stream typ's output so far; with
// final, also what is left of a cut one.
func (d *wsDialect) text(typ string, b []byte, final bool) string {
	i := 0
	if typ == "stderr" {
		i = 1
	}
	buf := append(d.pending[i], b...)
	whole := buf
	if !final {
		whole = trimPartialRune(buf)
	}
	d.pending[i] = bytes.Clone(buf[len(whole):])
	return strings.ToValidUTF8(string(whole), "\uFFFD")
}

// in reads a client message after the first as this API's own.
func (d *wsDialect) in(b []byte) (wsMessage, error) {
	var m compatMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return wsMessage{}, decodeError(err, maxWSMessage)
	}
	kill := wsMessage{Type: "signal", Signal: "SIGKILL"}
	switch {
	case m.Type == "ping" || m.Type == "pong":
		return wsMessage{Type: "noop"}, nil
	case d.pty && m.Type == "input":
		if m.Data == nil {
			return wsMessage{}, errorf(codeInvalid, "input needs data: the bytes, base64-encoded")
		}
		data, err := base64.StdEncoding.DecodeString(*m.Data)
		if err != nil {
			return wsMessage{}, errorf(codeInvalid, "input data must be base64: %v", err)
		}
		return wsMessage{Type: "stdin", Data: data}, nil
	case d.pty && m.Type == "resize":
		return wsMessage{Type: "resize", Cols: m.Cols, Rows: m.Rows}, nil
	case d.pty && m.Type == "kill", !d.pty && m.Type == "stop":
		return kill, nil
	case m.Type == "signal":
		return wsMessage{Type: "signal", Signal: m.Signal}, nil
	}
	if d.pty {
		return wsMessage{}, errorf(codeInvalid, "unknown message type %q; send input, resize or kill", m.Type)
	}
	return wsMessage{}, errorf(codeInvalid, "unknown message type %q; send stop", m.Type)
}

// readSpec reads an exec stream's first message: {"type":"start", ...}.
func (d *wsDialect) readSpec(ctx context.Context, conn *websocket.Conn) (processSpec, error) {
	var first struct {
		Type string `json:"type"`
		processSpec
	}
	b, err := firstMessage(ctx, conn)
	if err != nil {
		return processSpec{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&first); err != nil {
		return processSpec{}, decodeError(err, maxWSMessage)
	}
	if first.Type != "start" {
		return processSpec{}, errorf(codeInvalid, "the first message must be {\"type\":\"start\",\"cmd\":...}, not type %q", first.Type)
	}
	return first.processSpec, nil
}

func (s *server) compatExecStream() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return s.execStream(w, r, nil, &wsDialect{})
	})
}

func (s *server) compatProcessStream() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		sel, err := processSelector(r)
		if err != nil {
			return err
		}
		return s.execStream(w, r, sel, &wsDialect{})
	})
}

// randomTag returns prefix and 8 random hex digits.
func randomTag(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func (s *server) compatPTY() http.Handler {
	type first struct {
		Type string            `json:"type"`
		Cmd  string            `json:"cmd"`
		Args []string          `json:"args"`
		Cols uint32            `json:"cols"`
		Rows uint32            `json:"rows"`
		Envs map[string]string `json:"envs"`
		Cwd  string            `json:"cwd"`
		User string            `json:"user"`
		Tag  string            `json:"tag"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		if err := checkUpgrade(r); err != nil {
			return err
		}
		ec, err := s.capsuleEnvd(r.Context(), c)
		if err != nil {
			return err
		}
		if err := s.startUse(r.Context(), c); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return nil // Accept has answered
		}
		defer func() { _ = conn.CloseNow() }()
		conn.SetReadLimit(maxWSMessage)
		ss := &session{s: s, conn: conn, ec: ec, c: c, pty: true, dialect: &wsDialect{pty: true}}
		b, err := firstMessage(ctx, conn)
		if err != nil {
			ss.fail(ctx, err)
			return nil
		}
		var m first
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			ss.fail(ctx, decodeError(err, maxWSMessage))
			return nil
		}
		var (
			ps    procStream
			start *envdv1.StartEvent
			tag   string
		)
		switch m.Type {
		case "start":
			spec := processSpec{Cmd: m.Cmd, Args: m.Args, Envs: m.Envs, Cwd: m.Cwd, User: m.User}
			if spec.Cmd == "" {
				spec.Cmd = "/bin/bash"
			}
			if spec.Args == nil {
				spec.Args = []string{} // cmd is a program here, not a shell line
			}
			cols, rows := orDefault(m.Cols, defaultPTYCols), orDefault(m.Rows, defaultPTYRows)
			if err := checkPTYSize(cols, rows); err != nil {
				ss.fail(ctx, err)
				return nil
			}
			cfg, err := spec.config()
			if err != nil {
				ss.fail(ctx, err)
				return nil
			}
			tag = randomTag("pty-")
			// envd hangs up a terminal when the stream that started it
			// ends; here the terminal must outlive the connection, so that
			// stream is held, detached from the request, until the
			// terminal ends (or the capsule goes away), and the client is
			// served by a Connect stream like a reconnecting one.
			held, hs, err := startProcess(context.WithoutCancel(ctx), ec, &envdv1.StartRequest{
				Process: cfg, Tag: tag, Pty: &envdv1.Pty{Cols: cols, Rows: rows},
			})
			if err == nil {
				go hold(held)
				ps, start, err = connectProcess(ctx, ec, pidSelector(hs.GetPid()))
			}
			if err != nil {
				ss.fail(ctx, s.envdError(ctx, c, execErrors, err))
				return nil
			}
			meta := execMeta(spec, "pty")
			meta["pid"] = start.GetPid()
			s.used(r, c, "capsule.exec", meta)
		case "connect":
			if m.Tag == "" || checkText("tag", m.Tag, maxTagLen) != nil {
				ss.fail(ctx, errorf(codeInvalid, "connect needs the tag of a terminal"))
				return nil
			}
			ps, start, err = connectProcess(ctx, ec, &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Tag{Tag: m.Tag}})
			if err != nil {
				ss.fail(ctx, err)
				return nil
			}
			tag = m.Tag
			s.used(r, c, "", nil)
		default:
			ss.fail(ctx, errorf(codeInvalid, "the first message must be of type start or connect, not %q", m.Type))
			return nil
		}
		ss.pid = start.GetPid()
		if ss.send(ctx, wsMessage{Type: "start", PID: start.GetPid(), Tag: tag}) != nil {
			_ = ps.close()
			return nil
		}
		// The terminal outlives the connection: the client reconnects with
		// its tag, or kills it.
		ss.run(ctx, cancel, ps, false)
		return nil
	})
}

// orDefault returns v, or def when v is zero.
func orDefault(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

// hold reads a terminal's start stream to its end, which keeps envd from
// hanging the terminal up.
func hold(ps procStream) {
	defer func() { _ = ps.close() }()
	for ps.receive() {
	}
}
