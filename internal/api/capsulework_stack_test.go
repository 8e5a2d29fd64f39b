package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// capsuleClient calls the routes of one capsule as one team.
type capsuleClient struct {
	t  testing.TB
	st *stacktest.Stack
	tm stacktest.Team
	id string
}

// newCapsuleClient creates a running minimal capsule through the API.
func newCapsuleClient(t testing.TB, st *stacktest.Stack) *capsuleClient {
	t.Helper()
	var c struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	st.Team.JSON(t, st, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, http.StatusCreated, &c)
	if c.Status != "running" {
		t.Fatalf("new capsule is %s, want running", c.Status)
	}
	return &capsuleClient{t: t, st: st, tm: st.Team, id: c.ID}
}

// as returns a client for the same capsule id acting as team tm.
func (cc *capsuleClient) as(tm stacktest.Team) *capsuleClient {
	c := *cc
	c.tm = tm
	return &c
}

// answer is a decoded response.
type answer struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
	list   []any
}

// code returns error.code of an error answer.
func (a answer) code() string {
	e, _ := a.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (a answer) str(k string) string { s, _ := a.body[k].(string); return s }

func (a answer) num(k string) float64 { n, _ := a.body[k].(float64); return n }

// want fails the test unless the answer has status.
func (a answer) want(t testing.TB, what string, status int) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: got status %d, want %d; body %s", what, a.status, status, a.raw)
	}
	return a
}

// wantError fails the test unless the answer is the error status + code.
func (a answer) wantError(t testing.TB, what string, status int, code string) {
	t.Helper()
	if a.status != status || a.code() != code {
		t.Errorf("%s: got %d %s, want %d %s", what, a.status, a.raw, status, code)
	}
}

func readAnswer(t testing.TB, res *http.Response) answer {
	t.Helper()
	defer func() { _ = res.Body.Close() }()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if raw[0] == '[' {
			_ = json.Unmarshal(raw, &a.list)
		} else if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("answer is not JSON: %v: %s", err, raw)
		}
	}
	return a
}

// path is the capsule's route sub ("/exec", "/files/read", …).
func (cc *capsuleClient) path(sub string) string { return "/v1/capsules/" + cc.id + sub }

// call sends body (a string is sent as is, anything else as JSON) to the
// capsule's route sub.
func (cc *capsuleClient) call(method, sub string, body any) answer {
	cc.t.Helper()
	var res *http.Response
	if s, ok := body.(string); ok {
		res = cc.tm.DoRaw(cc.t, cc.st, method, cc.path(sub), "application/json", strings.NewReader(s))
	} else {
		res = cc.tm.Do(cc.t, cc.st, method, cc.path(sub), body)
	}
	defer func() { _ = res.Body.Close() }()
	return readAnswer(cc.t, res)
}

// raw sends body as is with contentType to the capsule's route sub.
func (cc *capsuleClient) raw(method, sub, contentType string, body io.Reader) answer {
	cc.t.Helper()
	res := cc.tm.DoRaw(cc.t, cc.st, method, cc.path(sub), contentType, body)
	defer func() { _ = res.Body.Close() }()
	return readAnswer(cc.t, res)
}

