package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// browserTimeout bounds the whole browser run (node --test frontend/e2e/).
const browserTimeout = 6 * time.Minute

// TestDashboard drives the web dashboard embedded in a real wrenn-cp with
// Chromium (playwright-core, node's test runner): a user signs up in the
// browser, creates an API key, launches, pauses, resumes, snapshots and
// destroys capsules on a real agent running gVisor capsules. The browser
// scripts live in frontend/e2e/; this test starts the stack and runs them.
//
// It needs what `make test` (scripts/test.sh) prepares: Chromium
// (WRENN_TEST_CHROMIUM), the frontend checkout with its node_modules
// (WRENN_TEST_FRONTEND) and the dashboard built into internal/web/dist
// before the binaries were built. Without them it fails rather than skip:
// a dashboard that is never tested is worse than a red test.
func TestDashboard(t *testing.T) {
	const howTo = "run `make test`, which builds the dashboard and installs Chromium"
	chromium := os.Getenv("WRENN_TEST_CHROMIUM")
	frontend := os.Getenv("WRENN_TEST_FRONTEND")
	if chromium == "" || frontend == "" {
		t.Fatalf("WRENN_TEST_CHROMIUM and WRENN_TEST_FRONTEND must be set (got %q, %q): %s", chromium, frontend, howTo)
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("WRENN_TEST_CHROMIUM: %v: %s", err, howTo)
	}
	if _, err := os.Stat(filepath.Join(frontend, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed in %s/node_modules (%v): %s", frontend, err, howTo)
	}
	// TestMain's `go build` embedded whatever internal/web/dist held.
	if _, err := os.Stat(filepath.Join("..", "web", "dist", "index.html")); err != nil {
		t.Fatalf("internal/web/dist/index.html is missing, so wrenn-cp was built without the dashboard (%v): %s", err, howTo)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: %v: %s", err, howTo)
	}

	out := os.Getenv("WRENN_TEST_OUTPUT_DIR")
	if out == "" {
		// Not t.TempDir: the screenshots must outlive the test.
		if out, err = os.MkdirTemp("", "wrenn-dashboard-"); err != nil {
			t.Fatal(err)
		}
	} else {
		out = filepath.Join(out, "dashboard")
		if err := os.RemoveAll(out); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err = filepath.Abs(out); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshots go to %s", out)

	// The stack's first user (Ada) is the platform admin who registered
	// a regular host, which serves every team: the user who signs up in
	// the browser gets a team of their own and launches capsules on it.
	// No warm pool: each capsule started adds a veth and an address on
	// this machine, and Chromium, which runs here too, aborts requests that
	// are connecting at that moment (net::ERR_NETWORK_CHANGED). Without a
	// pool refilling in the background, that happens only when the tests
	// launch a capsule. (A user's browser is on another machine.)
	u := startUserStackWith(t, map[string]string{"WRENN_WARM_POOL": "0"})

	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "e2e/")
	cmd.Dir = frontend
	cmd.Env = append(os.Environ(),
		"WRENN_URL=http://"+u.cpAddr,
		"WRENN_ADMIN_API_KEY="+u.api.header.Get("X-Api-Key"),
		"WRENN_ADMIN_EMAIL="+adaEmail,
		"WRENN_ADMIN_PASSWORD="+adaPassword,
		"WRENN_TEST_CHROMIUM="+chromium,
		"WRENN_TEST_OUTPUT="+out,
		"NO_COLOR=1", "FORCE_COLOR=0",
	)
	// node and Chromium run in a process group of their own, so that the
	// time limit takes all of them down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var logged sync.WaitGroup
	logged.Add(1)
	go func() {
		defer logged.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
		for sc.Scan() {
			t.Log("browser: " + sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	began := time.Now()
	t.Logf("running node --test e2e/ in %s against http://%s", frontend, u.cpAddr)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	err = cmd.Wait()
	_ = pw.Close()
	logged.Wait()
	// Whatever happened, nothing of the browser run may outlive the test.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	t.Logf("browser tests took %v; screenshots in %s", time.Since(began).Round(time.Second), out)
	if ctx.Err() != nil {
		t.Fatalf("the browser tests did not finish within %v", browserTimeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("the browser tests failed (node exited %d); see the browser: lines above and the screenshots in %s", exit.ExitCode(), out)
	} else if err != nil {
		t.Fatalf("running node: %v", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) == 0 {
		t.Errorf("the browser tests took no screenshots in %s", out)
	} else {
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Logf("screenshots: %s", strings.Join(names, " "))
	}
}
