package api_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/agent"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// counterLoop counts in the shell's own memory and writes each value to
// /tmp/counter: after a resume the count goes on from where it was, which
// only a restored process can do (a restarted one would start at 1). Each
// value is renamed into place, so that a read never sees it half-written.
const counterLoop = `i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done`

// startCounter starts counterLoop in the background and waits for its
// first value.
func (cc *capsuleClient) startCounter() {
	cc.t.Helper()
	cc.exec(map[string]any{"cmd": counterLoop, "background": true, "tag": "counter"}).
		want(cc.t, "starting the counter", http.StatusAccepted)
	deadline := time.Now().Add(10 * time.Second)
	for cc.counter() == 0 {
		if time.Now().After(deadline) {
			cc.t.Fatal("the counter did not start within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counter reads the counter's last value (0 before it wrote one).
func (cc *capsuleClient) counter() int {
	cc.t.Helper()
	out := strings.TrimSpace(cc.sh("cat /tmp/counter 2>/dev/null || true"))
	if out == "" {
		return 0
	}
	n, err := strconv.Atoi(out)
	if err != nil {
		cc.t.Fatalf("counter file holds %q", out)
	}
	return n
}

// writeData writes 1 MiB of random bytes to path and returns its SHA-256.
func (cc *capsuleClient) writeData(path string) string {
	cc.t.Helper()
	return strings.Fields(cc.sh("head -c 1048576 /dev/urandom > " + path + " && sha256sum " + path))[0]
}

func (cc *capsuleClient) sha256(path string) string {
	cc.t.Helper()
	return strings.Fields(cc.sh("sha256sum " + path))[0]
}

// teamCall sends method+path with body as team tm and reads the answer.
func teamCall(t testing.TB, st *stacktest.Stack, tm stacktest.Team, method, path string, body any) answer {
	t.Helper()
	res := tm.Do(t, st, method, path, body)
	defer func() { _ = res.Body.Close() }()
	return readAnswer(t, res)
}

// testLog writes log lines to the test's output, which shows them when the
// test fails (or with -v), until the test ends: a goroutine of the stack
// that logs later must not make t.Log panic.
type testLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// startStack starts a stack whose warnings and errors (an agent's cause of
// a failed pause, say) appear with the test's failures.
func startStack(t testing.TB, o stacktest.Options) *stacktest.Stack {
	t.Helper()
	l := &testLog{t: t}
	// Registered first, so it runs after the stack's own cleanups.
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	o.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return stacktest.Start(t, o)
}

// dbStatus is the capsule's status as the control plane records it.
func dbStatus(t testing.TB, st *stacktest.Stack, id string) store.Capsule {
	t.Helper()
	c, err := st.Store.GetCapsule(context.Background(), st.Team.ID, id)
	if err != nil {
		t.Fatalf("reading capsule %s: %v", id, err)
	}
	return c
}

// wantConflict fails the test unless a is a 409 whose error names status.
func wantConflict(t testing.TB, what string, a answer, status string) {
	t.Helper()
	e, _ := a.body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	if a.status != http.StatusConflict || e["status"] != status || !strings.Contains(msg, status) {
		t.Errorf("%s: got %d %s, want 409 naming status %s", what, a.status, a.raw, status)
	}
}

// templateNames lists GET /v1/snapshots as name:kind.
func templateNames(t testing.TB, st *stacktest.Stack) []string {
	t.Helper()
	a := teamCall(t, st, st.Team, "GET", "/v1/snapshots", nil).want(t, "listing snapshots", http.StatusOK)
	var out []string
	for _, v := range a.list {
		m, _ := v.(map[string]any)
		out = append(out, fmt.Sprintf("%v:%v", m["name"], m["kind"]))
	}
	return out
}

func postSnapshot(t testing.TB, st *stacktest.Stack, body any) answer {
	t.Helper()
	return teamCall(t, st, st.Team, "POST", "/v1/snapshots", body)
}

func deleteSnapshot(t testing.TB, st *stacktest.Stack, name string) answer {
	t.Helper()
	return teamCall(t, st, st.Team, "DELETE", "/v1/snapshots/"+name, nil)
}

// createFrom creates a capsule from template through the API.
func createFrom(t testing.TB, st *stacktest.Stack, body map[string]any) answer {
	t.Helper()
	return teamCall(t, st, st.Team, "POST", "/v1/capsules", body)
}

// TestLifecycleBadInputStack checks that every wrong pause, resume, ping
// and snapshot call gets a clear 4xx and changes nothing.
func TestLifecycleBadInputStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	cc := newCapsuleClient(t, st)
	base := templateNames(t, st)
	unchanged := func(what, status string) {
		t.Helper()
		if got := dbStatus(t, st, cc.id).Status; got != status {
			t.Errorf("after %s the capsule is %s, want %s", what, got, status)
		}
		if got := templateNames(t, st); !slices.Equal(got, base) {
			t.Errorf("after %s the templates are %v, want %v", what, got, base)
		}
	}

	wantConflict(t, "resume a running capsule", cc.call("POST", "/resume", nil), "running")
	unchanged("resume of a running capsule", "running")
	cc.call("POST", "/ping", nil).want(t, "ping a running capsule", http.StatusOK)

	p := cc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)
	if p.str("status") != "paused" || p.str("paused_at") == "" || p.num("snapshot_bytes") <= 0 {
		t.Errorf("paused capsule: %s", p.raw)
	}
	a := cc.call("POST", "/pause", nil)
	wantConflict(t, "pause a paused capsule", a, "paused")
	if !strings.Contains(string(a.raw), "resume it first") {
		t.Errorf("pause of a paused capsule: %s does not say to resume it", a.raw)
	}
	unchanged("pause of a paused capsule", "paused")
	wantConflict(t, "ping a paused capsule", cc.call("POST", "/ping", nil), "paused")
	unchanged("ping of a paused capsule", "paused")
	cc.exec(map[string]any{"cmd": "true"}).wantError(t, "exec in a paused capsule", http.StatusConflict, "capsule_not_running")

	r := cc.call("POST", "/resume", nil).want(t, "resume", http.StatusOK)
	if r.str("status") != "running" || r.body["paused_at"] != nil || r.num("snapshot_bytes") != 0 {
		t.Errorf("resumed capsule: %s", r.raw)
	}
	unchanged("resume", "running")

	for _, tc := range []struct {
		what   string
		body   any
		status int
		code   string
	}{
		{"invalid name", map[string]any{"capsule_id": cc.id, "name": "Not A Name"}, http.StatusBadRequest, "invalid_request"},
		{"name too long", map[string]any{"capsule_id": cc.id, "name": strings.Repeat("a", 64)}, http.StatusBadRequest, "invalid_request"},
		{"no name", map[string]any{"capsule_id": cc.id}, http.StatusBadRequest, "invalid_request"},
		{"no capsule", map[string]any{"name": "fine"}, http.StatusBadRequest, "invalid_request"},
		{"unknown field", map[string]any{"capsule_id": cc.id, "name": "fine", "size": 1}, http.StatusBadRequest, "invalid_request"},
		{"resume not a bool", map[string]any{"capsule_id": cc.id, "name": "fine", "resume": "yes"}, http.StatusBadRequest, "invalid_request"},
		{"unknown capsule", map[string]any{"capsule_id": uuid.NewString(), "name": "fine"}, http.StatusNotFound, "capsule_not_found"},
		{"capsule id not a uuid", map[string]any{"capsule_id": "nope", "name": "fine"}, http.StatusNotFound, "capsule_not_found"},
		{"base template name", map[string]any{"capsule_id": cc.id, "name": "minimal"}, http.StatusConflict, "name_taken"},
	} {
		postSnapshot(t, st, tc.body).wantError(t, "snapshot: "+tc.what, tc.status, tc.code)
		unchanged("snapshot: "+tc.what, "running")
	}
	other := st.NewTeam(t)
	teamCall(t, st, other, "POST", "/v1/snapshots", map[string]any{"capsule_id": cc.id, "name": "theirs"}).wantError(t, "snapshot of another team's capsule", http.StatusNotFound, "capsule_not_found")

	// A good snapshot, then the same name again.
	s := postSnapshot(t, st, map[string]any{"capsule_id": cc.id, "name": "snap-a"}).want(t, "snapshot", http.StatusCreated)
	if s.str("kind") != "snapshot" || s.str("host_id") != st.HostID || s.str("source_capsule_id") != cc.id {
		t.Errorf("snapshot: %s", s.raw)
	}
	if got := dbStatus(t, st, cc.id).Status; got != "running" {
		t.Errorf("after a snapshot with the default resume, the capsule is %s, want running", got)
	}
	base = templateNames(t, st)
	if !slices.Contains(base, "snap-a:snapshot") || !slices.Contains(base, "minimal:base") {
		t.Errorf("GET /v1/snapshots = %v, want snap-a and the base templates with their kinds", base)
	}
	postSnapshot(t, st, map[string]any{"capsule_id": cc.id, "name": "snap-a"}).wantError(t, "duplicate name", http.StatusConflict, "name_taken")
	unchanged("duplicate snapshot", "running")

	// A capsule from the snapshot takes its sizes only.
	createFrom(t, st, map[string]any{"template": "snap-a", "memory_mb": 512}).
		wantError(t, "snapshot with other memory", http.StatusBadRequest, "invalid_request")
	clone := createFrom(t, st, map[string]any{"template": "snap-a"}).want(t, "capsule from snapshot", http.StatusCreated)
	cloneID := clone.str("id")
	deleteSnapshot(t, st, "snap-a").wantError(t, "delete a snapshot in use", http.StatusConflict, "template_in_use")
	unchanged("delete of a snapshot in use", "running")
	deleteSnapshot(t, st, "minimal").wantError(t, "delete a base template", http.StatusConflict, "conflict")
	deleteSnapshot(t, st, "nothing-here").wantError(t, "delete an unknown snapshot", http.StatusNotFound, "template_not_found")
	deleteSnapshot(t, st, "Bad.Name").wantError(t, "delete a bad name", http.StatusNotFound, "template_not_found")
	unchanged("bad deletes", "running")

	teamCall(t, st, st.Team, "DELETE", "/v1/capsules/"+cloneID, nil).want(t, "destroy clone", http.StatusNoContent)
	deleteSnapshot(t, st, "snap-a").want(t, "delete snapshot", http.StatusNoContent)
	deleteSnapshot(t, st, "snap-a").wantError(t, "delete it again", http.StatusNotFound, "template_not_found")
	if got := templateNames(t, st); slices.Contains(got, "snap-a:snapshot") {
		t.Errorf("after delete GET /v1/snapshots = %v", got)
	}

	// Unknown capsules.
	for _, sub := range []string{"/pause", "/resume", "/ping"} {
		teamCall(t, st, st.Team, "POST", "/v1/capsules/"+uuid.NewString()+sub, nil).
			wantError(t, sub+" of an unknown capsule", http.StatusNotFound, "capsule_not_found")
		teamCall(t, st, other, "POST", cc.path(sub), nil).wantError(t, sub+" of another team's capsule", http.StatusNotFound, "capsule_not_found")
	}

	// Destroyed: nothing can be paused or resumed any more.
	cc.call("DELETE", "", nil).want(t, "destroy", http.StatusNoContent)
	wantConflict(t, "pause a stopped capsule", cc.call("POST", "/pause", nil), "stopped")
	wantConflict(t, "resume a stopped capsule", cc.call("POST", "/resume", nil), "stopped")
	postSnapshot(t, st, map[string]any{"capsule_id": cc.id, "name": "late"}).wantError(t, "snapshot a stopped capsule", http.StatusConflict, "conflict")

	// Audit and metrics saw the operations that succeeded.
	actions := map[string]int{}
	for _, e := range auditLog(t, st).list {
		m, _ := e.(map[string]any)
		actions[fmt.Sprint(m["action"])]++
	}
	for _, a := range []string{"capsule.pause", "capsule.resume", "snapshot.create", "snapshot.delete"} {
		if actions[a] != 1 {
			t.Errorf("audit log has %d %s, want 1", actions[a], a)
		}
	}
	mres, err := http.Get(st.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(mres.Body)
	_ = mres.Body.Close()
	for _, m := range []string{`wrenn_capsule_pause_seconds_count{outcome="ok"} 1`, `wrenn_capsule_resume_seconds_count{outcome="ok"} 1`,
		`wrenn_snapshot_create_seconds_count{outcome="ok"} 1`} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

// TestPauseResumeCyclesStack pauses and resumes one capsule 100 times
// through the API: after every cycle a file is intact and a counter kept in
// a shell's memory has gone on counting.
func TestPauseResumeCyclesStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	cc := newCapsuleClient(t, st)
	sum := cc.writeData("/root/data")
	cc.startCounter()
	last := cc.counter()
	cycles := 100
	if testing.Short() {
		cycles = 10
	}
	start := time.Now()
	for i := range cycles {
		if p := cc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK); p.str("status") != "paused" {
			t.Fatalf("cycle %d: paused capsule is %s", i, p.str("status"))
		}
		if r := cc.call("POST", "/resume", nil).want(t, "resume", http.StatusOK); r.str("status") != "running" {
			t.Fatalf("cycle %d: resumed capsule is %s", i, r.str("status"))
		}
		out := cc.sh("cat /tmp/counter; sha256sum /root/data")
		f := strings.Fields(out)
		if len(f) < 2 {
			t.Fatalf("cycle %d: got %q", i, out)
		}
		n, err := strconv.Atoi(f[0])
		if err != nil || n < last {
			t.Fatalf("cycle %d: counter %q after %d: it must only grow", i, f[0], last)
		}
		if f[1] != sum {
			t.Fatalf("cycle %d: /root/data changed: %s, want %s", i, f[1], sum)
		}
		last = n
	}
	// The loop really is the one started before the first pause: still
	// counting, from where it was.
	time.Sleep(300 * time.Millisecond)
	if n := cc.counter(); n <= last {
		t.Errorf("counter stopped at %d after the cycles", n)
	}
	t.Logf("%d pause/resume cycles in %s", cycles, time.Since(start).Round(time.Millisecond))
}

// TestBackgroundProcessAcrossPauseStack starts a background process, pauses
// and resumes the capsule while it runs, then attaches to it by tag and
// gets its whole output.
func TestBackgroundProcessAcrossPauseStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	cc := newCapsuleClient(t, st)
	cc.exec(map[string]any{"cmd": "for i in $(seq 1 20); do echo line$i; sleep 0.1; done", "background": true, "tag": "job"}).
		want(t, "background", http.StatusAccepted)
	time.Sleep(500 * time.Millisecond)
	cc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)
	cc.call("POST", "/resume", nil).want(t, "resume", http.StatusOK)
	ctx := testCtx(t, 30*time.Second)
	conn, _, err := cc.dial(ctx, "/exec/stream?tag=job")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.CloseNow() }()
	if m := readMsg(t, ctx, conn); m.Type != "start" || m.Tag != "job" {
		t.Fatalf("first message %+v", m)
	}
	out, _, exit := collect(t, ctx, conn)
	var want strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&want, "line%d\n", i)
	}
	if out != want.String() || exit.ExitCode == nil || *exit.ExitCode != 0 {
		t.Errorf("got %q (exit %+v), want every line and exit 0", out, exit)
	}
}

