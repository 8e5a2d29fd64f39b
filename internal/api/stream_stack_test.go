package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

func TestExecStreamStack(t *testing.T) {
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)

	t.Run("stdin", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		sendJSON(t, ctx, conn, map[string]any{"cmd": "cat"})
		if m := readMsg(t, ctx, conn); m.Type != "start" || m.PID == 0 {
			t.Fatalf("first message %+v, want start with a pid", m)
		}
		sendJSON(t, ctx, conn, map[string]any{"type": "stdin", "data": []byte("hello\n")})
		if m := readMsg(t, ctx, conn); m.Type != "stdout" || string(m.Data) != "hello\n" {
			t.Fatalf("got %+v (%q), want stdout hello", m, m.Data)
		}
		sendJSON(t, ctx, conn, map[string]any{"type": "stdin", "data": []byte("second line\n")})
		sendJSON(t, ctx, conn, map[string]any{"type": "close_stdin"})
		out, _, exit := collect(t, ctx, conn)
		if out != "second line\n" || exit.ExitCode == nil || *exit.ExitCode != 0 {
			t.Errorf("got stdout %q, exit %+v; want second line and exit code 0", out, exit)
		}
	})
	t.Run("stderr, exit code, args", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		sendJSON(t, ctx, conn, map[string]any{"cmd": "/bin/sh", "args": []string{"-c", "echo out; echo err >&2; exit 4"}})
		if m := readMsg(t, ctx, conn); m.Type != "start" {
			t.Fatalf("first message %+v", m)
		}
		out, errOut, exit := collect(t, ctx, conn)
		if out != "out\n" || errOut != "err\n" || *exit.ExitCode != 4 {
			t.Errorf("got %q %q %+v", out, errOut, exit)
		}
	})
	t.Run("signal and timeout", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		sendJSON(t, ctx, conn, map[string]any{"cmd": "sleep 30"})
		readMsg(t, ctx, conn)
		sendJSON(t, ctx, conn, map[string]any{"type": "signal", "signal": "SIGINT"})
		if _, _, exit := collect(t, ctx, conn); exit.Signal != "SIGINT" || *exit.ExitCode != -1 {
			t.Errorf("exit %+v, want SIGINT", exit)
		}

		conn2, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn2.CloseNow() }()
		sendJSON(t, ctx, conn2, map[string]any{"cmd": "sleep 30", "timeout_sec": 1})
		readMsg(t, ctx, conn2)
		if _, _, exit := collect(t, ctx, conn2); !exit.TimedOut || exit.Signal != "SIGKILL" {
			t.Errorf("exit %+v, want timed out by SIGKILL", exit)
		}
	})
	t.Run("bad messages", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		sendJSON(t, ctx, conn, map[string]any{"cmd": "cat", "background": true})
		if m := readMsg(t, ctx, conn); m.Type != "error" || m.Error.Code != "invalid_request" {
			t.Errorf("got %+v, want an invalid_request error", m)
		}
		if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Errorf("got %v, want a policy-violation close", err)
		}

		// A bad message mid-stream is answered and the stream goes on.
		conn2, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn2.CloseNow() }()
		sendJSON(t, ctx, conn2, map[string]any{"cmd": "cat"})
		readMsg(t, ctx, conn2)
		sendJSON(t, ctx, conn2, map[string]any{"type": "resize", "cols": 10, "rows": 10})
		if m := readMsg(t, ctx, conn2); m.Type != "error" {
			t.Errorf("resize without a terminal: got %+v, want error", m)
		}
		sendJSON(t, ctx, conn2, map[string]any{"type": "dance"})
		if m := readMsg(t, ctx, conn2); m.Type != "error" {
			t.Errorf("unknown type: got %+v, want error", m)
		}
		sendJSON(t, ctx, conn2, map[string]any{"type": "close_stdin"})
		if _, _, exit := collect(t, ctx, conn2); *exit.ExitCode != 0 {
			t.Errorf("exit %+v", exit)
		}
	})
	t.Run("attach to a background process", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		a := cc.exec(map[string]any{"cmd": "echo one; sleep 1; echo two >&2", "background": true, "tag": "attach-me"}).
			want(t, "background", http.StatusAccepted)
		for _, q := range []string{"?tag=attach-me", fmt.Sprintf("?pid=%d", int(a.num("pid")))} {
			conn, _, err := cc.dial(ctx, "/exec/stream"+q)
			if err != nil {
				t.Fatal(err)
			}
			if m := readMsg(t, ctx, conn); m.Type != "start" || m.PID != uint32(a.num("pid")) || m.Tag != "attach-me" {
				t.Errorf("%s: first message %+v", q, m)
			}
			out, errOut, exit := collect(t, ctx, conn)
			if out != "one\n" || errOut != "two\n" || *exit.ExitCode != 0 {
				t.Errorf("%s: got %q %q %+v; want the replayed output and exit 0", q, out, errOut, exit)
			}
			_ = conn.CloseNow()
		}
		// An unknown process is a plain 404 before any upgrade.
		if _, status, err := cc.dial(ctx, "/exec/stream?pid=999999"); err == nil || status != http.StatusNotFound {
			t.Errorf("unknown pid: got %d %v, want 404", status, err)
		}
		cc.call("GET", "/exec/stream?tag=nobody", nil).wantError(t, "unknown tag", http.StatusNotFound, "process_not_found")
	})
	t.Run("a process outlives its stream", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		sendJSON(t, ctx, conn, map[string]any{"cmd": "cat", "tag": "survivor"})
		start := readMsg(t, ctx, conn)
		_ = conn.Close(websocket.StatusNormalClosure, "")
		conn, _, err = cc.dial(ctx, "/exec/stream?tag=survivor")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		if m := readMsg(t, ctx, conn); m.PID != start.PID {
			t.Fatalf("reattached to %+v, want pid %d", m, start.PID)
		}
		sendJSON(t, ctx, conn, map[string]any{"type": "stdin", "data": []byte("still here\n")})
		sendJSON(t, ctx, conn, map[string]any{"type": "close_stdin"})
		if out, _, exit := collect(t, ctx, conn); out != "still here\n" || *exit.ExitCode != 0 {
			t.Errorf("got %q %+v", out, exit)
		}
	})
}

