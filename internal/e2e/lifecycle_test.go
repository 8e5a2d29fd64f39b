package e2e_test

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// execResult is POST /exec's answer.
type execResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exit_code"`
}

func (u *userStack) exec(t *testing.T, capsuleID, cmd string) execResult {
	t.Helper()
	var out execResult
	u.api.must(http.StatusOK, "POST", "/v1/capsules/"+capsuleID+"/exec", map[string]any{"cmd": cmd, "timeout_sec": 30}, &out)
	if out.ExitCode != 0 {
		t.Fatalf("%q exited %d: %s", cmd, out.ExitCode, out.Stderr)
	}
	return out
}

// restartAgent starts the agent again (no registration: it has its
// credential) and waits until it answers and has sent a heartbeat.
func (u *userStack) restartAgent(t *testing.T) {
	t.Helper()
	began := time.Now()
	u.agent = start(t, "wrenn-agent", bin.agent, u.agentEnv)
	u.waitHeartbeatAfter(t, began)
}

// waitHeartbeatAfter waits until the agent, started at began, answers and
// has sent a heartbeat.
func (u *userStack) waitHeartbeatAfter(t *testing.T, began time.Time) {
	t.Helper()
	eventually(t, 30*time.Second, "the restarted agent heartbeats and answers", func() error {
		if u.agent.exited() {
			t.Fatalf("wrenn-agent exited:\n%s", u.agent.logs())
		}
		var h hostView
		u.api.must(http.StatusOK, "GET", "/v1/hosts/"+u.hostID, nil, &h)
		if h.Status != "online" || h.LastHeartbeatAt == nil || h.LastHeartbeatAt.Before(began) {
			return errorString("no heartbeat since the restart; host is " + h.Status)
		}
		conn, err := net.DialTimeout("tcp", u.agentEnv["WRENN_HOST_LISTEN_ADDR"], time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// TestAgentKilledMidPause kills the agent with SIGKILL while it pauses a
// capsule, at several points of the pause, and starts it again. Each time
// the capsule must come out running or paused — never lost, never paused
// without a saved state to resume from — with its file and its in-memory
// counter intact.
func TestAgentKilledMidPause(t *testing.T) {
	u := startUserStack(t)
	var c struct {
		ID string `json:"id"`
	}
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal", "timeout_sec": 0}, &c)
	loop := `setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done' </dev/null >/dev/null 2>&1 &`
	sum := strings.Fields(u.exec(t, c.ID, loop+" head -c 4194304 /dev/urandom > /root/data; sha256sum /root/data").Stdout)[0]
	counter := func() int {
		n, err := strconv.Atoi(strings.TrimSpace(u.exec(t, c.ID, "cat /tmp/counter").Stdout))
		if err != nil {
			t.Fatalf("reading the counter: %v", err)
		}
		return n
	}
	last := counter()

	outcomes := map[string]int{}
	for round, delay := range []time.Duration{0, 30, 60, 90, 120, 150, 200, 300, 450, 600} {
		delay *= time.Millisecond
		answered := make(chan int, 1)
		go func() {
			req, _ := http.NewRequest("POST", u.api.base+"/v1/capsules/"+c.ID+"/pause", nil)
			for k, v := range u.api.header {
				req.Header[k] = v
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				answered <- 0
				return
			}
			_ = res.Body.Close()
			answered <- res.StatusCode
		}()
		time.Sleep(delay)
		if err := u.agent.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-u.agent.done
		code := <-answered
		u.restartAgent(t)

		var got struct {
			Status       string `json:"status"`
			StatusReason string `json:"status_reason"`
		}
		eventually(t, 30*time.Second, "the capsule settles", func() error {
			u.api.must(http.StatusOK, "GET", "/v1/capsules/"+c.ID, nil, &got)
			if got.Status != "running" && got.Status != "paused" {
				return fmt.Errorf("capsule is %s (%s)", got.Status, got.StatusReason)
			}
			return nil
		})
		if code == http.StatusOK && got.Status != "paused" {
			t.Fatalf("round %d: the pause was acknowledged but the capsule is %s", round, got.Status)
		}
		outcomes[fmt.Sprintf("answered %d, then %s", code, got.Status)]++
		if got.Status == "paused" {
			u.api.must(http.StatusOK, "POST", "/v1/capsules/"+c.ID+"/resume", nil, nil)
		}
		if s := strings.Fields(u.exec(t, c.ID, "sha256sum /root/data").Stdout)[0]; s != sum {
			t.Fatalf("round %d (killed after %v): /root/data changed", round, delay)
		}
		n := counter()
		if n < last {
			t.Fatalf("round %d (killed after %v): the counter went back from %d to %d", round, delay, last, n)
		}
		last = n
	}
	t.Logf("outcomes of the pauses the agent was killed in: %v", outcomes)
}

// TestControlPlaneKilled kills the control plane with SIGKILL while one
// capsule runs and another is paused, and starts it again: nothing changes
// for either. The running one answers at once, the paused one resumes with
// its file.
func TestControlPlaneKilled(t *testing.T) {
	u := startUserStack(t)
	var running, paused struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, &running)
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, &paused)
	u.exec(t, running.ID, "echo one > /root/f")
	u.exec(t, paused.ID, "echo two > /root/f")
	u.api.must(http.StatusOK, "POST", "/v1/capsules/"+paused.ID+"/pause", nil, nil)

	if err := u.cp.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-u.cp.done
	u.cp = startControlPlane(t, u.dbURL, u.cpAddr)

	for id, want := range map[string]string{running.ID: "running", paused.ID: "paused"} {
		var got struct {
			Status string `json:"status"`
		}
		u.api.must(http.StatusOK, "GET", "/v1/capsules/"+id, nil, &got)
		if got.Status != want {
			t.Errorf("after the control plane's restart capsule %s is %s, want %s", id, got.Status, want)
		}
	}
	if out := u.exec(t, running.ID, "cat /root/f").Stdout; out != "one\n" {
		t.Errorf("the running capsule's file = %q", out)
	}
	u.api.must(http.StatusOK, "POST", "/v1/capsules/"+paused.ID+"/resume", nil, nil)
	if out := u.exec(t, paused.ID, "cat /root/f").Stdout; out != "two\n" {
		t.Errorf("the resumed capsule's file = %q", out)
	}
}
