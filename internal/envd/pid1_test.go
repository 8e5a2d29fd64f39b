package envd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// startAsInit runs envd as PID 1 of a new PID, mount and UTS namespace.
func startAsInit(t *testing.T) *instance {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: running envd as PID 1 takes new PID, mount and UTS namespaces (unshare --pid --mount --uts)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare from util-linux to run envd as PID 1 of a new PID namespace; it is not in PATH")
	}
	// --kill-child: should the test kill unshare, envd dies with it.
	in := startEnvd(t, []string{unshare, "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--uts"}, "--hostname", "capsule-test", "--shutdown-grace", "3s", "--debug")
	// unshare ignores SIGINT and SIGTERM: stop envd itself (runs before
	// startEnvd's cleanup).
	t.Cleanup(func() {
		select {
		case <-in.exited:
		default:
			if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", in.pid(), in.pid())); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
			}
			select {
			case <-in.exited:
			case <-time.After(10 * time.Second):
			}
		}
	})
	in.Token = "pid1-token"
	if err := in.Client.Init(context.Background(), envdclient.InitRequest{AccessToken: in.Token}); err != nil {
		t.Fatalf("init: %v", err)
	}
	return in
}

// zombies lists the processes in state Z, from `cat /proc/*/stat` run by envd.
func zombies(t *testing.T, in *instance) []string {
	t.Helper()
	r := in.run(t, shell(`cat /proc/[0-9]*/stat 2>/dev/null`))
	var out []string
	for _, line := range strings.Split(r.stdout.String(), "\n") {
		i := strings.LastIndexByte(line, ')')
		if i < 0 || i+2 >= len(line) {
			continue
		}
		if line[i+2] == 'Z' {
			out = append(out, line)
		}
	}
	return out
}

func TestAsPID1ReapsOrphansAndStopsOnSIGTERM(t *testing.T) {
	in := startAsInit(t)
	r := in.run(t, shell(`cat /proc/1/comm; hostname; test -c /dev/null && echo devnull`))
	if got, want := r.stdout.String(), "envd\ncapsule-test\ndevnull\n"; got != want {
		t.Fatalf("inside the namespace: %q, want %q", got, want)
	}

	// Orphans: each inner shell leaves a background sleep and exits, so the
	// sleeps are reparented to envd, which must reap them when they exit.
	r = in.run(t, shell(`for i in 1 2 3 4 5; do sh -c 'sleep 0.2 >/dev/null 2>&1 &'; done; exit 42`))
	if r.end.ExitCode != 42 {
		t.Errorf("own exit status lost to the reaper: exit code %d, want 42", r.end.ExitCode)
	}
	// The orphans are alive now; once they have exited there must be no zombies.
	orphans := in.run(t, shell(`ps_count=0; for s in /proc/[0-9]*/comm; do [ "$(cat $s 2>/dev/null)" = sleep ] && ps_count=$((ps_count+1)); done; echo $ps_count`))
	if n, _ := strconv.Atoi(strings.TrimSpace(orphans.stdout.String())); n == 0 {
		t.Log("orphans already gone before the check; still checking for zombies")
	}
	time.Sleep(500 * time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	var z []string
	for {
		if z = zombies(t, in); len(z) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(z) > 0 {
		t.Errorf("zombies not reaped:\n%s", strings.Join(z, "\n"))
	}
	if !strings.Contains(in.log(), `"msg":"reaped orphan"`) {
		t.Error("envd never reaped an orphan: the orphans were not reparented to it")
	}

	// Exit statuses of many quick processes all reach their callers.
	for i := range 20 {
		if r := in.run(t, shell(fmt.Sprintf("exit %d", i))); r.end.ExitCode != int32(i) {
			t.Errorf("exit %d reported as %d", i, r.end.ExitCode)
		}
	}

	// SIGTERM: envd stops its processes and exits 0 in bounded time.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(cmd("sleep", "1000")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	s.Receive()
	envdPid := childOf(t, in.pid())
	start := time.Now()
	if err := syscall.Kill(envdPid, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM to envd (host pid %d): %v", envdPid, err)
	}
	var end *envdv1.EndEvent
	for s.Receive() {
		if e := s.Msg().Event.GetEnd(); e != nil {
			end = e
		}
	}
	select {
	case <-in.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("envd did not exit within 10s of SIGTERM")
	}
	if in.err != nil {
		t.Errorf("envd exit: %v, want status 0", in.err)
	}
	if end == nil || end.Signal != "SIGTERM" {
		t.Errorf("child end = %v, want ended by SIGTERM", end)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(in.log(), `"msg":"stopped"`) {
		t.Error("envd did not log a clean stop")
	}
}

// childOf returns the only child of pid (unshare's forked child: envd).
func childOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatalf("finding envd under unshare: %v", err)
	}
	fields := bytes.Fields(b)
	if len(fields) != 1 {
		t.Fatalf("unshare has children %q, want one", b)
	}
	child, err := strconv.Atoi(string(fields[0]))
	if err != nil {
		t.Fatal(err)
	}
	return child
}
