package api_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/store"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

func TestExecStack(t *testing.T) {
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)
	before, err := st.Store.GetCapsule(t.Context(), st.Team.ID, cc.id)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("echo", func(t *testing.T) {
		a := cc.exec(map[string]any{"cmd": "echo hello"}).want(t, "echo", http.StatusOK)
		if a.str("stdout") != "hello\n" || a.str("stderr") != "" || a.num("exit_code") != 0 {
			t.Errorf("got %s, want stdout hello, no stderr, exit code 0", a.raw)
		}
		if d, ok := a.body["duration_ms"].(float64); !ok || d < 0 || d > 10000 {
			t.Errorf("duration_ms = %v", a.body["duration_ms"])
		}
		if a.body["truncated"] != false || a.body["timed_out"] != false {
			t.Errorf("got %s, want truncated and timed_out false", a.raw)
		}
	})
	t.Run("args are not a shell line", func(t *testing.T) {
		a := cc.exec(map[string]any{"cmd": "echo", "args": []string{"a  b", "$HOME", ";", "c"}}).want(t, "echo args", http.StatusOK)
		if got := a.str("stdout"); got != "a  b $HOME ; c\n" {
			t.Errorf("stdout %q", got)
		}
	})
	t.Run("exit code and stderr", func(t *testing.T) {
		a := cc.exec(map[string]any{"cmd": "echo out; echo oops >&2; exit 3"}).want(t, "exit 3", http.StatusOK)
		if a.num("exit_code") != 3 || a.str("stdout") != "out\n" || a.str("stderr") != "oops\n" {
			t.Errorf("got %s, want exit 3 with out and oops", a.raw)
		}
	})
	t.Run("envs and cwd", func(t *testing.T) {
		a := cc.exec(map[string]any{"cmd": "echo $GREETING; pwd", "envs": map[string]string{"GREETING": "hi there"}, "cwd": "/etc"}).
			want(t, "envs", http.StatusOK)
		if got := a.str("stdout"); got != "hi there\n/etc\n" {
			t.Errorf("stdout %q", got)
		}
	})
	t.Run("missing executable or cwd", func(t *testing.T) {
		cc.exec(map[string]any{"cmd": "no-such-program", "args": []string{}}).wantError(t, "missing program", http.StatusNotFound, "file_not_found")
		cc.exec(map[string]any{"cmd": "true", "cwd": "/no/such/dir"}).wantError(t, "missing cwd", http.StatusNotFound, "file_not_found")
		cc.exec(map[string]any{"cmd": "true", "user": "nobody-here"}).wantError(t, "unknown user", http.StatusBadRequest, "invalid_request")
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		a := cc.exec(map[string]any{"cmd": "echo before; sleep 30; echo after", "timeout_sec": 1}).want(t, "timeout", http.StatusOK)
		if took := time.Since(start); took > 8*time.Second {
			t.Errorf("took %s, want about 1 s", took)
		}
		if a.body["timed_out"] != true || a.str("stdout") != "before\n" || a.num("exit_code") != -1 || a.str("signal") != "SIGKILL" {
			t.Errorf("got %s, want timed_out, stdout before, exit_code -1, signal SIGKILL", a.raw)
		}
	})
	t.Run("large output is capped", func(t *testing.T) {
		// 20 MiB of "y\n", 30 MiB as JSON ("\n" is two bytes there):
		// 16 MiB of JSON kept, 2/3 of it raw.
		a := cc.exec(map[string]any{"cmd": "yes | head -c 20971520"}).want(t, "large", http.StatusOK)
		if n := len(a.str("stdout")); n < (16<<20)*2/3-2 || n > (16<<20)*2/3+2 || a.body["truncated"] != true || a.num("exit_code") != 0 {
			t.Errorf("got %d bytes, truncated %v, exit %v; want 2/3 of 16 MiB, truncated, 0", n, a.body["truncated"], a.body["exit_code"])
		}
	})
	t.Run("control bytes are capped as JSON", func(t *testing.T) {
		// NUL bytes are six bytes each in JSON ("\u0000"): a cap on raw
		// bytes would answer 96 MiB per stream.
		a := cc.exec(map[string]any{"cmd": "head -c 20971520 /dev/zero; head -c 20971520 /dev/zero >&2"}).want(t, "zeros", http.StatusOK)
		t.Logf("20 MiB of NUL bytes on stdout and stderr: answer of %.1f MiB, %d + %d bytes kept",
			float64(len(a.raw))/(1<<20), len(a.str("stdout")), len(a.str("stderr")))
		if len(a.raw) > 2*(16<<20)+1024 || a.body["truncated"] != true {
			t.Errorf("answer of %d bytes, truncated %v; want at most 2 x 16 MiB, truncated", len(a.raw), a.body["truncated"])
		}
		if n := len(a.str("stdout")); n != (16<<20)/6 {
			t.Errorf("stdout: %d bytes kept, want %d", n, (16<<20)/6)
		}
	})
	t.Run("background, list, kill", func(t *testing.T) {
		a := cc.exec(map[string]any{"cmd": "sleep 300", "background": true, "tag": "sleeper"}).want(t, "background", http.StatusAccepted)
		pid := int(a.num("pid"))
		if pid <= 0 || a.str("tag") != "sleeper" {
			t.Fatalf("got %s, want a pid and tag sleeper", a.raw)
		}
		// The tag is taken while it runs.
		cc.exec(map[string]any{"cmd": "sleep 1", "background": true, "tag": "sleeper"}).wantError(t, "tag in use", http.StatusConflict, "conflict")
		find := func() map[string]any {
			l := cc.call("GET", "/processes", nil).want(t, "list", http.StatusOK)
			for _, p := range l.list {
				if p := p.(map[string]any); int(p["pid"].(float64)) == pid {
					return p
				}
			}
			t.Fatalf("pid %d not listed in %s", pid, l.raw)
			return nil
		}
		if p := find(); p["running"] != true || p["tag"] != "sleeper" || p["exit_code"] != nil {
			t.Errorf("listed as %v, want running with tag sleeper", p)
		}
		cc.call("DELETE", fmt.Sprintf("/processes/%d", pid), nil).want(t, "kill", http.StatusNoContent)
		deadline := time.Now().Add(10 * time.Second)
		for find()["running"] == true {
			if time.Now().After(deadline) {
				t.Fatal("still running 10 s after the kill")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if p := find(); p["signal"] != "SIGKILL" || p["exit_code"] != -1.0 {
			t.Errorf("after kill: %v, want signal SIGKILL, exit_code -1", p)
		}
		cc.call("DELETE", fmt.Sprintf("/processes/%d", pid), nil).wantError(t, "kill again", http.StatusConflict, "conflict")
		cc.call("DELETE", "/processes/999999", nil).wantError(t, "unknown pid", http.StatusNotFound, "process_not_found")

		// SIGTERM on request.
		a = cc.exec(map[string]any{"cmd": "sleep", "args": []string{"300"}, "background": true}).want(t, "background 2", http.StatusAccepted)
		pid = int(a.num("pid"))
		if a.body["tag"] != nil {
			t.Errorf("tag = %v, want null", a.body["tag"])
		}
		cc.call("DELETE", fmt.Sprintf("/processes/%d?signal=term", pid), nil).want(t, "SIGTERM", http.StatusNoContent)
		for find()["running"] == true {
			time.Sleep(50 * time.Millisecond)
		}
		if p := find(); p["signal"] != "SIGTERM" {
			t.Errorf("after SIGTERM: %v", p)
		}
	})
	t.Run("audit names the program only", func(t *testing.T) {
		cc.exec(map[string]any{"cmd": "echo", "args": []string{"s3cret-arg"}, "envs": map[string]string{"TOKEN": "s3cret-env"}}).want(t, "exec", http.StatusOK)
		cc.exec(map[string]any{"cmd": "TOKEN=s3cret-line printenv TOKEN"}).want(t, "exec", http.StatusOK)
		a := auditLog(t, st)
		if strings.Contains(string(a.raw), "s3cret") {
			t.Errorf("the audit log holds a secret: %s", a.raw)
		}
		var programs []string
		for _, e := range a.list {
			e := e.(map[string]any)
			if e["action"] == "capsule.exec" && e["resource_id"] == cc.id {
				programs = append(programs, e["metadata"].(map[string]any)["program"].(string))
			}
		}
		for _, want := range []string{"echo", "printenv", "sleep", "yes"} {
			if !slices.Contains(programs, want) {
				t.Errorf("programs in the audit log %v lack %s", programs, want)
			}
		}
	})
	after, err := st.Store.GetCapsule(t.Context(), st.Team.ID, cc.id)
	if err != nil {
		t.Fatal(err)
	}
	if !after.LastActiveAt.After(before.LastActiveAt) {
		t.Errorf("last_active_at %s did not move from %s", after.LastActiveAt, before.LastActiveAt)
	}
}

// BenchmarkExecTrue measures the round trip of `true` through the REST
// API (p50-ms), and the same exec straight through the agent's envd proxy,
// without the control plane (baseline-p50-ms).
func BenchmarkExecTrue(b *testing.B) {
	st := stacktest.Start(b)
	cc := newCapsuleClient(b, st)
	body := map[string]any{"cmd": "true", "args": []string{}}
	for range 5 { // warm up connections and caches
		cc.exec(body).want(b, "warm-up", http.StatusOK)
	}
	ec := st.Envd(b, cc.id)
	runEnvd := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream, err := ec.Process.Start(ctx, connect.NewRequest(&envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true"}}))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = stream.Close() }()
		for stream.Receive() {
			if stream.Msg().GetEvent().GetEnd() != nil {
				return
			}
		}
		b.Fatalf("stream ended without end: %v", stream.Err())
	}
	for range 5 {
		runEnvd()
	}

	// The REST calls are timed by b.Loop; the baseline runs interleaved
	// with them, so that both see the same machine.
	var api, base []time.Duration
	execTrue := func() {
		t0 := time.Now()
		a := cc.exec(body)
		api = append(api, time.Since(t0))
		if a.status != http.StatusOK || a.num("exit_code") != 0 {
			b.Fatalf("exec true: %d %s", a.status, a.raw)
		}
	}
	baseline := func() {
		t0 := time.Now()
		runEnvd()
		base = append(base, time.Since(t0))
	}
	for b.Loop() {
		execTrue()
		b.StopTimer()
		baseline()
		b.StartTimer()
	}
	// Percentiles need samples even with -benchtime 1x.
	for len(api) < 100 {
		execTrue()
		baseline()
	}
	p50 := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds()) / 1000
	}
	p99 := func(d []time.Duration) float64 { return float64(d[len(d)*99/100].Microseconds()) / 1000 }
	b.ReportMetric(p50(api), "p50-ms")
	b.ReportMetric(p99(api), "p99-ms")
	b.ReportMetric(p50(base), "baseline-p50-ms")
}

