package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"mime/multipart"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// sdkClient sends requests as the Wrenn Python SDK (v0.1.2) does: base
// URL WRENN_BASE_URL (here the server's /api), header X-API-Key, JSON
// bodies, the multipart forms of httpx, WebSockets of httpx_ws.
type sdkClient struct {
	t    *testing.T
	base string
	key  string
	sdk  apiSpec
}

// sdkAnswer is a decoded answer.
type sdkAnswer struct {
	status int
	raw    []byte
	v      any // the decoded JSON, if any
}

func (a sdkAnswer) obj() map[string]any { m, _ := a.v.(map[string]any); return m }

// errCode is error.code, what the SDK picks its exception by.
func (a sdkAnswer) errCode() string {
	e, _ := a.obj()["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (c *sdkClient) do(method, path, contentType string, body io.Reader) *http.Response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.key != "" {
		req.Header.Set("X-API-Key", c.key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return res
}

// send sends the request and reads the answer.
func (c *sdkClient) send(method, path, contentType string, body io.Reader) sdkAnswer {
	c.t.Helper()
	res := c.do(method, path, contentType, body)
	defer func() { _ = res.Body.Close() }()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	a := sdkAnswer{status: res.StatusCode, raw: raw}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &a.v); err != nil {
			c.t.Fatalf("answer is not JSON: %s", raw)
		}
	}
	return a
}

// json sends body (nil: none) as JSON.
func (c *sdkClient) json(method, path string, body any) sdkAnswer {
	c.t.Helper()
	if body == nil {
		return c.send(method, path, "", nil)
	}
	b, err := json.Marshal(body)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.send(method, path, "application/json", bytes.NewReader(b))
}

// want fails the test unless a has status; with model, the body must
// parse as that model of the SDK's (a list of them when list).
func (c *sdkClient) want(a sdkAnswer, what string, status int, model string) sdkAnswer {
	c.t.Helper()
	if a.status != status {
		c.t.Fatalf("%s: got %d %s, want %d", what, a.status, a.raw, status)
	}
	if model != "" {
		wantModel(c.t, c.sdk, model, a.v)
	}
	return a
}

// wantError fails the test unless a is the SDK's error status and code.
func (c *sdkClient) wantError(a sdkAnswer, what string, status int, code string) {
	c.t.Helper()
	if a.status != status || a.errCode() != code {
		c.t.Errorf("%s: got %d %s, want %d %s", what, a.status, a.raw, status, code)
	}
	wantModel(c.t, c.sdk, "Error1", a.v)
}

// dial opens a WebSocket as httpx_ws does, with the client's headers.
func (c *sdkClient) dial(ctx context.Context, path string) (*websocket.Conn, int, error) {
	h := http.Header{}
	h.Set("X-API-Key", c.key)
	conn, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(c.base, "http")+path, &websocket.DialOptions{HTTPHeader: h})
	status := 0
	if res != nil {
		status = res.StatusCode
		if res.Body != nil {
			_ = res.Body.Close()
		}
	}
	if conn != nil {
		conn.SetReadLimit(4 << 20)
	}
	return conn, status, err
}

// event is a JSON message of the SDK's WebSockets, as its parsers read it.
type event struct {
	Type     string `json:"type"`
	PID      int    `json:"pid"`
	Tag      string `json:"tag"`
	Data     string `json:"data"`
	ExitCode *int   `json:"exit_code"`
	Fatal    bool   `json:"fatal"`
}

func readEvent(t testing.TB, ctx context.Context, conn *websocket.Conn) event {
	t.Helper()
	typ, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("reading an event: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a binary message; the SDK reads only JSON text")
	}
	var e event
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("event is not JSON: %s", b)
	}
	return e
}

// streamEvents reads exec stream events as Commands.stream/connect do:
// until exit or error. It returns stdout, stderr and the last event.
func streamEvents(t testing.TB, ctx context.Context, conn *websocket.Conn) (stdout, stderr string, last event, types []string) {
	t.Helper()
	var out, errb strings.Builder
	for {
		e := readEvent(t, ctx, conn)
		types = append(types, e.Type)
		switch e.Type {
		case "stdout":
			out.WriteString(e.Data)
		case "stderr":
			errb.WriteString(e.Data)
		case "exit", "error":
			return out.String(), errb.String(), e, types
		case "start":
		default:
			t.Errorf("event type %q: the SDK's exec stream has no such event", e.Type)
		}
	}
}

