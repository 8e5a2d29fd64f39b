package e2e_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
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
	u := startUserStack(t)
	// Chromium runs in a network namespace of its own and reaches the
	// control plane through a veth: every capsule started on this machine
	// (by these tests or by the other packages' tests running alongside)
	// adds a veth and an address here, and a browser that sees the
	// machine's addresses change fails the requests it is connecting at
	// that moment (net::ERR_NETWORK_CHANGED). A user's browser runs on
	// another machine.
	browser, baseURL := isolatedBrowser(t, chromium, u.cpAddr)

	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "e2e/")
	cmd.Dir = frontend
	cmd.Env = append(os.Environ(),
		"WRENN_URL="+baseURL,
		"WRENN_ADMIN_API_KEY="+u.api.header.Get("X-Api-Key"),
		"WRENN_ADMIN_EMAIL="+adaEmail,
		"WRENN_ADMIN_PASSWORD="+adaPassword,
		"WRENN_TEST_CHROMIUM="+browser,
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
	t.Logf("running node --test e2e/ in %s against %s", frontend, baseURL)
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

// isolatedBrowser makes a network namespace joined to this one by a veth
// pair with a /30 of its own, relays the veth's host-side address to the
// control plane at target (which listens on loopback), and writes a
// script that runs chromium in the namespace. It returns the script and
// the control plane's URL as seen from the namespace. All of it goes when
// the test ends.
func isolatedBrowser(t *testing.T, chromium, target string) (browser, baseURL string) {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("wrenn-browser-%x", b)
	hostIf, nsIf := fmt.Sprintf("wb%xh", b), fmt.Sprintf("wb%xn", b)
	// 10.255.0.0/16, outside the capsule pools tests use (10.208.0.0/12).
	hostIP := fmt.Sprintf("10.255.%d.%d", b[0], b[1]&0xfc|1)
	nsIP := fmt.Sprintf("10.255.%d.%d", b[0], b[1]&0xfc|2)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostIf).Run()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	ip("link", "set", nsIf, "netns", name)
	ip("addr", "add", hostIP+"/30", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	ip("-n", name, "addr", "add", nsIP+"/30", "dev", nsIf)
	ip("-n", name, "link", "set", nsIf, "up")
	ip("-n", name, "link", "set", "lo", "up")

	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relayConn(c, target)
		}
	}()

	browser = filepath.Join(t.TempDir(), "chromium-in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", name, chromium)
	if err := os.WriteFile(browser, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return browser, "http://" + ln.Addr().String()
}

// relayConn copies c to a new connection to target and back until either
// side closes.
func relayConn(c net.Conn, target string) {
	defer func() { _ = c.Close() }()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer func() { _ = up.Close() }()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}