// readUntil reads terminal output until it contains want.
func readUntil(t testing.TB, ctx context.Context, conn *websocket.Conn, want string) string {
	t.Helper()
	var seen bytes.Buffer
	for !strings.Contains(seen.String(), want) {
		m := readMsg(t, ctx, conn)
		switch m.Type {
		case "binary":
			seen.Write(m.Data)
		case "error":
			t.Fatalf("error message %+v", *m.Error)
		case "exit":
			t.Fatalf("terminal exited (%+v) before printing %q; it printed %q", m, want, seen.String())
		}
	}
	return seen.String()
}

func TestPTYStack(t *testing.T) {
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)

	t.Run("round trip and resize", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/pty?cols=100&rows=30")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		if m := readMsg(t, ctx, conn); m.Type != "start" || m.PID == 0 {
			t.Fatalf("first message %+v", m)
		}
		if err := conn.Write(ctx, websocket.MessageBinary, []byte("echo h''i; stty size\n")); err != nil {
			t.Fatal(err)
		}
		readUntil(t, ctx, conn, "hi\r\n30 100\r\n")
		sendJSON(t, ctx, conn, map[string]any{"type": "resize", "cols": 120, "rows": 40})
		if err := conn.Write(ctx, websocket.MessageBinary, []byte("stty size\n")); err != nil {
			t.Fatal(err)
		}
		readUntil(t, ctx, conn, "40 120\r\n")
		if err := conn.Write(ctx, websocket.MessageBinary, []byte("exit 7\n")); err != nil {
			t.Fatal(err)
		}
		for {
			m := readMsg(t, ctx, conn)
			if m.Type == "exit" {
				if *m.ExitCode != 7 {
					t.Errorf("exit %+v, want 7", m)
				}
				break
			}
		}
		if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Errorf("after exit: %v, want a normal close", err)
		}
	})
	t.Run("several at once", func(t *testing.T) {
		for i := range 4 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t, 60*time.Second)
				conn, _, err := cc.dial(ctx, "/pty?cmd=/bin/sh")
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = conn.CloseNow() }()
				readMsg(t, ctx, conn)
				if err := conn.Write(ctx, websocket.MessageBinary, fmt.Appendf(nil, "echo term-$((%d*11))\n", i)); err != nil {
					t.Fatal(err)
				}
				readUntil(t, ctx, conn, fmt.Sprintf("term-%d\r\n", i*11))
			})
		}
	})
	t.Run("closing the socket ends the shell", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/pty")
		if err != nil {
			t.Fatal(err)
		}
		start := readMsg(t, ctx, conn)
		_ = conn.Close(websocket.StatusNormalClosure, "")
		deadline := time.Now().Add(10 * time.Second)
		for {
			l := cc.call("GET", "/processes", nil).want(t, "list", http.StatusOK)
			var shell map[string]any
			for _, p := range l.list {
				if p := p.(map[string]any); uint32(p["pid"].(float64)) == start.PID {
					shell = p
				}
			}
			if shell == nil {
				t.Fatalf("pid %d is not listed: %s", start.PID, l.raw)
			}
			if shell["running"] == false {
				if shell["signal"] != "SIGHUP" {
					t.Errorf("the shell ended with %v, want SIGHUP", shell)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the shell still runs 10 s after its socket closed")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("a terminal cut by a pause is hung up after the resume", func(t *testing.T) {
		ctx := testCtx(t, 90*time.Second)
		conn, _, err := cc.dial(ctx, "/pty")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		start := readMsg(t, ctx, conn)
		cc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)
		cc.call("POST", "/resume", nil).want(t, "resume", http.StatusOK)
		// Its stream died with the pause: nobody can type into it any more, so the
		// restored shell must not run on (envd's keepalive finds the dead stream).
		deadline := time.Now().Add(45 * time.Second)
		for {
			var shell map[string]any
			l := cc.call("GET", "/processes", nil).want(t, "list", http.StatusOK)
			for _, p := range l.list {
				if p := p.(map[string]any); uint32(p["pid"].(float64)) == start.PID {
					shell = p
				}
			}
			if shell != nil && shell["running"] == false {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the shell of a terminal cut by a pause still runs 45 s after the resume: %v", shell)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
	t.Run("bad start is a plain HTTP error", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		if _, status, err := cc.dial(ctx, "/pty?cwd=/no/such/dir"); err == nil || status != http.StatusNotFound {
			t.Errorf("missing cwd: got status %d (%v), want 404", status, err)
		}
	})
	t.Run("a request that is no upgrade starts nothing", func(t *testing.T) {
		before := len(cc.call("GET", "/processes", nil).want(t, "list", http.StatusOK).list)
		cc.call("GET", "/pty?cmd=sleep+300", nil).wantError(t, "plain GET /pty", http.StatusBadRequest, "invalid_request")
		cc.call("GET", "/exec/stream", nil).wantError(t, "plain GET /exec/stream", http.StatusBadRequest, "invalid_request")
		if l := cc.call("GET", "/processes", nil).want(t, "list", http.StatusOK); len(l.list) != before {
			t.Errorf("plain GETs started processes: %d before, now %s", before, l.raw)
		}
	})
}