// TestTerminalAcrossPauseStack leaves a terminal open while its capsule is
// paused and resumed, as a dashboard tab does, and opens another after the
// resume: the agent's connection to the old sandbox that still carried the
// first terminal's stream must not be reused for it.
func TestTerminalAcrossPauseStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	cc := newCapsuleClient(t, st)
	ctx := testCtx(t, 60*time.Second)
	open := func(what string) *websocket.Conn {
		t.Helper()
		conn, status, err := cc.dial(ctx, "/pty?cmd="+url.QueryEscape("echo ready; exec cat"))
		if err != nil {
			t.Fatalf("%s: opening a terminal: %v (status %d)", what, err, status)
		}
		if m := readMsg(t, ctx, conn); m.Type != "start" {
			t.Fatalf("%s: first message %+v, want start", what, m)
		}
		var out strings.Builder
		for !strings.Contains(out.String(), "ready") {
			m := readMsg(t, ctx, conn)
			if m.Type != "binary" {
				t.Fatalf("%s: message %+v before the terminal printed ready (got %q)", what, m, out.String())
			}
			out.Write(m.Data)
		}
		return conn
	}
	before := open("before the pause")
	defer func() { _ = before.CloseNow() }()
	cc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)
	cc.call("POST", "/resume", nil).want(t, "resume", http.StatusOK)
	for i := range 3 {
		after := open(fmt.Sprintf("terminal %d after the resume", i+1))
		_ = after.Close(websocket.StatusNormalClosure, "")
	}
}