// TestCapsuleMetricsStack reads a capsule's metrics: its own limits, and
// the memory a process in it holds; reading them is not activity.
func TestCapsuleMetricsStack(t *testing.T) {
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)
	read := func() answer { return cc.call("GET", "/metrics", nil).want(t, "metrics", http.StatusOK) }
	before, err := st.Store.GetCapsule(t.Context(), st.Team.ID, cc.id)
	if err != nil {
		t.Fatal(err)
	}
	m := read()
	if total := m.num("mem_total_bytes"); total < 200<<20 || total > 300<<20 {
		t.Errorf("mem_total_bytes = %v, want about the capsule's 256 MiB", total)
	}
	if m.num("cpu_count") < 1 || m.str("timestamp") == "" {
		t.Errorf("metrics = %s", m.raw)
	}
	// A process holding 64 MiB shows in mem_used_bytes. (The wait lets the
	// exec's use be recorded: last_active_at is rewritten at most once a
	// second.)
	time.Sleep(1100 * time.Millisecond)
	cc.exec(map[string]any{"cmd": "head -c 67108864 /dev/zero > /dev/shm/fill", "timeout_sec": 30}).want(t, "fill", http.StatusOK)
	if used, was := read().num("mem_used_bytes"), m.num("mem_used_bytes"); used < was+48<<20 {
		t.Errorf("mem_used_bytes went from %v to %v after filling 64 MiB of tmpfs", was, used)
	}
	// An exec records its use just after it answers: wait for that.
	var after store.Capsule
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if after, err = st.Store.GetCapsule(t.Context(), st.Team.ID, cc.id); err != nil {
			t.Fatal(err)
		}
		if after.LastActiveAt.After(before.LastActiveAt) || time.Now().After(deadline) {
			break
		}
	}
	// Past the once-a-second limit, so that a read recorded as use would
	// show.
	time.Sleep(1100 * time.Millisecond)
	read()
	time.Sleep(100 * time.Millisecond) // time for a wrongly recorded use to land
	last, err := st.Store.GetCapsule(t.Context(), st.Team.ID, cc.id)
	if err != nil {
		t.Fatal(err)
	}
	if !last.LastActiveAt.Equal(after.LastActiveAt) || !after.LastActiveAt.After(before.LastActiveAt) {
		t.Errorf("last_active_at: %v, then %v after an exec, then %v after reading metrics; want the exec to count and the read not",
			before.LastActiveAt, after.LastActiveAt, last.LastActiveAt)
	}
}
