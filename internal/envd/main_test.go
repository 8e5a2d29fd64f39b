package envd_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
)

// envdBin is the envd binary built for this test run.
var envdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	envdBin = filepath.Join(dir, "envd")
	build := exec.Command("go", "build", "-o", envdBin, "github.com/wrenn-dev/wrenn/cmd/envd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("ENVD_TEST_RACE") == "1" {
		// Build envd itself with the race detector (needs cgo).
		build.Args = []string{"go", "build", "-race", "-o", envdBin, "github.com/wrenn-dev/wrenn/cmd/envd"}
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building envd:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// instance is one running envd.
type instance struct {
	t      testing.TB
	cmd    *exec.Cmd
	URL    string
	Token  string
	Client *envdclient.Client
	logMu  sync.Mutex
	logs   strings.Builder
	exited chan struct{}
	err    error
}

// startEnvd starts envd on a free loopback port, with prefix (e.g. unshare)
// before the binary, and waits until it listens. It does not call /init.
func startEnvd(t testing.TB, prefix []string, args ...string) *instance {
	t.Helper()
	argv := append(append(append([]string{}, prefix...), envdBin, "--addr", "127.0.0.1", "--port", "0"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting envd: %v", err)
	}
	in := &instance{t: t, cmd: cmd, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			in.logMu.Lock()
			in.logs.WriteString(line + "\n")
			in.logMu.Unlock()
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "envd listening" {
				addr <- rec.Addr
			}
		}
		in.err = cmd.Wait()
		close(in.exited)
	}()
	t.Cleanup(func() {
		if in.stop() && in.err != nil {
			t.Errorf("envd exited with %v after SIGINT, want status 0", in.err)
		}
		if t.Failed() {
			t.Logf("envd log:\n%s", in.log())
		}
	})
	select {
	case a := <-addr:
		in.URL = "http://" + a
	case <-in.exited:
		t.Fatalf("envd exited before listening: %v\n%s", in.err, in.log())
	case <-time.After(15 * time.Second):
		t.Fatalf("envd did not start listening\n%s", in.log())
	}
	in.Client = envdclient.New(in.URL, "")
	t.Cleanup(in.Client.Close)
	return in
}

// newEnvd starts envd and initializes it with a fresh token.
func newEnvd(t testing.TB, args ...string) *instance {
	t.Helper()
	return initEnvd(t, startEnvd(t, nil, args...))
}

// initEnvd gives a started envd its access token, as the agent does.
func initEnvd(t testing.TB, in *instance) *instance {
	t.Helper()
	in.Token = "test-token-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := in.Client.Init(context.Background(), envdclient.InitRequest{AccessToken: in.Token}); err != nil {
		t.Fatalf("init: %v", err)
	}
	return in
}

func (in *instance) log() string {
	in.logMu.Lock()
	defer in.logMu.Unlock()
	return in.logs.String()
}

func (in *instance) pid() int { return in.cmd.Process.Pid }

// stop sends SIGINT and waits, killing envd after 10 s. It reports whether
// envd stopped by itself because of the signal.
func (in *instance) stop() bool {
	select {
	case <-in.exited:
		return false
	default:
	}
	_ = in.cmd.Process.Signal(os.Interrupt)
	select {
	case <-in.exited:
		return true
	case <-time.After(10 * time.Second):
		in.t.Errorf("envd did not stop within 10s of SIGINT")
		_ = in.cmd.Process.Kill()
		<-in.exited
		return false
	}
}

// rss returns the resident set size of pid in bytes.
func rss(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading rss: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parsing VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in status")
	return 0
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func initReq(token string) envdclient.InitRequest { return envdclient.InitRequest{AccessToken: token} }