// TestSnapshotClonesStack snapshots a capsule with a file and a running
// process and starts three capsules from it: each has both, each has its
// own id, address and token, and a change in one is invisible to the
// others.
func TestSnapshotClonesStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	src := newCapsuleClient(t, st)
	sum := src.writeData("/root/data")
	src.startCounter()
	s := postSnapshot(t, st, map[string]any{"capsule_id": src.id, "name": "clones"}).want(t, "snapshot", http.StatusCreated)
	t.Cleanup(func() {
		// The agent keeps templates in the shared test images directory.
		teamCall(t, st, st.Team, "DELETE", "/v1/snapshots/clones", nil)
	})
	if got := dbStatus(t, st, src.id).Status; got != "running" {
		t.Fatalf("source after snapshot is %s, want running", got)
	}
	srcRec, _ := stacktest.FindRecord(t, st.AgentConfig.Dir, src.id)
	ids := map[string]bool{src.id: true}
	addrs := map[string]bool{dbStatus(t, st, src.id).Address: true}
	tokens := map[string]bool{srcRec.Token: true}
	var clones []*capsuleClient
	for i := range 3 {
		a := createFrom(t, st, map[string]any{"template": "clones"}).want(t, "capsule from snapshot", http.StatusCreated)
		if a.str("status") != "running" || a.str("template") != "clones" || int(a.num("memory_mb")) != int(s.num("default_memory_mb")) {
			t.Fatalf("clone %d: %s", i, a.raw)
		}
		cl := &capsuleClient{t: t, st: st, tm: st.Team, id: a.str("id")}
		clones = append(clones, cl)
		rec, ok := stacktest.FindRecord(t, st.AgentConfig.Dir, cl.id)
		if !ok {
			t.Fatalf("the agent has no record of clone %s", cl.id)
		}
		addr := dbStatus(t, st, cl.id).Address
		if ids[cl.id] || addrs[addr] || tokens[rec.Token] || addr == "" || rec.Token == "" {
			t.Errorf("clone %d shares its id, address or token (%s %s)", i, cl.id, addr)
		}
		ids[cl.id], addrs[addr], tokens[rec.Token] = true, true, true
	}
	for i, cl := range clones {
		if got := cl.sha256("/root/data"); got != sum {
			t.Errorf("clone %d: /root/data %s, want %s", i, got, sum)
		}
		// A loaded host may not schedule the loop for a while: it must move
		// within a few seconds, which a process that did not come back never
		// does.
		n1, n2 := cl.counter(), 0
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if n2 = cl.counter(); n2 > n1 {
				break
			}
		}
		if n1 == 0 || n2 <= n1 {
			t.Errorf("clone %d: the counter process does not run (%d, then %d for 5 s)", i, n1, n2)
		}
	}
	clones[0].sh("echo changed > /root/data")
	for i, cl := range append([]*capsuleClient{src}, clones[1:]...) {
		if got := cl.sha256("/root/data"); got != sum {
			t.Errorf("capsule %d sees clone 0's change: %s", i, got)
		}
	}
	for _, cl := range clones {
		cl.call("DELETE", "", nil).want(t, "destroy clone", http.StatusNoContent)
	}
}

