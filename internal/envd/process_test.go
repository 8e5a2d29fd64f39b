package envd_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// result is what a process stream delivered.
type result struct {
	pid     uint32
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	pty     bytes.Buffer
	dropped uint64
	end     *envdv1.EndEvent
}

// eventStream is the common shape of Start and Connect streams.
type eventStream interface {
	Receive() bool
	Err() error
	Close() error
}

func collectEvents(t testing.TB, s eventStream, event func() *envdv1.ProcessEvent) *result {
	t.Helper()
	defer func() { _ = s.Close() }()
	r := &result{}
	for s.Receive() {
		r.add(event())
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if r.end == nil {
		t.Fatal("stream ended without an end event")
	}
	return r
}

func (r *result) add(ev *envdv1.ProcessEvent) {
	switch e := ev.Event.(type) {
	case *envdv1.ProcessEvent_Start:
		r.pid = e.Start.Pid
	case *envdv1.ProcessEvent_Data:
		r.stdout.Write(e.Data.GetStdout())
		r.stderr.Write(e.Data.GetStderr())
		r.pty.Write(e.Data.GetPty())
	case *envdv1.ProcessEvent_Dropped:
		r.dropped += e.Dropped.Bytes
	case *envdv1.ProcessEvent_End:
		r.end = e.End
	}
}

// run starts a process and collects its whole stream.
func (in *instance) run(t testing.TB, req *envdv1.StartRequest) *result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	return collectEvents(t, s, func() *envdv1.ProcessEvent { return s.Msg().Event })
}

func cmd(name string, args ...string) *envdv1.StartRequest {
	return &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: name, Args: args}}
}

func shell(script string) *envdv1.StartRequest {
	return &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Shell: script}}
}

func TestStartStreamsOutputAndExitCode(t *testing.T) {
	in := newEnvd(t)
	r := in.run(t, shell(`echo out; echo err >&2; exit 7`))
	if got := r.stdout.String(); got != "out\n" {
		t.Errorf("stdout = %q, want %q", got, "out\n")
	}
	if got := r.stderr.String(); got != "err\n" {
		t.Errorf("stderr = %q, want %q", got, "err\n")
	}
	if r.end.ExitCode != 7 || !r.end.Exited {
		t.Errorf("end = %v, want exit code 7, exited", r.end)
	}
	if r.pid == 0 {
		t.Error("no start event with a pid")
	}
}

func TestStartEnvCwdAndUser(t *testing.T) {
	in := newEnvd(t)
	dir := t.TempDir()
	req := cmd("sh", "-c", `echo "$FOO $PWD $HOME"; id -un`)
	req.Process.Envs = map[string]string{"FOO": "bar"}
	req.Process.Cwd = dir
	r := in.run(t, req)
	if want := "bar " + dir + " /root\nroot\n"; r.stdout.String() != want {
		t.Errorf("stdout = %q, want %q", r.stdout.String(), want)
	}

	req = cmd("id", "-un")
	req.Process.User = "nobody"
	req.Process.Cwd = "/"
	r = in.run(t, req)
	if got := r.stdout.String(); got != "nobody\n" {
		t.Errorf("as nobody: id -un = %q, want nobody", got)
	}
}

