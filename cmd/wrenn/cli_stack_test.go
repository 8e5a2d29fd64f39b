package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// user runs the CLI like a user with a given environment would.
type user struct {
	t   *testing.T
	env map[string]string
}

// result is one invocation's outcome.
type result struct {
	stdout, stderr string
	code           int
}

// in returns u reporting to t (a subtest).
func (u user) in(t *testing.T) user { u.t = t; return u }

// run calls the CLI's run with args and stdin.
func (u user) run(stdin string, args ...string) result {
	u.t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := run(ctx, args, func(k string) string { return u.env[k] }, strings.NewReader(stdin), &out, &errOut)
	return result{out.String(), errOut.String(), code}
}

// ok runs args and fails the test unless they exit 0.
func (u user) ok(args ...string) result {
	u.t.Helper()
	r := u.run("", args...)
	if r.code != 0 {
		u.t.Fatalf("wrenn %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// failsWith runs args and checks the exit code and a one-line error that
// contains want.
func (u user) failsWith(code int, want string, args ...string) {
	u.t.Helper()
	r := u.run("", args...)
	if r.code != code || !strings.Contains(r.stderr, want) || strings.Count(strings.TrimSuffix(r.stderr, "\n"), "\n") > 1 {
		u.t.Errorf("wrenn %s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
}

func TestCLIStack(t *testing.T) {
	st := stacktest.Start(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "cfg", "config.json")
	u := user{t: t, env: map[string]string{
		"WRENN_API_KEY": st.Team.APIKey, "WRENN_BASE_URL": st.URL, "WRENN_CONFIG": cfgPath, "HOME": dir,
	}}
	sdk, err := wrenn.New(wrenn.WithAPIKey(st.Team.APIKey), wrenn.WithBaseURL(st.URL))
	if err != nil {
		t.Fatal(err)
	}
	tag := uuid.NewString()[:8]

	t.Run("login", func(t *testing.T) {
		anon := user{t: t, env: map[string]string{"WRENN_CONFIG": cfgPath, "HOME": dir}}
		r := anon.run("wrn_wrong\n", "login", "--base-url", st.URL)
		if r.code != 1 || !strings.Contains(r.stderr, "unauthenticated") {
			t.Errorf("login with a wrong key: exit %d, %q", r.code, r.stderr)
		}
		if _, err := os.Stat(cfgPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed login wrote the config: %v", err)
		}
		anon.failsWith(1, "no API key", "template", "ls")
		r = anon.run(st.Team.APIKey+"\n", "login", "--base-url", st.URL)
		if r.code != 0 || !strings.Contains(r.stdout, cfgPath) {
			t.Fatalf("login: exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		fi, err := os.Stat(cfgPath)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("config file: %v, mode %v; want 0600", err, fi.Mode())
		}
		// Without WRENN_API_KEY and WRENN_BASE_URL, the stored login is used.
		if r := anon.ok("template", "ls"); !strings.Contains(r.stdout, "minimal") {
			t.Errorf("template ls after login: %q", r.stdout)
		}
	})

	// capsule create
	var created wrenn.Capsule
	r := u.ok("capsule", "create", "--json", "--template", "minimal", "--timeout", "0", "--env", "GREETING=hi there", "--meta", "suite="+tag)
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil || created.Status != "running" || created.Metadata["suite"] != tag {
		t.Fatalf("capsule create --json printed %q (%v)", r.stdout, err)
	}
	id := created.ID
	t.Cleanup(func() { _ = sdk.DestroyCapsule(context.Background(), id) })

	t.Run("capsule ls and get", func(t *testing.T) {
		u := u.in(t)
		r := u.ok("capsule", "ls")
		if !strings.HasPrefix(r.stdout, "ID") || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "running") {
			t.Errorf("capsule ls:\n%s", r.stdout)
		}
		var list []wrenn.Capsule
		r = u.ok("--json", "capsule", "ls", "--meta", "suite="+tag)
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].ID != id {
			t.Errorf("capsule ls --json --meta: %q (%v)", r.stdout, err)
		}
		r = u.ok("capsule", "ls", "--json", "--status", "paused", "--meta", "suite="+tag)
		if strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("capsule ls --status paused: %q; want []", r.stdout)
		}
		r = u.ok("capsule", "get", id)
		if !strings.Contains(r.stdout, "status") || !strings.Contains(r.stdout, "running") || !strings.Contains(r.stdout, "meta suite") {
			t.Errorf("capsule get:\n%s", r.stdout)
		}
		u.failsWith(1, "capsule_not_found", "capsule", "get", uuid.NewString())
		u.failsWith(2, "unknown command", "capsule", "explode")
		u.failsWith(2, "unknown command", "frobnicate")
	})

	t.Run("exec", func(t *testing.T) {
		u := u.in(t)
		r := u.run("", "exec", id, "--", "echo $GREETING; echo oops >&2; exit 7")
		if r.stdout != "hi there\n" || r.stderr != "oops\n" || r.code != 7 {
			t.Errorf("exec shell line: %+v; want stdout, stderr and exit 7", r)
		}
		if r := u.ok("exec", id, "--", "echo", "a  b", "$HOME"); r.stdout != "a  b $HOME\n" {
			t.Errorf("exec argv: %q", r.stdout)
		}
		if r := u.run("piped in\nsecond\n", "exec", "-i", id, "--", "cat"); r.code != 0 || r.stdout != "piped in\nsecond\n" {
			t.Errorf("exec -i cat: %+v", r)
		}
		r = u.run("", "exec", "--json", id, "--", "echo out; exit 3")
		var res wrenn.ExecResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.ExitCode != 3 || res.Stdout != "out\n" || r.code != 3 {
			t.Errorf("exec --json: %+v (%v)", r, err)
		}
		if r := u.run("", "exec", id, "--", "kill -TERM $$"); r.code != 128+15 {
			t.Errorf("exec of a command killed by SIGTERM: exit %d, want 143", r.code)
		}
		r = u.ok("exec", "-d", "--tag", "bg-"+tag, id, "--", "sleep 0.3; echo bg; exit 4")
		pid := strings.TrimSpace(r.stdout)
		if _, err := strconv.Atoi(pid); err != nil {
			t.Fatalf("exec -d printed %q, not a pid", r.stdout)
		}
		if r := u.ok("ps", id); !strings.Contains(r.stdout, pid) || !strings.Contains(r.stdout, "bg-"+tag) {
			t.Errorf("ps lacks pid %s tag bg-%s:\n%s", pid, tag, r.stdout)
		}
		if r := u.run("", "attach", id, "bg-"+tag); r.stdout != "bg\n" || r.code != 4 {
			t.Errorf("attach by tag: %+v; want bg and exit 4", r)
		}
		if r := u.run("", "attach", id, pid); r.stdout != "bg\n" || r.code != 4 {
			t.Errorf("attach by pid (replayed): %+v; want bg and exit 4", r)
		}
		pid = strings.TrimSpace(u.ok("exec", "-d", id, "--", "sleep 60").stdout)
		u.ok("kill", "--signal", "SIGTERM", id, pid)
		var procs []wrenn.ProcessInfo
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := json.Unmarshal([]byte(u.ok("ps", "--json", id).stdout), &procs); err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(procs, func(p wrenn.ProcessInfo) bool { return strconv.Itoa(int(p.PID)) == pid })
			if i >= 0 && !procs[i].Running {
				if procs[i].Signal == nil || *procs[i].Signal != "SIGTERM" {
					t.Errorf("killed process: %+v; want ended by SIGTERM", procs[i])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %s still running (or gone) after kill: %+v", pid, procs)
			}
			time.Sleep(100 * time.Millisecond)
		}
		u.failsWith(1, "process_not_found", "attach", id, "999999")
		if r := u.ok("version"); !strings.HasPrefix(r.stdout, "wrenn ") {
			t.Errorf("version: %q", r.stdout)
		}
		u.failsWith(1, "file_not_found", "exec", "--json", id, "--", "/no/such/program", "x")
		// The stream names it process_not_found (see the issue note).
		u.failsWith(1, "/no/such/program: not found", "exec", id, "--", "/no/such/program", "x")
	})

	t.Run("cp and ls", func(t *testing.T) {
		u := u.in(t)
		const size = 100 << 20
		local := filepath.Join(dir, "big.bin")
		f, err := os.Create(local)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{3}), size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		want := stacktest.FileSum(t, local)
		start := time.Now()
		r := u.ok("cp", "--progress", local, id+":/var/tmp/cli/")
		if !strings.Contains(r.stderr, "100.0 MiB / 100.0 MiB  100%") {
			t.Errorf("cp --progress printed %q", r.stderr)
		}
		up := time.Since(start)
		res, err := sdk.Exec(context.Background(), id, wrenn.Command{Cmd: "sha256sum /var/tmp/cli/big.bin"})
		if err != nil || !strings.HasPrefix(res.Stdout, want) {
			t.Fatalf("in the capsule: %+v, %v; want sha256 %s", res, err, want)
		}
		back := filepath.Join(dir, "back")
		if err := os.Mkdir(back, 0o755); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		u.ok("cp", id+":/var/tmp/cli/big.bin", back)
		if got := stacktest.FileSum(t, filepath.Join(back, "big.bin")); got != want {
			t.Errorf("downloaded sha256 %s, want %s", got, want)
		}
		t.Logf("wrenn cp 100 MiB: up %v, down %v", up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

		if r := u.run("from stdin", "cp", "-", id+":/var/tmp/cli/small.txt"); r.code != 0 {
			t.Fatalf("cp - : %+v", r)
		}
		if r := u.ok("cp", id+":/var/tmp/cli/small.txt", "-"); r.stdout != "from stdin" {
			t.Errorf("cp to stdout: %q", r.stdout)
		}
		r = u.ok("ls", id+":/var/tmp/cli")
		if !strings.Contains(r.stdout, "big.bin") || !strings.Contains(r.stdout, "104857600") || !strings.Contains(r.stdout, "small.txt") {
			t.Errorf("ls:\n%s", r.stdout)
		}
		u.failsWith(1, "file_not_found", "cp", id+":/var/tmp/cli/none", filepath.Join(dir, "none"))
		if _, err := os.Stat(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed download left a file: %v", err)
		}
		u.failsWith(1, "capsule_not_found", "cp", local, uuid.NewString()+":/tmp/x")
		u.failsWith(2, "exactly one", "cp", local, filepath.Join(dir, "y"))
	})

	t.Run("shell through a pseudo-terminal", func(t *testing.T) {
		bin := filepath.Join(dir, "wrenn")
		build := exec.Command("go", "build", "-o", bin, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		cmd := exec.Command(bin, "shell", id)
		cmd.Env = []string{"WRENN_API_KEY=" + st.Team.APIKey, "WRENN_BASE_URL=" + st.URL, "HOME=" + dir}
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tty.Close() }()
		out := make(chan []byte, 64)
		go func() {
			for {
				b := make([]byte, 4096)
				n, err := tty.Read(b)
				if n > 0 {
					out <- b[:n]
				}
				if err != nil {
					close(out)
					return
				}
			}
		}()
		var seen []byte
		waitFor := func(s string) {
			t.Helper()
			deadline := time.After(30 * time.Second)
			for !bytes.Contains(seen, []byte(s)) {
				select {
				case b, ok := <-out:
					if !ok {
						t.Fatalf("the terminal closed before %q; saw %q", s, seen)
					}
					seen = append(seen, b...)
				case <-deadline:
					t.Fatalf("no %q on the terminal; saw %q", s, seen)
				}
			}
		}
		_, _ = tty.WriteString("stty size; echo hi-$((6*7))\r")
		waitFor("hi-42")
		if !bytes.Contains(seen, []byte("30 100")) {
			t.Errorf("the remote terminal did not start at 100x30: %q", seen)
		}
		if err := pty.Setsize(tty, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // SIGWINCH → resize message
		_, _ = tty.WriteString("stty size\r")
		waitFor("40 120")
		_, _ = tty.WriteString("exit 3\r")
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Errorf("wrenn shell ended with %v; want exit status 3", err)
		}

		// wrenn login at a terminal prompts and does not echo the key.
		cfg2 := filepath.Join(dir, "cfg2", "config.json")
		login := exec.Command(bin, "login", "--base-url", st.URL)
		login.Env = []string{"WRENN_CONFIG=" + cfg2, "HOME=" + dir}
		ltty, err := pty.Start(login)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = ltty.Close() }()
		prompt := make([]byte, 256)
		if n, err := io.ReadAtLeast(ltty, prompt, len("API key")); err != nil || !bytes.Contains(prompt[:n], []byte("API key")) {
			t.Fatalf("login prompt: %q, %v", prompt[:n], err)
		}
		_, _ = ltty.WriteString(st.Team.APIKey + "\r")
		var shown bytes.Buffer
		_, _ = io.Copy(&shown, ltty) // until the program exits (EIO)
		if err := login.Wait(); err != nil {
			t.Fatalf("login at a terminal: %v; printed %q", err, shown.String())
		}
		if strings.Contains(shown.String(), st.Team.APIKey) || !strings.Contains(shown.String(), "logged in") {
			t.Errorf("login at a terminal printed %q; want no key, and logged in",
				strings.ReplaceAll(shown.String(), st.Team.APIKey, "<the key>"))
		}
		if fi, err := os.Stat(cfg2); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("config after a terminal login: %v", err)
		}

		// The real binary passes a command's exit status on as its own.
		ex := exec.Command(bin, "exec", id, "--", "echo real; exit 42")
		ex.Env = cmd.Env
		b, err := ex.Output()
		if !errors.As(err, &ee) || ee.ExitCode() != 42 || string(b) != "real\n" {
			t.Errorf("wrenn exec as a process: %q, %v; want real and exit 42", b, err)
		}

		// Ctrl-C (SIGINT to wrenn) is passed on to the command.
		ex = exec.Command(bin, "exec", id, "--", "trap 'echo got-int; exit 9' INT; echo ready; sleep 30 & wait")
		ex.Env = cmd.Env
		stdout, err := ex.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := ex.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		if n, err := io.ReadAtLeast(stdout, buf, len("ready\n")); err != nil || string(buf[:n]) != "ready\n" {
			t.Fatalf("before the interrupt: %q, %v", buf[:n], err)
		}
		if err := ex.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(stdout)
		err = ex.Wait()
		if !errors.As(err, &ee) || ee.ExitCode() != 9 || string(rest) != "got-int\n" {
			t.Errorf("after SIGINT: output %q, %v; want got-int and exit 9", rest, err)
		}
	})

	t.Run("ports", func(t *testing.T) {
		u := u.in(t)
		// busybox httpd goes to the background by itself.
		u.ok("exec", id, "--", "mkdir -p /www && echo hello-port > /www/index.html && httpd -p 8080 -h /www")
		var ports []wrenn.Port
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			r := u.ok("port", "ls", "--json", id)
			if err := json.Unmarshal([]byte(r.stdout), &ports); err != nil {
				t.Fatalf("port ls --json: %q (%v)", r.stdout, err)
			}
			if slices.ContainsFunc(ports, func(p wrenn.Port) bool { return p.Port == 8080 && p.Listening }) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("port ls never showed 8080 listening: %+v", ports)
			}
		}
		if r := u.ok("port", "ls", id); !strings.HasPrefix(r.stdout, "PORT") || !strings.Contains(r.stdout, "8080") {
			t.Errorf("port ls:\n%s", r.stdout)
		}
		get := func(url string) (int, string) {
			t.Helper()
			res, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = res.Body.Close() }()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(b)
		}
		signed := strings.TrimSpace(u.ok("port", "url", "--ttl", "10m", id, "8080").stdout)
		if code, body := get(signed); code != http.StatusOK || !strings.Contains(body, "hello-port") {
			t.Errorf("the signed URL %s answered %d %q", signed, code, body)
		}
		plain := strings.TrimSpace(u.ok("port", "public", id, "8080").stdout)
		if code, body := get(plain); code != http.StatusOK || !strings.Contains(body, "hello-port") {
			t.Errorf("the public port %s answered %d %q", plain, code, body)
		}
		u.ok("port", "private", id, "8080")
		if code, _ := get(plain); code != http.StatusUnauthorized {
			t.Errorf("the port made private again answered %d without credentials, want 401", code)
		}
		u.failsWith(2, "not a port", "port", "url", id, "http")
		u.failsWith(1, "forbidden", "port", "url", id, "49983")
	})

	t.Run("pause, resume, snapshot", func(t *testing.T) {
		u := u.in(t)
		if r := u.ok("capsule", "pause", id); r.stdout != id+" paused\n" {
			t.Errorf("pause: %q", r.stdout)
		}
		u.failsWith(1, "capsule_not_running", "exec", id, "--", "true")
		u.failsWith(1, "conflict", "capsule", "pause", id)
		if r := u.ok("capsule", "resume", id); r.stdout != id+" running\n" {
			t.Errorf("resume: %q", r.stdout)
		}
		name := "cli-snap-" + tag
		if r := u.ok("snapshot", "create", id, name); r.stdout != name+"\n" {
			t.Errorf("snapshot create: %q", r.stdout)
		}
		u.failsWith(1, "name_taken", "snapshot", "create", id, name)
		r := u.ok("snapshot", "ls")
		if !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, id) || strings.Contains(r.stdout, "minimal") {
			t.Errorf("snapshot ls (only snapshots):\n%s", r.stdout)
		}
		var ts []wrenn.Template
		r = u.ok("template", "ls", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &ts); err != nil || len(ts) < 2 {
			t.Errorf("template ls --json: %q (%v)", r.stdout, err)
		}
		u.ok("snapshot", "rm", name)
		u.failsWith(1, "template_not_found", "snapshot", "rm", name)
	})

	t.Run("template build", func(t *testing.T) {
		u := u.in(t)
		name := "cli-built-" + tag
		recipe := `{"base": "minimal", "steps": [{"run": "echo made by the cli > /root/made"}]}`
		r := u.run(recipe, "template", "build", "--recipe", "-", name)
		if r.code != 0 || r.stdout != name+"\n" || !strings.Contains(r.stderr, "step 2/3: RUN echo made by the cli") {
			t.Fatalf("template build: %d %q %q", r.code, r.stdout, r.stderr)
		}
		defer u.ok("snapshot", "rm", name)
		// The same in YAML.
		r = u.run("base: minimal\nsteps:\n  - run: echo made from yaml > /root/made\n", "template", "build", "--recipe", "-", name+"-yaml")
		if r.code != 0 || r.stdout != name+"-yaml\n" || !strings.Contains(r.stderr, "step 2/3: RUN echo made from yaml") {
			t.Fatalf("template build from YAML: %d %q %q", r.code, r.stdout, r.stderr)
		}
		defer u.ok("snapshot", "rm", name+"-yaml")
		r = u.run(`{"base": "minimal", "steps": [{"run": "echo broken >&2; exit 4"}]}`, "template", "build", "--recipe", "-", name+"-bad")
		if r.code != 1 || !strings.Contains(r.stderr, "exit code 4") || !strings.Contains(r.stderr, "broken") {
			t.Errorf("failing template build: %d %q %q", r.code, r.stdout, r.stderr)
		}
		u.failsWith(2, "want one of --recipe FILE, --image FILE or --from REF", "template", "build", name)
	})

	t.Run("rm", func(t *testing.T) {
		u := u.in(t)
		if r := u.ok("capsule", "rm", id); r.stdout != id+"\n" {
			t.Errorf("capsule rm: %q", r.stdout)
		}
		var c wrenn.Capsule
		r := u.ok("capsule", "get", "--json", id)
		if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || c.Status != "stopped" {
			t.Errorf("after rm: %q (%v)", r.stdout, err)
		}
		if r := u.ok("capsule", "ls", "--meta", "suite="+tag); strings.Contains(r.stdout, id) {
			t.Errorf("capsule ls shows the stopped capsule without --all:\n%s", r.stdout)
		}
		if r := u.ok("capsule", "ls", "--all", "--meta", "suite="+tag); !strings.Contains(r.stdout, id) {
			t.Errorf("capsule ls --all lacks the stopped capsule:\n%s", r.stdout)
		}
	})
}