// leftoversOf lists what remains on the host of a destroyed capsule whose
// runtime ids were rids.
func leftoversOf(t *testing.T, st *stacktest.Stack, id string, rids []string) []string {
	t.Helper()
	var left []string
	out, err := exec.Command(st.AgentConfig.Runsc, "--root", filepath.Join(st.AgentConfig.Dir, "runsc"), "list").CombinedOutput()
	if err != nil {
		t.Fatalf("runsc list: %v %s", err, out)
	}
	for _, rid := range append([]string{id}, rids...) {
		if strings.Contains(string(out), rid) {
			left = append(left, "runsc container "+rid)
		}
		if _, err := os.Stat(filepath.Join(st.AgentConfig.Dir, "netns", st.AgentConfig.NetworkPrefix+"-"+rid)); err == nil {
			left = append(left, "netns of "+rid)
		}
		if _, err := os.Stat(filepath.Join(st.AgentConfig.Dir, "sandboxes", rid)); err == nil {
			left = append(left, "sandbox dir "+rid)
		}
		if procs := stacktest.ProcessesNaming(t, rid); len(procs) > 0 {
			left = append(left, fmt.Sprintf("processes %v", procs))
		}
	}
	if _, err := os.Stat(filepath.Join(st.AgentConfig.Dir, "snapshots", id)); err == nil {
		left = append(left, "saved state")
	}
	return left
}