func TestSignalEndsProcess(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := cmd("sleep", "60")
	req.Tag = "sleeper"
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Receive() || s.Msg().Event.GetStart() == nil {
		t.Fatalf("first event is not start: %v", s.Err())
	}
	_, err = in.Client.Process.SendSignal(ctx, connect.NewRequest(&envdv1.SendSignalRequest{
		Process: &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Tag{Tag: "sleeper"}},
		Signal:  envdv1.Signal_SIGNAL_SIGKILL,
	}))
	if err != nil {
		t.Fatalf("send signal: %v", err)
	}
	r := collectEvents(t, s, func() *envdv1.ProcessEvent { return s.Msg().Event })
	if r.end.Signal != "SIGKILL" || r.end.Exited || r.end.ExitCode != -1 {
		t.Errorf("end = %v, want killed by SIGKILL", r.end)
	}

	list, err := in.Client.Process.List(ctx, connect.NewRequest(&envdv1.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range list.Msg.Processes {
		if p.Tag == "sleeper" {
			found = true
			if p.Running || p.Signal != "SIGKILL" || p.Cmd != "sleep" {
				t.Errorf("list entry = %v, want finished sleep killed by SIGKILL", p)
			}
		}
	}
	if !found {
		t.Error("finished process missing from List")
	}
}

func TestHundredConcurrentProcesses(t *testing.T) {
	in := newEnvd(t)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each writes 200 numbered lines with its own id, to stdout and stderr.
			script := fmt.Sprintf(`i=0; while [ $i -lt 200 ]; do echo "p%d line $i"; echo "e%d line $i" >&2; i=$((i+1)); done; exit %d`, i, i, i%256)
			r := in.run(t, shell(script))
			var wantOut, wantErr strings.Builder
			for j := range 200 {
				fmt.Fprintf(&wantOut, "p%d line %d\n", i, j)
				fmt.Fprintf(&wantErr, "e%d line %d\n", i, j)
			}
			switch {
			case r.stdout.String() != wantOut.String():
				errs <- fmt.Errorf("process %d: stdout mixed or incomplete (%d bytes, want %d)", i, r.stdout.Len(), wantOut.Len())
			case r.stderr.String() != wantErr.String():
				errs <- fmt.Errorf("process %d: stderr mixed or incomplete", i)
			case r.end.ExitCode != int32(i%256):
				errs <- fmt.Errorf("process %d: exit code %d", i, r.end.ExitCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestStdinStreamingToCat(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := cmd("cat")
	req.Stdin = true
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Receive() {
		t.Fatal(s.Err())
	}
	pid := s.Msg().Event.GetStart().GetPid()
	sel := &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: pid}}

	var want bytes.Buffer
	in2 := in.Client.Process.StreamInput(ctx)
	for i := range 1000 {
		chunk := fmt.Appendf(nil, "chunk %d %s\n", i, strings.Repeat("x", i%100))
		want.Write(chunk)
		msg := &envdv1.StreamInputRequest{Data: chunk}
		if i == 0 {
			msg.Process = sel
		}
		if err := in2.Send(msg); err != nil {
			t.Fatalf("stream input: %v", err)
		}
	}
	if _, err := in2.CloseAndReceive(); err != nil {
		t.Fatalf("closing input stream: %v", err)
	}
	if _, err := in.Client.Process.SendInput(ctx, connect.NewRequest(&envdv1.SendInputRequest{Process: sel, Data: []byte("last\n")})); err != nil {
		t.Fatalf("send input: %v", err)
	}
	want.WriteString("last\n")
	if _, err := in.Client.Process.CloseStdin(ctx, connect.NewRequest(&envdv1.CloseStdinRequest{Process: sel})); err != nil {
		t.Fatalf("close stdin: %v", err)
	}
	r := collectEvents(t, s, func() *envdv1.ProcessEvent { return s.Msg().Event })
	if !bytes.Equal(r.stdout.Bytes(), want.Bytes()) {
		t.Errorf("cat echoed %d bytes, want %d identical", r.stdout.Len(), want.Len())
	}
	if r.end.ExitCode != 0 {
		t.Errorf("cat exit code %d", r.end.ExitCode)
	}
}

func TestPtySession(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := cmd("sh")
	req.Process.Envs = map[string]string{"PS1": "wrenn$ "}
	req.Pty = &envdv1.Pty{Rows: 24, Cols: 80}
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *envdv1.ProcessEvent, 1024)
	go func() {
		defer close(events)
		for s.Receive() {
			events <- s.Msg().Event
		}
	}()
	first := <-events
	sel := &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: first.GetStart().GetPid()}}
	var screen bytes.Buffer
	waitFor := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !strings.Contains(screen.String(), want) {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("stream ended waiting for %q; screen %q", want, screen.String())
				}
				screen.Write(ev.GetData().GetPty())
			case <-deadline:
				t.Fatalf("timed out waiting for %q; screen %q", want, screen.String())
			}
		}
	}
	send := func(s string) {
		t.Helper()
		if _, err := in.Client.Process.SendInput(ctx, connect.NewRequest(&envdv1.SendInputRequest{Process: sel, Data: []byte(s)})); err != nil {
			t.Fatalf("send input: %v", err)
		}
	}
	waitFor("wrenn$ ")
	send("echo hi\n")
	// The terminal echoes the command line, then sh prints the output.
	waitFor("echo hi\r\nhi\r\n")

	if _, err := in.Client.Process.Update(ctx, connect.NewRequest(&envdv1.UpdateRequest{Process: sel, Pty: &envdv1.Pty{Rows: 40, Cols: 132}})); err != nil {
		t.Fatalf("resize: %v", err)
	}
	waitFor("hi\r\nwrenn$ ")
	screen.Reset()
	send("stty size\n")
	waitFor("40 132")

	send("exit 3\n")
	for ev := range events {
		if end := ev.GetEnd(); end != nil {
			if end.ExitCode != 3 {
				t.Errorf("exit code %d, want 3", end.ExitCode)
			}
			return
		}
	}
	t.Fatalf("no end event: %v", s.Err())
}