// sdkMultipart is the body Files.upload_stream builds: a path field, then
// a file part named upload.bin, streamed from src.
func sdkMultipart(path string, src io.Reader) (contentType string, body io.Reader) {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	boundary := hex.EncodeToString(b)
	head := "--" + boundary + "\r\n" +
		"Content-Disposition: form-data; name=\"path\"\r\n\r\n" + path + "\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"upload.bin\"\r\n" +
		"Content-Type: application/octet-stream\r\n\r\n"
	tail := "\r\n--" + boundary + "--\r\n"
	return "multipart/form-data; boundary=" + boundary,
		io.MultiReader(strings.NewReader(head), src, strings.NewReader(tail))
}

// TestCompatPythonSDKStack replays, against the real stack, the requests
// the Wrenn Python SDK v0.1.2 sends for a capsule's whole life and checks
// each answer as the SDK's models parse it.
func TestCompatPythonSDKStack(t *testing.T) {
	st := stacktest.Start(t)
	c := &sdkClient{t: t, base: st.URL + "/api", key: st.Team.APIKey, sdk: sdkSpec(t)}

	// Auth as the SDK's exceptions see it.
	anon := &sdkClient{t: t, base: c.base, sdk: c.sdk}
	anon.wantError(anon.json("GET", "/v1/capsules", nil), "no key", http.StatusUnauthorized, "unauthorized")
	anon.key = "wrn_not_a_key"
	anon.wantError(anon.json("GET", "/v1/capsules", nil), "bad key", http.StatusUnauthorized, "unauthorized")

	// Capsule.create() without arguments: an empty payload, the server's
	// default template.
	created := c.want(c.json("POST", "/v1/capsules", map[string]any{}), "create", http.StatusCreated, "Capsule").obj()
	id, _ := created["id"].(string)
	if created["status"] != "running" || created["template"] != "minimal" || id == "" {
		t.Fatalf("create answered %v, want a running capsule of template minimal", created)
	}
	caps := "/v1/capsules/" + id
	got := c.want(c.json("GET", caps, nil), "get", http.StatusOK, "Capsule").obj()
	if got["id"] != id || got["status"] != "running" {
		t.Errorf("get answered %v", got)
	}
	list := c.want(c.json("GET", "/v1/capsules", nil), "list", http.StatusOK, "")
	items, ok := list.v.([]any)
	if !ok {
		t.Fatalf("list answered %s, want an array", list.raw)
	}
	found := false
	for _, it := range items {
		wantModel(t, c.sdk, "Capsule", it)
		found = found || it.(map[string]any)["id"] == id
	}
	if !found {
		t.Errorf("list does not hold %s: %s", id, list.raw)
	}
	c.want(c.json("POST", caps+"/ping", nil), "ping", http.StatusNoContent, "")
	c.wantError(c.json("GET", "/v1/capsules/00000000-0000-0000-0000-000000000000", nil), "unknown capsule", http.StatusNotFound, "not_found")

	// Commands.run: /bin/sh -c, foreground.
	run := func(cmd string) map[string]any {
		t.Helper()
		return c.want(c.json("POST", caps+"/exec", map[string]any{
			"cmd": "/bin/sh", "args": []string{"-c", cmd}, "background": false, "timeout_sec": 30,
		}), "exec "+cmd, http.StatusOK, "ExecResponse").obj()
	}
	t.Run("exec", func(t *testing.T) {
		res := run("echo hello; echo oops >&2; exit 3")
		if res["stdout"] != "hello\n" || res["stderr"] != "oops\n" || res["exit_code"] != 3.0 ||
			res["encoding"] != "utf-8" || res["sandbox_id"] != id {
			t.Errorf("exec answered %v", res)
		}
		// Output that is not UTF-8 comes base64, as the SDK decodes it.
		res = run(`printf 'a\377b'`)
		out, err := base64.StdEncoding.DecodeString(fmt.Sprint(res["stdout"]))
		if res["encoding"] != "base64" || err != nil || string(out) != "a\xffb" {
			t.Errorf("binary exec answered %v", res)
		}
		// A program that is not there: not_found, on both routes.
		c.wantError(c.json("POST", caps+"/exec", map[string]any{"cmd": "/no/such/program", "args": []string{}}),
			"missing program", http.StatusNotFound, "not_found")
	})

	t.Run("background and connect", func(t *testing.T) {
		// Commands.run(background=True): no timeout, no tag.
		bg := c.want(c.json("POST", caps+"/exec", map[string]any{
			"cmd": "/bin/sh", "args": []string{"-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done"}, "background": true,
		}), "background exec", http.StatusAccepted, "BackgroundExecResponse").obj()
		pid, _ := bg["pid"].(float64)
		tag, _ := bg["tag"].(string)
		if pid <= 0 || tag == "" || bg["sandbox_id"] != id {
			t.Fatalf("background exec answered %v, want a pid and a tag", bg)
		}
		procs := c.want(c.json("GET", caps+"/processes", nil), "processes", http.StatusOK, "ProcessListResponse").obj()
		if !strings.Contains(fmt.Sprint(procs["processes"]), fmt.Sprintf("pid:%v", pid)) {
			t.Errorf("processes %v do not hold pid %v", procs, pid)
		}
		// Commands.connect(pid): the output from the start, then exit.
		ctx := testCtx(t, 30*time.Second)
		conn, status, err := c.dial(ctx, fmt.Sprintf("%s/processes/%d/stream", caps, int(pid)))
		if err != nil {
			t.Fatalf("connect: %d %v", status, err)
		}
		defer func() { _ = conn.CloseNow() }()
		out, _, last, types := streamEvents(t, ctx, conn)
		if types[0] != "start" || out != "line1\nline2\nline3\n" || last.Type != "exit" || last.ExitCode == nil || *last.ExitCode != 0 {
			t.Errorf("connect got %v, stdout %q, last %+v", types, out, last)
		}
		// By tag, once more: the ended process's output is still there.
		conn2, status, err := c.dial(ctx, caps+"/processes/"+tag+"/stream")
		if err != nil {
			t.Fatalf("connect by tag: %d %v", status, err)
		}
		defer func() { _ = conn2.CloseNow() }()
		if out, _, last, _ := streamEvents(t, ctx, conn2); out != "line1\nline2\nline3\n" || last.Type != "exit" {
			t.Errorf("connect by tag: stdout %q, last %+v", out, last)
		}
		if _, status, err := c.dial(ctx, caps+"/processes/999999/stream"); err == nil || status != http.StatusNotFound {
			t.Errorf("connect to no process: %d %v, want 404", status, err)
		}

		// Commands.kill(pid), and the list no longer holds it.
		sleeper := c.want(c.json("POST", caps+"/exec", map[string]any{
			"cmd": "/bin/sh", "args": []string{"-c", "sleep 60"}, "background": true, "tag": "sleeper",
		}), "sleeper", http.StatusAccepted, "BackgroundExecResponse").obj()
		if sleeper["tag"] != "sleeper" {
			t.Errorf("sleeper answered %v", sleeper)
		}
		c.want(c.json("DELETE", fmt.Sprintf("%s/processes/%v", caps, sleeper["pid"]), nil), "kill", http.StatusNoContent, "")
		deadline := time.Now().Add(5 * time.Second)
		for {
			procs := c.want(c.json("GET", caps+"/processes", nil), "processes", http.StatusOK, "ProcessListResponse").obj()
			if !strings.Contains(fmt.Sprint(procs["processes"]), "tag:sleeper") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("killed process still listed: %v", procs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.wantError(c.json("DELETE", caps+"/processes/no-such-tag", nil), "kill unknown", http.StatusNotFound, "not_found")
	})

	t.Run("exec stream", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := c.dial(ctx, caps+"/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		// Commands.stream("..."): /bin/sh -c. The é is cut between two
		// writes, and comes whole.
		sendJSON(t, ctx, conn, map[string]any{"type": "start", "cmd": "/bin/sh",
			"args": []string{"-c", `echo hi; printf '\303'; sleep 0.2; printf '\251\n'; echo err >&2; exit 2`}})
		out, errOut, last, types := streamEvents(t, ctx, conn)
		if types[0] != "start" || out != "hi\né\n" || errOut != "err\n" || last.ExitCode == nil || *last.ExitCode != 2 {
			t.Errorf("stream got %v, %q, %q, %+v", types, out, errOut, last)
		}

		// stop ends the process.
		conn2, _, err := c.dial(ctx, caps+"/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn2.CloseNow() }()
		sendJSON(t, ctx, conn2, map[string]any{"type": "start", "cmd": "/bin/sh", "args": []string{"-c", "sleep 60"}})
		if e := readEvent(t, ctx, conn2); e.Type != "start" || e.PID == 0 {
			t.Fatalf("first event %+v", e)
		}
		sendJSON(t, ctx, conn2, map[string]any{"type": "stop"})
		if _, _, last, _ := streamEvents(t, ctx, conn2); last.Type != "exit" {
			t.Errorf("after stop: %+v", last)
		}

		// A missing program: an error event, not_found as for /exec.
		conn3, _, err := c.dial(ctx, caps+"/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn3.CloseNow() }()
		sendJSON(t, ctx, conn3, map[string]any{"type": "start", "cmd": "/no/such/program", "args": []string{"x"}})
		typ, b, err := conn3.Read(ctx)
		var e struct {
			Type, Data, Code string
		}
		if err != nil || typ != websocket.MessageText || json.Unmarshal(b, &e) != nil ||
			e.Type != "error" || e.Data == "" || e.Code != "not_found" {
			t.Errorf("missing program: %s %v, want an error event with data and code not_found", b, err)
		}
	})

	t.Run("files", func(t *testing.T) {
		// Files.write: httpx puts the data fields before the files.
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		_ = mw.WriteField("path", "/tmp/compat/dir/hello.txt")
		fw, _ := mw.CreateFormFile("file", "upload")
		_, _ = fw.Write([]byte("hello, sdk\n"))
		_ = mw.Close()
		c.want(c.send("POST", caps+"/files/write", mw.FormDataContentType(), &body), "write", http.StatusNoContent, "")
		read := c.send("POST", caps+"/files/read", "application/json", strings.NewReader(`{"path":"/tmp/compat/dir/hello.txt"}`))
		if read.status != http.StatusOK || string(read.raw) != "hello, sdk\n" {
			t.Errorf("read: %d %q", read.status, read.raw)
		}
		ls := c.want(c.json("POST", caps+"/files/list", map[string]any{"path": "/tmp/compat/dir", "depth": 1}),
			"list", http.StatusOK, "ListDirResponse").obj()
		entries, _ := ls["entries"].([]any)
		if len(entries) != 1 {
			t.Fatalf("list: %v", ls)
		}
		e := entries[0].(map[string]any)
		if e["name"] != "hello.txt" || e["type"] != "file" || e["size"] != 11.0 {
			t.Errorf("entry %v", e)
		}
		if mod, _ := e["modified_at"].(float64); time.Since(time.Unix(int64(mod), 0)) > time.Hour {
			t.Errorf("modified_at %v is not a recent Unix time", e["modified_at"])
		}
		mk := c.want(c.json("POST", caps+"/files/mkdir", map[string]any{"path": "/tmp/compat/new/deep"}),
			"mkdir", http.StatusOK, "MakeDirResponse").obj()
		if entry, _ := mk["entry"].(map[string]any); entry["type"] != "directory" || entry["path"] != "/tmp/compat/new/deep" {
			t.Errorf("mkdir answered %v", mk)
		}
		// Files.make_dir on a file: 409 conflict, which it looks for.
		c.wantError(c.json("POST", caps+"/files/mkdir", map[string]any{"path": "/tmp/compat/dir/hello.txt"}),
			"mkdir on a file", http.StatusConflict, "conflict")
		c.want(c.json("POST", caps+"/files/remove", map[string]any{"path": "/tmp/compat/dir"}), "remove", http.StatusNoContent, "")
		// Files.exists lists the parent and catches WrennNotFoundError.
		c.wantError(c.json("POST", caps+"/files/list", map[string]any{"path": "/tmp/compat/dir", "depth": 1}),
			"list removed", http.StatusNotFound, "not_found")
		c.wantError(c.json("POST", caps+"/files/read", map[string]any{"path": "/tmp/compat/dir/hello.txt"}),
			"read removed", http.StatusNotFound, "not_found")
	})

	t.Run("stream 50 MiB", func(t *testing.T) {
		const size = 50 << 20
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		floor := ms.HeapInuse
		var peak atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			var ms runtime.MemStats
			for {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
		up := sha256.New()
		src := &prng{r: mrand.NewChaCha8([32]byte{17}), left: size, h: up}
		ct, body := sdkMultipart("/var/tmp/compat-50m.bin", src)
		// Chunked, as httpx sends a generator: no Content-Length.
		c.want(c.send("POST", caps+"/files/stream/write", ct, io.NopCloser(body)), "stream write", http.StatusNoContent, "")
		res := c.do("POST", caps+"/files/stream/read", "application/json", strings.NewReader(`{"path":"/var/tmp/compat-50m.bin"}`))
		down := sha256.New()
		n, err := io.CopyBuffer(down, res.Body, make([]byte, 64<<10))
		_ = res.Body.Close()
		close(stop)
		wg.Wait()
		if res.StatusCode != http.StatusOK || err != nil || n != size {
			t.Fatalf("stream read: %d, %d bytes, %v", res.StatusCode, n, err)
		}
		if !bytes.Equal(up.Sum(nil), down.Sum(nil)) {
			t.Error("the file read back differs from the one written")
		}
		grew := peak.Load() - min(floor, peak.Load())
		t.Logf("50 MiB up and down; heap in use grew by %d MiB at most", grew>>20)
		if grew > 40<<20 {
			t.Errorf("heap in use grew by %d MiB: something buffered the file", grew>>20)
		}
	})

	t.Run("pty", func(t *testing.T) {
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := c.dial(ctx, caps+"/pty")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		// Capsule.pty(cmd=...): the minimal template has no bash.
		sendJSON(t, ctx, conn, map[string]any{"type": "start", "cmd": "/bin/sh", "cols": 80, "rows": 24})
		started := readEvent(t, ctx, conn)
		if started.Type != "started" || started.PID == 0 || started.Tag == "" {
			t.Fatalf("first event %+v, want started with pid and tag", started)
		}
		input := func(conn *websocket.Conn, s string) {
			sendJSON(t, ctx, conn, map[string]any{"type": "input", "data": base64.StdEncoding.EncodeToString([]byte(s))})
		}
		// output events until want is seen.
		await := func(conn *websocket.Conn, want string) {
			t.Helper()
			var seen strings.Builder
			for !strings.Contains(seen.String(), want) {
				e := readEvent(t, ctx, conn)
				switch e.Type {
				case "output":
					b, err := base64.StdEncoding.DecodeString(e.Data)
					if err != nil {
						t.Fatalf("output data is not base64: %q", e.Data)
					}
					seen.Write(b)
				case "ping":
				default:
					t.Fatalf("event %+v while waiting for %q (seen %q)", e, want, seen.String())
				}
			}
		}
		sendJSON(t, ctx, conn, map[string]any{"type": "resize", "cols": 100, "rows": 30})
		input(conn, "echo $((6*7)); stty size\n")
		await(conn, "30 100")
		// PtySession survives a dropped connection: pty_connect(tag).
		_ = conn.Close(websocket.StatusNormalClosure, "")
		conn2, _, err := c.dial(ctx, caps+"/pty")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn2.CloseNow() }()
		sendJSON(t, ctx, conn2, map[string]any{"type": "connect", "tag": started.Tag})
		if e := readEvent(t, ctx, conn2); e.Type != "started" || e.PID != started.PID {
			t.Fatalf("reconnect: %+v, want started with pid %d", e, started.PID)
		}
		input(conn2, "echo again-$((1+1))\n")
		await(conn2, "again-2")
		input(conn2, "exit 5\n")
		for {
			e := readEvent(t, ctx, conn2)
			if e.Type == "exit" {
				if e.ExitCode == nil || *e.ExitCode != 5 {
					t.Errorf("exit %+v, want code 5", e)
				}
				break
			}
			if e.Type != "output" {
				t.Fatalf("event %+v before exit", e)
			}
		}
		// Reconnecting to a tag that is not there: a fatal error.
		conn3, _, err := c.dial(ctx, caps+"/pty")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn3.CloseNow() }()
		sendJSON(t, ctx, conn3, map[string]any{"type": "connect", "tag": "pty-none"})
		if e := readEvent(t, ctx, conn3); e.Type != "error" || !e.Fatal || e.Data == "" {
			t.Errorf("connect to no terminal: %+v, want a fatal error", e)
		}
	})

	t.Run("native aliases", func(t *testing.T) {
		// /v1 has the SDK's new paths too, in its own shapes.
		cc := &capsuleClient{t: t, st: st, tm: st.Team, id: id}
		cc.exec(map[string]any{"cmd": "sleep 60", "background": true, "tag": "native-sleeper"}).want(t, "exec", http.StatusAccepted)
		p := cc.call("GET", "/processes/native-sleeper", nil).want(t, "get by tag", http.StatusOK)
		if p.str("tag") != "native-sleeper" || p.body["running"] != true {
			t.Errorf("get by tag: %s", p.raw)
		}
		ctx := testCtx(t, 30*time.Second)
		conn, _, err := cc.dial(ctx, "/processes/native-sleeper/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.CloseNow() }()
		if m := readMsg(t, ctx, conn); m.Type != "start" || m.Tag != "native-sleeper" {
			t.Errorf("attach by path: %+v", m)
		}
		cc.call("DELETE", "/processes/native-sleeper?signal=SIGTERM", nil).want(t, "kill by tag", http.StatusNoContent)
		if _, _, exit := collect(t, ctx, conn); exit.Signal != "SIGTERM" {
			t.Errorf("exit %+v, want SIGTERM", exit)
		}
		cc.call("GET", "/processes/no-such", nil).wantError(t, "get unknown", http.StatusNotFound, "process_not_found")
		ct, body := multipartBody(t, "path", "/tmp/alias.txt", "file", "alias")
		if w := cc.raw("POST", "/files/stream/write", ct, body).want(t, "stream write", http.StatusOK); w.num("size") != 5 {
			t.Errorf("stream write answered %s", w.raw)
		}
		if r := cc.call("POST", "/files/stream/read", map[string]any{"path": "/tmp/alias.txt"}); string(r.raw) != "alias" {
			t.Errorf("stream read: %d %q", r.status, r.raw)
		}
		// The native exec stream names a missing program as exec does.
		conn2, _, err := cc.dial(ctx, "/exec/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn2.CloseNow() }()
		sendJSON(t, ctx, conn2, map[string]any{"cmd": "/no/such/program", "args": []string{}})
		if m := readMsg(t, ctx, conn2); m.Type != "error" || m.Error == nil || m.Error.Code != "file_not_found" {
			t.Errorf("native stream, missing program: %+v", m)
		}
		cc.exec(map[string]any{"cmd": "/no/such/program", "args": []string{}}).wantError(t, "native exec, missing program", http.StatusNotFound, "file_not_found")
	})

	// pause → resume, as Capsule.pause() / resume() parse them.
	paused := c.want(c.json("POST", caps+"/pause", nil), "pause", http.StatusOK, "Capsule").obj()
	if paused["status"] != "paused" {
		t.Fatalf("pause answered %v", paused)
	}
	c.wantError(c.json("POST", caps+"/exec", map[string]any{"cmd": "/bin/sh", "args": []string{"-c", "true"}}),
		"exec while paused", http.StatusConflict, "invalid_state")
	c.wantError(c.json("POST", caps+"/pause", nil), "pause twice", http.StatusConflict, "invalid_state")
	resumed := c.want(c.json("POST", caps+"/resume", nil), "resume", http.StatusOK, "Capsule").obj()
	if resumed["status"] != "running" {
		t.Fatalf("resume answered %v", resumed)
	}
	if res := run("echo back"); res["stdout"] != "back\n" {
		t.Errorf("after resume: %v", res)
	}

	// Capsule.create_snapshot(name), again with and without overwrite.
	name := "compat-" + hex.EncodeToString([]byte(id[:4]))
	snap := c.want(c.json("POST", "/v1/snapshots", map[string]any{"sandbox_id": id, "name": name}),
		"snapshot", http.StatusCreated, "Template").obj()
	if snap["name"] != name || snap["type"] != "snapshot" || snap["vcpus"] == 0.0 || snap["memory_mb"] == 0.0 {
		t.Errorf("snapshot answered %v", snap)
	}
	c.wantError(c.json("POST", "/v1/snapshots", map[string]any{"sandbox_id": id, "name": name}),
		"snapshot, name taken", http.StatusConflict, "conflict")
	c.want(c.json("POST", "/v1/snapshots?overwrite=true", map[string]any{"sandbox_id": id, "name": name}),
		"snapshot, overwrite", http.StatusCreated, "Template")
	snaps := c.want(c.json("GET", "/v1/snapshots?type=snapshot", nil), "snapshots", http.StatusOK, "")
	l, _ := snaps.v.([]any)
	if len(l) != 1 || l[0].(map[string]any)["name"] != name {
		t.Errorf("snapshots of type snapshot: %s", snaps.raw)
	}
	for _, it := range l {
		wantModel(t, c.sdk, "Template", it)
	}
	c.want(c.json("DELETE", "/v1/snapshots/"+name, nil), "delete snapshot", http.StatusNoContent, "")
	c.wantError(c.json("DELETE", "/v1/snapshots/"+name, nil), "delete snapshot again", http.StatusNotFound, "not_found")

	// Bad input: a clear 4xx in the SDK's codes, and nothing made.
	c.wantError(c.json("POST", "/v1/snapshots?overwrite=maybe", map[string]any{"sandbox_id": id}),
		"overwrite=maybe", http.StatusBadRequest, "invalid_request")
	c.wantError(c.json("POST", "/v1/snapshots", map[string]any{"sandbox_id": id, "bogus": 1}),
		"unknown snapshot field", http.StatusBadRequest, "invalid_request")
	c.wantError(c.json("GET", "/v1/snapshots?type=other", nil), "type=other", http.StatusBadRequest, "invalid_request")
	c.wantError(c.json("POST", "/v1/capsules", map[string]any{"template": "no-such-template"}),
		"unknown template", http.StatusNotFound, "not_found")
	c.wantError(c.json("POST", "/v1/capsules", map[string]any{"vcpus": "two"}), "vcpus a string", http.StatusBadRequest, "invalid_request")
	if l, _ := c.want(c.json("GET", "/v1/snapshots?type=snapshot", nil), "snapshots", http.StatusOK, "").v.([]any); len(l) != 0 {
		t.Errorf("bad requests left snapshots: %v", l)
	}
	ctx := testCtx(t, 30*time.Second)
	conn, _, err := c.dial(ctx, caps+"/exec/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.CloseNow() }()
	sendJSON(t, ctx, conn, map[string]any{"cmd": "true"}) // this API's own first message, without type
	if e := readEvent(t, ctx, conn); e.Type != "error" || !strings.Contains(e.Data, "type") {
		t.Errorf("first message without type: %+v, want an error", e)
	}
	if a := c.json("GET", caps+"/pty", nil); a.status != http.StatusBadRequest || a.errCode() != "invalid_request" {
		t.Errorf("pty without an upgrade: %d %s", a.status, a.raw)
	}

	// Capsule.destroy().
	c.want(c.json("DELETE", caps, nil), "destroy", http.StatusNoContent, "")
	if gone := c.want(c.json("GET", caps, nil), "get destroyed", http.StatusOK, "Capsule").obj(); gone["status"] != "stopped" {
		t.Errorf("destroyed capsule is %v", gone["status"])
	}

	// API keys, as the SDK's models read them.
	key := c.want(c.json("POST", "/v1/api-keys", map[string]any{}), "create key", http.StatusCreated, "APIKeyResponse").obj()
	if key["name"] != "Unnamed API Key" || !strings.HasPrefix(fmt.Sprint(key["key"]), "wrn_") || key["key_prefix"] == "" || key["team_id"] != st.Team.ID {
		t.Errorf("create key answered %v", key)
	}
	keys := c.want(c.json("GET", "/v1/api-keys", nil), "keys", http.StatusOK, "")
	kl, _ := keys.v.([]any)
	for _, k := range kl {
		wantModel(t, c.sdk, "APIKeyResponse", k)
	}
	if len(kl) < 2 {
		t.Errorf("keys: %s", keys.raw)
	}
	c.want(c.json("DELETE", fmt.Sprintf("/v1/api-keys/%v", key["id"]), nil), "delete key", http.StatusNoContent, "")
}