// send sends req with the team's API key.
func (cc *capsuleClient) send(req *http.Request) answer {
	cc.t.Helper()
	req.Header.Set("X-API-Key", cc.tm.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cc.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	return readAnswer(cc.t, res)
}

// exec runs body through POST /exec.
func (cc *capsuleClient) exec(body map[string]any) answer {
	cc.t.Helper()
	return cc.call("POST", "/exec", body)
}

// sh runs a shell line and fails the test unless it exits 0; it returns
// stdout.
func (cc *capsuleClient) sh(line string) string {
	cc.t.Helper()
	a := cc.exec(map[string]any{"cmd": line}).want(cc.t, line, http.StatusOK)
	if a.num("exit_code") != 0 {
		cc.t.Fatalf("%s: exit code %v, stderr %q", line, a.body["exit_code"], a.str("stderr"))
	}
	return a.str("stdout")
}

// dial opens a WebSocket on the capsule's route sub (with its query). When
// the server refuses the upgrade, status is its answer's status.
func (cc *capsuleClient) dial(ctx context.Context, sub string) (conn *websocket.Conn, status int, err error) {
	h := http.Header{}
	h.Set("X-API-Key", cc.tm.APIKey)
	conn, res, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(cc.st.URL, "http")+cc.path(sub), &websocket.DialOptions{HTTPHeader: h})
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

// auditLog returns the team's audit log.
func auditLog(t testing.TB, st *stacktest.Stack) answer {
	t.Helper()
	res := st.Team.Do(t, st, "GET", "/v1/audit-log?limit=1000", nil)
	defer func() { _ = res.Body.Close() }()
	return readAnswer(t, res).want(t, "audit log", http.StatusOK)
}

// wsMsg is a JSON text message of /exec/stream and /pty.
type wsMsg struct {
	Type     string `json:"type"`
	Data     []byte `json:"data,omitempty"`
	PID      uint32 `json:"pid,omitempty"`
	Tag      string `json:"tag,omitempty"`
	ExitCode *int32 `json:"exit_code,omitempty"`
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Cols     uint32 `json:"cols,omitempty"`
	Rows     uint32 `json:"rows,omitempty"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

func sendJSON(t testing.TB, ctx context.Context, conn *websocket.Conn, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatalf("sending %s: %v", b, err)
	}
}

// readMsg reads the next text message (binary ones are returned as type
// "binary" with Data).
func readMsg(t testing.TB, ctx context.Context, conn *websocket.Conn) wsMsg {
	t.Helper()
	typ, b, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("reading a message: %v", err)
	}
	if typ == websocket.MessageBinary {
		return wsMsg{Type: "binary", Data: b}
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("message is not JSON: %s", b)
	}
	return m
}

// collect reads messages until exit and returns stdout, stderr and the
// exit message; then it expects a normal close.
func collect(t testing.TB, ctx context.Context, conn *websocket.Conn) (stdout, stderr string, exit wsMsg) {
	t.Helper()
	var out, errb bytes.Buffer
	for {
		m := readMsg(t, ctx, conn)
		switch m.Type {
		case "stdout":
			out.Write(m.Data)
		case "stderr":
			errb.Write(m.Data)
		case "exit":
			_, _, err := conn.Read(ctx)
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Errorf("after exit: got %v, want a normal close", err)
			}
			return out.String(), errb.String(), m
		case "error":
			t.Fatalf("error message: %+v", *m.Error)
		}
	}
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestCapsuleWorkRefusals checks that every route working inside a capsule
// answers another team's capsule, a malformed id and a stopped capsule
// before doing anything, and that bad input changes nothing.
func TestCapsuleWorkRefusals(t *testing.T) {
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)
	other := cc.as(st.NewTeam(t))
	cc.sh("mkdir -p /var/tmp/keep && echo kept > /var/tmp/keep/file")

	type route struct {
		method, sub string
		body        any
	}
	routes := []route{
		{"POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/touched"}},
		{"GET", "/exec/stream", nil},
		{"GET", "/pty", nil},
		{"GET", "/processes", nil},
		{"GET", "/metrics", nil},
		{"DELETE", "/processes/1", nil},
		{"POST", "/files/write", nil},
		{"POST", "/files/read", map[string]any{"path": "/var/tmp/keep/file"}},
		{"POST", "/files/list", map[string]any{"path": "/var/tmp/keep"}},
		{"POST", "/files/mkdir", map[string]any{"path": "/var/tmp/keep/dir"}},
		{"POST", "/files/remove", map[string]any{"path": "/var/tmp/keep"}},
		{"PUT", "/files?path=/var/tmp/keep/file", "overwritten"},
		{"GET", "/files?path=/var/tmp/keep/file", nil},
	}
	audit := func() int {
		var events []any
		st.Team.JSON(t, st, "GET", "/v1/audit-log?limit=1000", nil, http.StatusOK, &events)
		return len(events)
	}
	before := audit()
	for _, rt := range routes {
		other.call(rt.method, rt.sub, rt.body).wantError(t, "another team's capsule: "+rt.method+" "+rt.sub, http.StatusNotFound, "capsule_not_found")
		bad := cc.as(st.Team)
		bad.id = "not-a-uuid"
		bad.call(rt.method, rt.sub, rt.body).wantError(t, "malformed id: "+rt.method+" "+rt.sub, http.StatusNotFound, "capsule_not_found")
		bad.id = "7a0e7d8c-3c1f-4d0e-9d55-5d3b9d6b1a11"
		bad.call(rt.method, rt.sub, rt.body).wantError(t, "unknown id: "+rt.method+" "+rt.sub, http.StatusNotFound, "capsule_not_found")
	}

	// Bad input, each refused with 400 before anything is sent to envd.
	bad := []struct {
		name, method, sub string
		body              any
	}{
		{"missing cmd", "POST", "/exec", map[string]any{"args": []string{"x"}}},
		{"blank cmd", "POST", "/exec", map[string]any{"cmd": "  "}},
		{"malformed JSON", "POST", "/exec", `{"cmd": "touch /var/tmp/keep/x"`},
		{"unknown field", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "shell": true}},
		{"wrong type", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "timeout_sec": "5"}},
		{"timeout 0", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "timeout_sec": 0}},
		{"timeout too long", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "timeout_sec": 3601}},
		{"bad env name", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "envs": map[string]string{"A=B": "c"}}},
		{"env name digit", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "envs": map[string]string{"1A": "c"}}},
		{"relative cwd", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "cwd": "tmp"}},
		{"long tag", "POST", "/exec", map[string]any{"cmd": "touch /var/tmp/keep/x", "tag": strings.Repeat("t", 129)}},
		{"NUL in args", "POST", "/exec", map[string]any{"cmd": "touch", "args": []string{"/var/tmp/keep/x\x00"}}},
		{"pid not a number", "DELETE", "/processes/abc", nil},
		{"unknown signal", "DELETE", "/processes/1?signal=SIGFOO", nil},
		{"relative path", "POST", "/files/remove", map[string]any{"path": "var/tmp/keep"}},
		{"empty path", "POST", "/files/mkdir", map[string]any{"path": ""}},
		{"unknown field in files", "POST", "/files/remove", map[string]any{"path": "/var/tmp/keep", "force": true}},
		{"malformed JSON in files", "POST", "/files/remove", `{"path": `},
		{"list depth 0", "POST", "/files/list", map[string]any{"path": "/var/tmp/keep", "depth": 0}},
		{"bad mode", "POST", "/files/mkdir", map[string]any{"path": "/var/tmp/keep/d", "mode": "999"}},
		{"PUT relative path", "PUT", "/files?path=keep/file", "overwritten"},
		{"PUT bad mode", "PUT", "/files?path=/var/tmp/keep/file&mode=rw", "overwritten"},
		{"GET without path", "GET", "/files", nil},
		{"write without multipart", "POST", "/files/write", map[string]any{"path": "/var/tmp/keep/file"}},
	}
	for _, b := range bad {
		a := cc.call(b.method, b.sub, b.body)
		want := http.StatusBadRequest
		code := "invalid_request"
		if b.name == "pid not a number" {
			want, code = http.StatusNotFound, "process_not_found"
		}
		a.wantError(t, b.name, want, code)
	}
	for _, q := range []string{"?cols=0", "?rows=10001", "?cols=x", "?cwd=rel"} {
		cc.call("GET", "/pty"+q, nil).wantError(t, "pty "+q, http.StatusBadRequest, "invalid_request")
	}
	for _, q := range []string{"?pid=0", "?pid=x", "?pid=1&tag=a", "?tag="} {
		cc.call("GET", "/exec/stream"+q, nil).wantError(t, "stream "+q, http.StatusBadRequest, "invalid_request")
	}
	if got := cc.sh("ls /var/tmp/keep; cat /var/tmp/keep/file"); got != "file\nkept\n" {
		t.Errorf("after refused requests the directory holds %q, want only the original file", got)
	}
	if got := audit(); got != before+1 { // +1: the ls just now
		t.Errorf("refused requests wrote audit rows: %d before, %d after", before, got)
	}

	// A stopped capsule: 409 on every route, with its status.
	st.Team.JSON(t, st, "DELETE", "/v1/capsules/"+cc.id, nil, http.StatusNoContent, nil)
	for _, rt := range routes {
		a := cc.call(rt.method, rt.sub, rt.body)
		a.wantError(t, "stopped capsule: "+rt.method+" "+rt.sub, http.StatusConflict, "capsule_not_running")
		if e, _ := a.body["error"].(map[string]any); !strings.Contains(e["message"].(string), "stopped") {
			t.Errorf("stopped capsule: %s %s: message %q does not say stopped", rt.method, rt.sub, e["message"])
		}
	}
}
