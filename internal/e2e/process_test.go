package e2e_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// process is a binary running for a test, its output captured to files
// that are printed when the test fails.
type process struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr string
	done           chan struct{} // closed when the process has exited
	waitErr        error
}

// start runs path with args and exactly the environment env (plus PATH and
// HOME), so that nothing from the developer's shell leaks in.
func start(t *testing.T, name, path string, env map[string]string, args ...string) *process {
	t.Helper()
	dir := t.TempDir()
	p := &process{
		name:   name,
		stdout: filepath.Join(dir, name+".stdout"),
		stderr: filepath.Join(dir, name+".stderr"),
		done:   make(chan struct{}),
	}
	stdout, err := os.Create(p.stdout)
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(p.stderr)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = stdout, stderr
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		_ = stdout.Close()
		_ = stderr.Close()
		close(p.done)
	}()
	shown := make([]string, len(args))
	for i, a := range args {
		shown[i] = a
		if i > 0 && args[i-1] == "--register" {
			shown[i] = "<token>" // keep secrets out of test logs too
		}
	}
	t.Cleanup(func() {
		p.kill()
		// With -v the output is always shown, to see what a passing run
		// looks like from the operator's side.
		if t.Failed() || testing.Verbose() {
			t.Logf("----- %s %s -----\nstdout:\n%s\nstderr:\n%s", name, strings.Join(shown, " "), readFile(p.stdout), readFile(p.stderr))
		}
	})
	return p
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// logs returns everything the process wrote so far.
func (p *process) logs() string {
	return readFile(p.stdout) + readFile(p.stderr)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v", p.name, timeout)
	}
	var exit *exec.ExitError
	if errors.As(p.waitErr, &exit) {
		return exit.ExitCode()
	}
	if p.waitErr != nil {
		t.Fatalf("%s: %v", p.name, p.waitErr)
	}
	return 0
}

// stop sends SIGTERM and expects a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("%s exited %d after SIGTERM, want 0", p.name, code)
	}
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// eventually calls check until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client calls the control plane's REST API as a user.
type client struct {
	t      *testing.T
	base   string
	header http.Header
}

// call sends a JSON request and decodes the answer into out (when not nil).
// It returns the status code.
func (c *client) call(method, path string, in, out any) int {
	c.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			c.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range c.header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading answer: %v", method, path, err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decoding %s: %v", method, path, b, err)
		}
	}
	if resp.StatusCode/100 != 2 {
		c.t.Logf("%s %s → %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// must is call that fails the test unless the answer has status want.
func (c *client) must(want int, method, path string, in, out any) {
	c.t.Helper()
	if got := c.call(method, path, in, out); got != want {
		c.t.Fatalf("%s %s = %d, want %d", method, path, got, want)
	}
}