// TestConcurrentLifecycleStack fires 50 pause, resume and destroy calls at
// one capsule at once: the final status is what the calls that succeeded
// say, no call gets anything but success or 409, and once destroyed nothing
// of the capsule is left on the host.
func TestConcurrentLifecycleStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	cc := newCapsuleClient(t, st)
	rec, _ := stacktest.FindRecord(t, st.AgentConfig.Dir, cc.id)
	rids := []string{rec.RuntimeID}
	type outcome struct {
		op     string
		status int
		at     time.Time
	}
	var (
		mu   sync.Mutex
		outs []outcome
		wg   sync.WaitGroup
	)
	ops := []string{"pause", "resume"}
	for i := range 50 {
		op := ops[i%2]
		if i >= 45 {
			// The last few destroy, when the others are mostly done.
			op = "destroy"
		}
		wg.Go(func() {
			// Spread over a second, so that some operations finish
			// before others start.
			time.Sleep(time.Duration(i) * 25 * time.Millisecond)
			var a answer
			if op == "destroy" {
				a = cc.call("DELETE", "", nil)
			} else {
				a = cc.call("POST", "/"+op, nil)
			}
			mu.Lock()
			outs = append(outs, outcome{op, a.status, time.Now()})
			mu.Unlock()
			if r, ok := stacktest.FindRecord(t, st.AgentConfig.Dir, cc.id); ok {
				mu.Lock()
				rids = append(rids, r.RuntimeID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(outs, func(a, b outcome) int { return a.at.Compare(b.at) })
	want, destroyed, succeeded := "running", false, 0
	for _, o := range outs {
		switch {
		case o.status == http.StatusConflict:
		case o.op == "destroy" && o.status == http.StatusNoContent:
			destroyed = true
			succeeded++
		case o.op == "pause" && o.status == http.StatusOK:
			want = "paused"
			succeeded++
		case o.op == "resume" && o.status == http.StatusOK:
			want = "running"
			succeeded++
		default:
			t.Errorf("%s answered %d, want success or 409", o.op, o.status)
		}
	}
	if destroyed {
		want = "stopped"
	}
	if got := dbStatus(t, st, cc.id).Status; got != want {
		t.Errorf("final status %s, want %s from the calls that succeeded (%+v)", got, want, outs)
	}
	var seq []string
	for _, o := range outs {
		if o.status != http.StatusConflict {
			seq = append(seq, o.op)
		}
	}
	t.Logf("%d of %d calls succeeded (%v); final %s", succeeded, len(outs), seq, want)
	if !destroyed {
		// The host agrees with the row.
		info, err := st.Capsules.List(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(info, func(c agent.CapsuleInfo) bool { return c.Spec.ID == cc.id })
		if i < 0 || info[i].Status != want {
			t.Errorf("the agent has the capsule as %+v, the control plane as %s", info, want)
		}
		cc.call("DELETE", "", nil).want(t, "destroy at the end", http.StatusNoContent)
	}
	if info, err := st.Capsules.List(t.Context()); err == nil {
		for _, c := range info {
			if c.Spec.ID == cc.id {
				t.Errorf("the agent still lists the capsule as %s", c.Status)
			}
		}
	}
	if left := leftoversOf(t, st, cc.id, rids); len(left) > 0 {
		t.Errorf("left on the host: %v", left)
	}
}

// TestTTLStack checks that the reaper pauses a capsule idle for its
// timeout_sec, and not one that is running a command or has a terminal
// open.
func TestTTLStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ReaperInterval: 200 * time.Millisecond})
	mk := func() *capsuleClient {
		a := createFrom(t, st, map[string]any{"template": "minimal", "timeout_sec": 2}).want(t, "create", http.StatusCreated)
		return &capsuleClient{t: t, st: st, tm: st.Team, id: a.str("id")}
	}
	idle := mk()

	// attached has a terminal open, in which nothing is typed. A terminal
	// opened after the capsule's first 2 s is refused (the reaper paused
	// it first); then another capsule is tried.
	ctx := testCtx(t, 30*time.Second)
	var (
		conn     *websocket.Conn
		attached *capsuleClient
	)
	for attempt := 1; conn == nil; attempt++ {
		attached = mk()
		c, status, err := attached.dial(ctx, "/pty")
		switch {
		case err == nil:
			conn = c
		case status == http.StatusConflict && attempt < 5:
			t.Logf("attempt %d: the capsule was paused before its terminal opened; trying again", attempt)
		default:
			t.Fatal(err)
		}
	}
	defer func() { _ = conn.CloseNow() }()
	if m := readMsg(t, ctx, conn); m.Type != "start" {
		t.Fatalf("terminal: first message %+v", m)
	}

	// busy runs a 5 s command in the foreground: it must stay running
	// throughout, and the command must finish.
	busy, done := startBusy(t, st, 2, "sleep 5; echo done")

	start := time.Now()
	idleSince := dbStatus(t, st, idle.id).LastActiveAt
	var c store.Capsule
	for c = dbStatus(t, st, idle.id); c.Status != "paused"; c = dbStatus(t, st, idle.id) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("idle capsule still %s after 10 s with timeout_sec 2", c.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Both times are the database's.
	if el := c.PausedAt.Sub(idleSince); el < 2*time.Second {
		t.Errorf("idle capsule paused %s after its last activity, before its 2 s timeout", el)
	}
	var a answer
	for a.status == 0 {
		if got := dbStatus(t, st, busy.id).Status; got != "running" {
			t.Errorf("capsule running a command became %s", got)
		}
		if got := dbStatus(t, st, attached.id).Status; got != "running" {
			t.Errorf("capsule with an open terminal became %s", got)
		}
		select {
		case a = <-done:
		case <-time.After(200 * time.Millisecond):
		}
	}
	a.want(t, "the long command", http.StatusOK)
	if a.str("stdout") != "done\n" {
		t.Errorf("long command: %s", a.raw)
	}
	// The reaper's pause is in the audit log as the system's.
	found := false
	for _, e := range auditLog(t, st).list {
		m, _ := e.(map[string]any)
		meta, _ := m["metadata"].(map[string]any)
		if m["action"] == "capsule.pause" && m["actor_type"] == "system" && m["resource_id"] == idle.id && meta["reason"] == "ttl" {
			found = true
		}
	}
	if !found {
		t.Error("no capsule.pause by system with reason ttl in the audit log")
	}
	// And once idle again the busy one is paused too; a resume then
	// counts as activity.
	for dbStatus(t, st, busy.id).Status != "paused" {
		if time.Since(start) > 20*time.Second {
			t.Fatal("busy capsule never paused once idle")
		}
		time.Sleep(100 * time.Millisecond)
	}
	idle.call("POST", "/resume", nil).want(t, "resume", http.StatusOK)
	if got := dbStatus(t, st, idle.id).Status; got != "running" {
		t.Errorf("just resumed capsule is %s", got)
	}
}

// TestHostLossStack silences the agent's heartbeats: its capsules become
// missing; when it heartbeats again they are reconciled from its own list,
// and one destroyed on the host meanwhile becomes stopped.
func TestHostLossStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{HostTimeout: 2 * time.Second, HeartbeatSwitch: true})
	running, paused, gone := newCapsuleClient(t, st), newCapsuleClient(t, st), newCapsuleClient(t, st)
	paused.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)

	st.SetHeartbeats(t, false)
	waitStatus := func(cc *capsuleClient, want string, within time.Duration) store.Capsule {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			c := dbStatus(t, st, cc.id)
			if c.Status == want {
				return c
			}
			if time.Now().After(deadline) {
				t.Fatalf("capsule %s is %s after %s, want %s", cc.id, c.Status, within, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, cc := range []*capsuleClient{running, paused, gone} {
		c := waitStatus(cc, "missing", 15*time.Second)
		if !strings.Contains(c.StatusReason, "since") {
			t.Errorf("missing capsule's reason %q does not say since when", c.StatusReason)
		}
	}
	if h, err := st.Store.Host(t.Context(), st.HostID); err != nil || h.Status != store.HostUnreachable {
		t.Errorf("host is %+v (%v), want unreachable", h.Status, err)
	}
	// Nothing can be done to a missing capsule meanwhile.
	wantConflict(t, "pause a missing capsule", running.call("POST", "/pause", nil), "missing")
	if err := st.Capsules.Destroy(t.Context(), gone.id); err != nil {
		t.Fatal(err)
	}

	st.SetHeartbeats(t, true)
	waitStatus(running, "running", 15*time.Second)
	waitStatus(paused, "paused", 15*time.Second)
	if c := waitStatus(gone, "stopped", 15*time.Second); c.StoppedAt == nil {
		t.Error("reconciled stopped capsule has no stopped_at")
	}
	// The reconciled capsules work.
	if out := running.sh("echo alive"); out != "alive\n" {
		t.Errorf("running capsule after reconcile: %q", out)
	}
	paused.call("POST", "/resume", nil).want(t, "resume after reconcile", http.StatusOK)
}

// TestAgentUnreachableStack pauses a capsule while the control plane
// cannot hear its agent: once when the agent never gets the call, once when
// it pauses the capsule but its answer is lost. Either way the capsule is
// left pausing, the agent's next heartbeat settles it to what it is, and
// nothing of it is lost.
func TestAgentUnreachableStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{AgentSwitch: true})
	cc := newCapsuleClient(t, st)
	sum := cc.writeData("/root/data")
	cc.startCounter()
	settle := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for c := dbStatus(t, st, cc.id); c.Status != want; c = dbStatus(t, st, cc.id) {
			if time.Now().After(deadline) {
				t.Fatalf("capsule is %s (%s), want %s after the agent's heartbeats", c.Status, c.StatusReason, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, tc := range []struct {
		mode stacktest.AgentCalls
		want string
	}{
		{stacktest.AgentCallsRefused, "running"},
		{stacktest.AgentCallsLost, "paused"},
	} {
		before := cc.counter()
		st.SetAgentCalls(t, tc.mode)
		a := cc.call("POST", "/pause", nil)
		wantErr := a.status == http.StatusBadGateway && strings.Contains(string(a.raw), `"status":"pausing"`)
		if !wantErr {
			t.Errorf("pause, agent calls %d: got %d %s, want 502 with status pausing", tc.mode, a.status, a.raw)
		}
		if c := dbStatus(t, st, cc.id); c.Status != "pausing" || !strings.Contains(c.StatusReason, "heartbeat") {
			t.Errorf("after a pause without the agent's answer: %s %q, want pausing, left to the next heartbeat", c.Status, c.StatusReason)
		}
		st.SetAgentCalls(t, stacktest.AgentCallsPass)
		settle(tc.want)
		if tc.want == "paused" {
			cc.call("POST", "/resume", nil).want(t, "resume after the settled pause", http.StatusOK)
		}
		if got := cc.sha256("/root/data"); got != sum {
			t.Errorf("/root/data changed: %s", got)
		}
		if n := cc.counter(); n < before {
			t.Errorf("counter went back from %d to %d", before, n)
		}
	}
	cc.call("POST", "/pause", nil).want(t, "pause with the agent back", http.StatusOK)
}

// TestHostLossDeadSandboxStack: while the host is silent a capsule's
// sandbox dies (as on a host reboot). When the agent heartbeats again it
// reports the capsule stopped and the control plane records it so; then
// nothing of it may stay on the host: a stopped capsule is never destroyed
// again (DELETE of a stopped capsule does not ask the agent), so whatever
// the agent still holds for it (network namespace, address, files, runsc
// state) would be kept for ever.
func TestHostLossDeadSandboxStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{HostTimeout: 2 * time.Second, HeartbeatSwitch: true, AgentSwitch: true})
	cc := newCapsuleClient(t, st)
	rec, _ := stacktest.FindRecord(t, st.AgentConfig.Dir, cc.id)
	st.SetHeartbeats(t, false)
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for c := dbStatus(t, st, cc.id); c.Status != want; c = dbStatus(t, st, cc.id) {
			if time.Now().After(deadline) {
				t.Fatalf("capsule is %s (%s), want %s", c.Status, c.StatusReason, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("missing")
	// The sandbox dies without the agent destroying the capsule.
	if out, err := exec.Command(st.AgentConfig.Runsc, "--root", filepath.Join(st.AgentConfig.Dir, "runsc"),
		"kill", rec.RuntimeID, "KILL").CombinedOutput(); err != nil {
		t.Fatalf("runsc kill: %v %s", err, out)
	}
	// Only once runsc itself calls the sandbox stopped is that what the
	// agent reports.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command(st.AgentConfig.Runsc, "--root", filepath.Join(st.AgentConfig.Dir, "runsc"),
			"state", rec.RuntimeID).CombinedOutput()
		if strings.Contains(string(out), `"stopped"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runsc state after kill: %s", out)
		}
	}
	// The first destroy the control plane asks for does not reach the
	// agent: a later heartbeat must try again.
	st.SetAgentCalls(t, stacktest.AgentCallsRefused)
	st.SetHeartbeats(t, true)
	waitFor("stopped")
	time.Sleep(time.Second)
	if left := leftoversOf(t, st, cc.id, []string{rec.RuntimeID}); len(left) == 0 {
		t.Fatal("the capsule was destroyed on its host though the control plane could not reach it")
	}
	st.SetAgentCalls(t, stacktest.AgentCallsPass)
	cc.call("DELETE", "", nil).want(t, "delete the stopped capsule", http.StatusNoContent)
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := leftoversOf(t, st, cc.id, []string{rec.RuntimeID})
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a capsule reconciled to stopped left on its host: %v", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestTTLShortTimeoutStack: a capsule with timeout_sec 1 that runs a 4 s
// command in the foreground is in use the whole time and must not be
// paused under it. The command keeps touching the capsule every 250 ms,
// but touches less than a second apart used to be dropped, so its
// last_active_at could be more than its 1 s timeout old.
func TestTTLShortTimeoutStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ReaperInterval: 100 * time.Millisecond})
	busy, done := startBusy(t, st, 1, "sleep 4; echo done")
	var got answer
	for got.status == 0 {
		if s := dbStatus(t, st, busy.id).Status; s != "running" {
			t.Fatalf("capsule running a command became %s", s)
		}
		select {
		case got = <-done:
		case <-time.After(50 * time.Millisecond):
		}
	}
	got.want(t, "the long command", http.StatusOK)
	if got.str("stdout") != "done\n" {
		t.Errorf("long command: %s", got.raw)
	}
}

// startBusy creates a capsule with timeout_sec timeout, runs cmd in it in
// the foreground and returns once the control plane has begun the command
// (its first touch moved last_active_at), with the channel of its answer.
// On a loaded host the command may reach the control plane only after the
// capsule's first timeout: the reaper then pauses it first and the command
// is refused with capsule_not_running, which is right but proves nothing,
// so another capsule is tried.
func startBusy(t *testing.T, st *stacktest.Stack, timeout int, cmd string) (*capsuleClient, chan answer) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		a := createFrom(t, st, map[string]any{"template": "minimal", "timeout_sec": timeout}).want(t, "create", http.StatusCreated)
		busy := &capsuleClient{t: t, st: st, tm: st.Team, id: a.str("id")}
		created := dbStatus(t, st, busy.id).LastActiveAt
		done := make(chan answer, 1)
		go func() { done <- busy.exec(map[string]any{"cmd": cmd, "timeout_sec": 30}) }()
		for {
			if dbStatus(t, st, busy.id).LastActiveAt.After(created) {
				return busy, done
			}
			select {
			case got := <-done:
				if got.status == http.StatusConflict && got.code() == "capsule_not_running" && attempt < 5 {
					t.Logf("attempt %d: the capsule was paused before the command reached it; trying again", attempt)
				} else {
					t.Fatalf("the command was answered before it began: %d %s", got.status, got.raw)
				}
			case <-time.After(10 * time.Millisecond):
				continue
			}
			break
		}
	}
}