func TestReconnect(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	// The process prints, waits for a file, prints more, waits again, ends.
	script := fmt.Sprintf(`echo before; while [ ! -e %[1]s/go1 ]; do sleep 0.02; done; echo during; touch %[1]s/printed; while [ ! -e %[1]s/go2 ]; do sleep 0.02; done; echo after`, dir)
	req := shell(script)
	req.Tag = "job"
	sctx, scancel := context.WithCancel(ctx)
	s, err := in.Client.Process.Start(sctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	r := &result{}
	for r.stdout.String() != "before\n" && s.Receive() {
		r.add(s.Msg().Event)
	}
	// Disconnect mid-stream.
	scancel()
	_ = s.Close()
	touch(t, dir+"/go1")
	// Wait until "during" has been printed while nobody listened.
	waitUntil(t, func() bool {
		_, err := os.Stat(dir + "/printed")
		return err == nil
	})

	// Reconnect by pid while it runs: replay, then live.
	c, err := in.Client.Process.Connect(ctx, connect.NewRequest(&envdv1.ConnectRequest{
		Process: &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: r.pid}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	byPid := &result{}
	for byPid.stdout.String() != "before\nduring\n" {
		if !c.Receive() {
			t.Fatalf("connect stream ended early: %v (got %q)", c.Err(), byPid.stdout.String())
		}
		byPid.add(c.Msg().Event)
	}
	touch(t, dir+"/go2")
	for c.Receive() {
		byPid.add(c.Msg().Event)
	}
	if byPid.stdout.String() != "before\nduring\nafter\n" || byPid.end == nil || byPid.end.ExitCode != 0 {
		t.Errorf("by pid: stdout %q end %v, want everything and exit 0", byPid.stdout.String(), byPid.end)
	}

	// Reconnect by tag after it finished: the whole output and the end.
	c2, err := in.Client.Process.Connect(ctx, connect.NewRequest(&envdv1.ConnectRequest{
		Process: &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Tag{Tag: "job"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	byTag := collectEvents(t, c2, func() *envdv1.ProcessEvent { return c2.Msg().Event })
	if byTag.stdout.String() != "before\nduring\nafter\n" || byTag.dropped != 0 || byTag.pid != r.pid {
		t.Errorf("by tag: stdout %q dropped %d pid %d, want everything from pid %d", byTag.stdout.String(), byTag.dropped, byTag.pid, r.pid)
	}
}

func TestReconnectReportsDroppedOutput(t *testing.T) {
	in := newEnvd(t)
	// 3 MiB of output through a 1 MiB buffer: the oldest 2 MiB are dropped.
	const total = 3 << 20
	req := cmd("head", "-c", fmt.Sprint(total), "/dev/zero")
	req.Tag = "big"
	first := in.run(t, req)
	if first.stdout.Len()+int(first.dropped) != total {
		t.Errorf("start stream: %d bytes + %d dropped, want %d", first.stdout.Len(), first.dropped, total)
	}
	ctx := context.Background()
	c, err := in.Client.Process.Connect(ctx, connect.NewRequest(&envdv1.ConnectRequest{
		Process: &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Tag{Tag: "big"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var sawDroppedFirst bool
	r := &result{}
	for c.Receive() {
		ev := c.Msg().Event
		if ev.GetDropped() != nil && r.stdout.Len() == 0 {
			sawDroppedFirst = true
		}
		r.add(ev)
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	if !sawDroppedFirst || r.dropped == 0 {
		t.Fatalf("no dropped marker before the replay (dropped %d)", r.dropped)
	}
	if r.stdout.Len() < 1<<20 || r.stdout.Len() > total {
		t.Errorf("replayed %d bytes, want between 1 MiB and %d", r.stdout.Len(), total)
	}
	if uint64(r.stdout.Len())+r.dropped != total {
		t.Errorf("replayed %d + dropped %d != %d", r.stdout.Len(), r.dropped, total)
	}
}

func TestStartErrors(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *envdv1.StartRequest
		code connect.Code
	}{
		{"no process", &envdv1.StartRequest{}, connect.CodeInvalidArgument},
		{"missing command", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Args: []string{"x"}}}, connect.CodeInvalidArgument},
		{"cmd and shell", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", Shell: "true"}}, connect.CodeInvalidArgument},
		{"unknown command", cmd("no-such-command-xyz"), connect.CodeNotFound},
		{"missing executable path", cmd("/no/such/bin"), connect.CodeNotFound},
		{"relative command path", cmd("./x"), connect.CodeInvalidArgument},
		{"nonexistent cwd", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", Cwd: "/no/such/dir"}}, connect.CodeNotFound},
		{"relative cwd", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", Cwd: "tmp"}}, connect.CodeInvalidArgument},
		{"cwd is a file", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", Cwd: "/etc/passwd"}}, connect.CodeInvalidArgument},
		{"nonexistent user", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", User: "no-such-user"}}, connect.CodeInvalidArgument},
		{"cwd forbidden to user", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", User: "nobody", Cwd: "/root"}}, connect.CodePermissionDenied},
		{"zero pty size", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "sh"}, Pty: &envdv1.Pty{}}, connect.CodeInvalidArgument},
		{"huge pty size", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "sh"}, Pty: &envdv1.Pty{Rows: 1 << 20, Cols: 80}}, connect.CodeInvalidArgument},
		{"bad env name", &envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true", Envs: map[string]string{"A=B": "c"}}}, connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := in.Client.Process.Start(ctx, connect.NewRequest(tc.req))
			if err == nil {
				for s.Receive() {
				}
				err = s.Err()
			}
			if got := connect.CodeOf(err); got != tc.code {
				t.Errorf("code = %v (%v), want %v", got, err, tc.code)
			}
		})
	}
	sel := func(pid uint32) *envdv1.ProcessSelector {
		return &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: pid}}
	}
	done := in.run(t, cmd("true"))
	for _, tc := range []struct {
		name string
		call func() error
		code connect.Code
	}{
		{"connect unknown pid", func() error {
			s, err := in.Client.Process.Connect(ctx, connect.NewRequest(&envdv1.ConnectRequest{Process: sel(999999)}))
			if err == nil {
				s.Receive()
				err = s.Err()
			}
			return err
		}, connect.CodeNotFound},
		{"connect without selector", func() error {
			s, err := in.Client.Process.Connect(ctx, connect.NewRequest(&envdv1.ConnectRequest{}))
			if err == nil {
				s.Receive()
				err = s.Err()
			}
			return err
		}, connect.CodeInvalidArgument},
		{"input to ended process", func() error {
			_, err := in.Client.Process.SendInput(ctx, connect.NewRequest(&envdv1.SendInputRequest{Process: sel(done.pid), Data: []byte("x")}))
			return err
		}, connect.CodeFailedPrecondition},
		{"signal ended process", func() error {
			_, err := in.Client.Process.SendSignal(ctx, connect.NewRequest(&envdv1.SendSignalRequest{Process: sel(done.pid), Signal: envdv1.Signal_SIGNAL_SIGTERM}))
			return err
		}, connect.CodeFailedPrecondition},
		{"unspecified signal", func() error {
			_, err := in.Client.Process.SendSignal(ctx, connect.NewRequest(&envdv1.SendSignalRequest{Process: sel(done.pid)}))
			return err
		}, connect.CodeInvalidArgument},
		{"resize without pty", func() error {
			_, err := in.Client.Process.Update(ctx, connect.NewRequest(&envdv1.UpdateRequest{Process: sel(done.pid), Pty: &envdv1.Pty{Rows: 1, Cols: 1}}))
			return err
		}, connect.CodeFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := connect.CodeOf(tc.call()); got != tc.code {
				t.Errorf("code = %v, want %v", got, tc.code)
			}
		})
	}
	// envd is still fine.
	if r := in.run(t, cmd("echo", "alive")); r.stdout.String() != "alive\n" {
		t.Errorf("after bad input: %q", r.stdout.String())
	}
}

func TestDuplicateRunningTagRefused(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := cmd("sleep", "30")
	req.Tag = "dup"
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	s.Receive()
	s2, err := in.Client.Process.Start(ctx, connect.NewRequest(req))
	if err == nil {
		s2.Receive()
		err = s2.Err()
	}
	if connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("second start with a running tag: %v, want already_exists", err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Errorf("not a connect error: %v", err)
	}
}

func touch(t testing.TB, path string) {
	t.Helper()
	if err := writeFile(path, nil); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPtyHungUpWhenItsStreamGoes: a terminal whose starting stream goes away
// before it ends (a closed client, or a connection a pause cut) gets SIGHUP,
// and SIGKILL if it ignores that; a process without a PTY runs on (see
// TestReconnect).
func TestPtyHungUpWhenItsStreamGoes(t *testing.T) {
	in := newEnvd(t)
	// envd started with SIGHUP ignored (nohup, or a CI runner that does
	// the same): its processes must still start with the default, or a
	// terminal's shell would outlive its hangup.
	nohup := initEnvd(t, startEnvd(t, []string{"nohup"}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		name, script, signal string
		in                   *instance
	}{
		{"a shell", "", "SIGHUP", in},
		{"a shell, envd started under nohup", "", "SIGHUP", nohup},
		{"one that ignores SIGHUP", "trap '' HUP; echo trapped; while :; do sleep 0.05; done", "SIGKILL", in},
	} {
		in := c.in
		t.Run(c.name, func(t *testing.T) {
			req := cmd("sh")
			if c.script != "" {
				req = shell(c.script)
			}
			req.Pty = &envdv1.Pty{Rows: 24, Cols: 80}
			sctx, scancel := context.WithCancel(ctx)
			s, err := in.Client.Process.Start(sctx, connect.NewRequest(req))
			if err != nil {
				t.Fatal(err)
			}
			if !s.Receive() || s.Msg().Event.GetStart() == nil {
				t.Fatalf("no start event: %v", s.Err())
			}
			pid := s.Msg().Event.GetStart().GetPid()
			// The stream goes only once the script has set its trap (a
			// SIGHUP before that ends it like the plain shell).
			if c.script != "" {
				var screen strings.Builder
				for !strings.Contains(screen.String(), "trapped") {
					if !s.Receive() {
						t.Fatalf("the script ended before it set its trap: %v (output %q)", s.Err(), screen.String())
					}
					screen.Write(s.Msg().Event.GetData().GetPty())
				}
			}
			scancel()
			_ = s.Close()
			var got *envdv1.ProcessInfo
			waitUntil(t, func() bool {
				l, err := in.Client.Process.List(ctx, connect.NewRequest(&envdv1.ListRequest{}))
				if err != nil {
					t.Fatal(err)
				}
				for _, p := range l.Msg.GetProcesses() {
					if p.GetPid() == pid {
						got = p
					}
				}
				return got != nil && !got.GetRunning()
			})
			if got.GetSignal() != c.signal {
				t.Errorf("the terminal ended with %v, want %s", got, c.signal)
			}
		})
	}
}
