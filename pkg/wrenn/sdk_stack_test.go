package wrenn_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/pkg/wrenn"
)

// newClient returns an SDK client for the stack's first team.
func newClient(t testing.TB, st *stacktest.Stack) *wrenn.Client {
	t.Helper()
	c, err := wrenn.New(wrenn.WithAPIKey(st.Team.APIKey), wrenn.WithBaseURL(st.URL))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newCapsule creates a minimal capsule destroyed when the test ends.
func newCapsule(t testing.TB, c *wrenn.Client, spec wrenn.CapsuleSpec) *wrenn.Capsule {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	capsule, err := c.CreateCapsule(ctx, spec)
	if err != nil {
		t.Fatalf("CreateCapsule: %v", err)
	}
	t.Cleanup(func() {
		if err := c.DestroyCapsule(context.Background(), capsule.ID); err != nil {
			t.Errorf("destroying capsule %s: %v", capsule.ID, err)
		}
	})
	return capsule
}

// patternReader yields n pseudo-random bytes and hashes what it yields.
type patternReader struct {
	rng  *rand.ChaCha8
	left int64
	sum  hash.Hash
}

func newPatternReader(n int64) *patternReader {
	return &patternReader{rng: rand.NewChaCha8([32]byte{7}), left: n, sum: sha256.New()}
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, _ := r.rng.Read(p)
	r.sum.Write(p[:n])
	r.left -= int64(n)
	return n, nil
}

func TestSDKStack(t *testing.T) {
	st := stacktest.Start(t)
	c := newClient(t, st)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	tag := uuid.NewString()[:8]
	capsule := newCapsule(t, c, wrenn.CapsuleSpec{
		Template: "minimal", VCPUs: 1, MemoryMB: 256, TimeoutSec: wrenn.Seconds(0),
		Envs: map[string]string{"GREETING": "hello sdk"}, Metadata: map[string]string{"suite": tag},
	})
	if capsule.Status != wrenn.StatusRunning || capsule.Template != "minimal" || capsule.VCPUs != 1 ||
		capsule.MemoryMB != 256 || capsule.TimeoutSec != 0 || capsule.Metadata["suite"] != tag {
		t.Fatalf("created %+v", capsule)
	}

	t.Run("get and list", func(t *testing.T) {
		got, err := c.GetCapsule(ctx, capsule.ID)
		if err != nil || got.ID != capsule.ID || got.Status != wrenn.StatusRunning {
			t.Fatalf("GetCapsule = %+v, %v", got, err)
		}
		page, err := c.ListCapsules(ctx, wrenn.ListOptions{Metadata: map[string]string{"suite": tag}})
		if err != nil || len(page.Capsules) != 1 || page.Capsules[0].ID != capsule.ID || page.NextCursor != nil {
			t.Fatalf("ListCapsules(metadata) = %+v, %v", page, err)
		}
		all, err := c.ListAllCapsules(ctx, wrenn.ListOptions{Statuses: []string{"paused"}, Limit: 1})
		if err != nil || len(all) != 0 {
			t.Fatalf("ListAllCapsules(paused) = %v, %v; want none", all, err)
		}
		if _, err := c.PingCapsule(ctx, capsule.ID); err != nil {
			t.Fatalf("PingCapsule: %v", err)
		}
		m, err := c.CapsuleMetrics(ctx, capsule.ID)
		if err != nil || m.CPUCount < 1 || m.MemTotalBytes == 0 {
			t.Fatalf("CapsuleMetrics = %+v, %v", m, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := c.GetCapsule(ctx, uuid.NewString())
		var e *wrenn.Error
		if !errors.Is(err, wrenn.ErrNotFound) || !errors.As(err, &e) || e.Code != "capsule_not_found" || e.StatusCode != 404 {
			t.Fatalf("GetCapsule(unknown) = %v; want a 404 capsule_not_found", err)
		}
		bad, err := wrenn.New(wrenn.WithAPIKey("wrn_not-a-key"), wrenn.WithBaseURL(st.URL))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.ListTemplates(ctx); !errors.Is(err, wrenn.ErrUnauthenticated) {
			t.Fatalf("a wrong key got %v; want ErrUnauthenticated", err)
		}
		_, err = c.CreateCapsule(ctx, wrenn.CapsuleSpec{Template: "no-such-template"})
		if !wrenn.IsCode(err, "template_not_found") || !errors.Is(err, wrenn.ErrNotFound) {
			t.Fatalf("CreateCapsule(no such template) = %v", err)
		}
	})

	t.Run("exec", func(t *testing.T) {
		res, err := c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "echo $GREETING; echo oops >&2; exit 3"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Stdout != "hello sdk\n" || res.Stderr != "oops\n" || res.ExitCode != 3 {
			t.Fatalf("Exec = %+v", res)
		}
		res, err = c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "echo", Args: []string{"a  b", "$HOME"}, Cwd: "/tmp"})
		if err != nil || res.Stdout != "a  b $HOME\n" || res.ExitCode != 0 {
			t.Fatalf("Exec(args) = %+v, %v", res, err)
		}
		res, err = c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "sleep 10", TimeoutSec: 1})
		if err != nil || !res.TimedOut || res.ExitCode != -1 || res.Signal != "SIGKILL" {
			t.Fatalf("Exec(timeout) = %+v, %v", res, err)
		}
	})

	t.Run("background and attach", func(t *testing.T) {
		bg, err := c.ExecBackground(ctx, capsule.ID, wrenn.Command{
			Cmd: "for i in 1 2 3; do echo line-$i; sleep 0.2; done; echo done >&2", Tag: "job-" + tag,
		})
		if err != nil || bg.PID == 0 || bg.Tag == nil || *bg.Tag != "job-"+tag {
			t.Fatalf("ExecBackground = %+v, %v", bg, err)
		}
		procs, err := c.ListProcesses(ctx, capsule.ID)
		if err != nil || !slices.ContainsFunc(procs, func(p wrenn.ProcessInfo) bool { return p.PID == bg.PID }) {
			t.Fatalf("ListProcesses = %+v, %v; want pid %d", procs, err, bg.PID)
		}
		var out, errOut bytes.Buffer
		p, err := c.Attach(ctx, capsule.ID, 0, "job-"+tag, wrenn.StreamHandlers{
			OnStdout: func(b []byte) { out.Write(b) }, OnStderr: func(b []byte) { errOut.Write(b) },
		})
		if err != nil {
			t.Fatal(err)
		}
		if p.PID != bg.PID {
			t.Errorf("attached to pid %d, want %d", p.PID, bg.PID)
		}
		exit, err := p.Wait()
		if err != nil || exit.ExitCode != 0 {
			t.Fatalf("Wait = %+v, %v", exit, err)
		}
		if out.String() != "line-1\nline-2\nline-3\n" || errOut.String() != "done\n" {
			t.Fatalf("attached output %q, %q", out.String(), errOut.String())
		}
		if _, err := c.Attach(ctx, capsule.ID, 999999, "", wrenn.StreamHandlers{}); !wrenn.IsCode(err, "process_not_found") {
			t.Fatalf("Attach(unknown pid) = %v; want process_not_found", err)
		}
	})

	t.Run("stream with stdin and signal", func(t *testing.T) {
		var mu sync.Mutex
		var out bytes.Buffer
		got := make(chan struct{}, 16)
		p, err := c.Stream(ctx, capsule.ID, wrenn.Command{Cmd: "cat"}, wrenn.StreamHandlers{
			OnStdout: func(b []byte) { mu.Lock(); out.Write(b); mu.Unlock(); got <- struct{}{} },
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.SendStdin(ctx, []byte("hello stdin\n")); err != nil {
			t.Fatal(err)
		}
		<-got
		if err := p.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		exit, err := p.Wait()
		if err != nil || exit.ExitCode != 0 {
			t.Fatalf("Wait = %+v, %v", exit, err)
		}
		if out.String() != "hello stdin\n" {
			t.Fatalf("cat echoed %q", out.String())
		}

		p, err = c.Stream(ctx, capsule.ID, wrenn.Command{Cmd: "sleep 60"}, wrenn.StreamHandlers{})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Signal(ctx, "SIGTERM"); err != nil {
			t.Fatal(err)
		}
		exit, err = p.Wait()
		if err != nil || exit.Signal != "SIGTERM" || exit.ExitCode != -1 {
			t.Fatalf("Wait after SIGTERM = %+v, %v", exit, err)
		}
	})

	t.Run("files", func(t *testing.T) {
		const dir = "/var/tmp/sdk"
		if _, err := c.MakeDir(ctx, capsule.ID, dir+"/sub", wrenn.FileOptions{Mode: 0o700}); err != nil {
			t.Fatal(err)
		}
		w, err := c.WriteFile(ctx, capsule.ID, dir+"/sub/a.txt", []byte("alpha\n"), wrenn.FileOptions{Mode: 0o600})
		if err != nil || w.Path != dir+"/sub/a.txt" || w.Size != 6 {
			t.Fatalf("WriteFile = %+v, %v", w, err)
		}
		b, err := c.ReadFile(ctx, capsule.ID, dir+"/sub/a.txt", wrenn.FileOptions{})
		if err != nil || string(b) != "alpha\n" {
			t.Fatalf("ReadFile = %q, %v", b, err)
		}
		entries, err := c.ListFiles(ctx, capsule.ID, dir, 2, wrenn.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name)
			if e.Name == "a.txt" && (e.Size != 6 || e.Mode != 0o600 || e.Type != "file") {
				t.Errorf("entry %+v", e)
			}
			if e.Name == "sub" && (!e.IsDir() || e.FileMode().Perm() != 0o700) {
				t.Errorf("entry %+v", e)
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"a.txt", "sub"}) {
			t.Errorf("ListFiles(depth 2) names %v", names)
		}
		if err := c.Remove(ctx, capsule.ID, dir+"/sub", wrenn.FileOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err = c.ReadFile(ctx, capsule.ID, dir+"/sub/a.txt", wrenn.FileOptions{})
		if !errors.Is(err, wrenn.ErrNotFound) || !wrenn.IsCode(err, "file_not_found") {
			t.Fatalf("ReadFile(removed) = %v; want file_not_found", err)
		}
		// An empty upload is a file of zero bytes.
		if w, err := c.Upload(ctx, capsule.ID, dir+"/empty", strings.NewReader(""), 0, wrenn.FileOptions{}); err != nil || w.Size != 0 {
			t.Fatalf("Upload(empty) = %+v, %v", w, err)
		}
	})

	t.Run("streamed 100 MiB", func(t *testing.T) {
		const size = 100 << 20
		const path = "/var/tmp/big.bin"
		src := newPatternReader(size)
		start := time.Now()
		w, err := c.Upload(ctx, capsule.ID, path, src, size, wrenn.FileOptions{})
		if err != nil || w.Size != size {
			t.Fatalf("Upload = %+v, %v", w, err)
		}
		up := time.Since(start)
		want := hex.EncodeToString(src.sum.Sum(nil))
		res, err := c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "sha256sum " + path})
		if err != nil || !strings.HasPrefix(res.Stdout, want) {
			t.Fatalf("sha256sum in the capsule = %+v, %v; want %s", res, err, want)
		}
		start = time.Now()
		d, err := c.Download(ctx, capsule.ID, path, wrenn.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, d)
		_ = d.Close()
		if err != nil || n != size || d.Size != size {
			t.Fatalf("Download: %d bytes (Size %d), %v", n, d.Size, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Fatalf("downloaded sha256 %s, want %s", got, want)
		}
		t.Logf("100 MiB: upload %v, download %v", up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		if err := c.Remove(ctx, capsule.ID, path, wrenn.FileOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pause, resume, snapshot", func(t *testing.T) {
		if _, err := c.WriteFile(ctx, capsule.ID, "/var/tmp/keep.txt", []byte("kept"), wrenn.FileOptions{}); err != nil {
			t.Fatal(err)
		}
		p, err := c.PauseCapsule(ctx, capsule.ID)
		if err != nil || p.Status != wrenn.StatusPaused || p.PausedAt == nil {
			t.Fatalf("PauseCapsule = %+v, %v", p, err)
		}
		_, err = c.PauseCapsule(ctx, capsule.ID)
		var e *wrenn.Error
		if !errors.As(err, &e) || !errors.Is(err, wrenn.ErrConflict) || e.CapsuleStatus != wrenn.StatusPaused {
			t.Fatalf("pausing a paused capsule = %v; want a conflict naming status paused", err)
		}
		if _, err := c.Exec(ctx, capsule.ID, wrenn.Command{Cmd: "true"}); !wrenn.IsCode(err, "capsule_not_running") {
			t.Fatalf("Exec while paused = %v; want capsule_not_running", err)
		}
		r, err := c.ResumeCapsule(ctx, capsule.ID)
		if err != nil || r.Status != wrenn.StatusRunning {
			t.Fatalf("ResumeCapsule = %+v, %v", r, err)
		}
		if b, err := c.ReadFile(ctx, capsule.ID, "/var/tmp/keep.txt", wrenn.FileOptions{}); err != nil || string(b) != "kept" {
			t.Fatalf("after resume ReadFile = %q, %v", b, err)
		}

		name := "sdk-snap-" + tag
		snap, err := c.CreateSnapshot(ctx, capsule.ID, name, wrenn.SnapshotOptions{})
		if err != nil || snap.Name != name || snap.Kind != "snapshot" || snap.SourceCapsuleID == nil || *snap.SourceCapsuleID != capsule.ID {
			t.Fatalf("CreateSnapshot = %+v, %v", snap, err)
		}
		if _, err := c.CreateSnapshot(ctx, capsule.ID, name, wrenn.SnapshotOptions{}); !wrenn.IsCode(err, "name_taken") {
			t.Fatalf("a second snapshot named %s = %v; want name_taken", name, err)
		}
		list, err := c.ListSnapshots(ctx)
		if err != nil || !slices.ContainsFunc(list, func(tp wrenn.Template) bool { return tp.Name == name }) {
			t.Fatalf("ListSnapshots = %+v, %v", list, err)
		}
		templates, err := c.ListTemplates(ctx)
		if err != nil || !slices.ContainsFunc(templates, func(tp wrenn.Template) bool { return tp.Name == "minimal" && tp.Kind == "base" }) {
			t.Fatalf("ListTemplates = %+v, %v", templates, err)
		}

		clone, err := c.CreateCapsule(ctx, wrenn.CapsuleSpec{Template: name})
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.ReadFile(ctx, clone.ID, "/var/tmp/keep.txt", wrenn.FileOptions{})
		if err != nil || string(b) != "kept" {
			t.Errorf("the snapshot's capsule has %q, %v", b, err)
		}
		if err := c.DeleteSnapshot(ctx, name); !wrenn.IsCode(err, "template_in_use") {
			t.Errorf("DeleteSnapshot while in use = %v; want template_in_use", err)
		}
		if err := c.DestroyCapsule(ctx, clone.ID); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteSnapshot(ctx, name); err != nil {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
	})

	t.Run("terminal", func(t *testing.T) {
		term, err := c.OpenTerminal(ctx, capsule.ID, wrenn.TerminalOptions{Cols: 100, Rows: 30})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = term.Close() }()
		if term.PID == 0 {
			t.Error("terminal without a pid")
		}
		if _, err := term.Write([]byte("stty size; echo hi-$((6*7))\n")); err != nil {
			t.Fatal(err)
		}
		// Wait for the first answer, so that the resize comes after it.
		var out []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(out, []byte("hi-42")) {
			n, err := term.Read(buf)
			if err != nil {
				t.Fatalf("reading the terminal: %v (read %q)", err, out)
			}
			out = append(out, buf[:n]...)
		}
		if err := term.Resize(ctx, 120, 40); err != nil {
			t.Fatal(err)
		}
		if _, err := term.Write([]byte("sleep 0.3; stty size; exit 5\n")); err != nil {
			t.Fatal(err)
		}
		rest, err := io.ReadAll(term)
		out = append(out, rest...)
		if err != nil {
			t.Fatalf("reading the terminal: %v (read %q)", err, out)
		}
		for _, want := range []string{"30 100", "hi-42", "40 120"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("terminal output %q lacks %q", out, want)
			}
		}
		exit, err := term.Wait()
		if err != nil || exit.ExitCode != 5 {
			t.Fatalf("terminal Wait = %+v, %v", exit, err)
		}
	})

	t.Run("api keys", func(t *testing.T) {
		k, err := c.CreateAPIKey(ctx, "sdk-"+tag, wrenn.ScopeCapsules, wrenn.ScopeKeysManage)
		if err != nil || !strings.HasPrefix(k.Key, "wrn_") || k.Name != "sdk-"+tag ||
			!slices.Equal(k.Scopes, []string{wrenn.ScopeCapsules, wrenn.ScopeKeysManage}) {
			t.Fatalf("CreateAPIKey = %+v, %v", k, err)
		}
		keys, err := c.ListAPIKeys(ctx)
		if err != nil || !slices.ContainsFunc(keys, func(x wrenn.APIKey) bool { return x.ID == k.ID && x.Key == "" }) {
			t.Fatalf("ListAPIKeys = %+v, %v", keys, err)
		}
		other, err := wrenn.New(wrenn.WithAPIKey(k.Key), wrenn.WithBaseURL(st.URL))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.GetCapsule(ctx, capsule.ID); err != nil {
			t.Fatalf("the new key cannot get the team's capsule: %v", err)
		}
		if _, err := other.CreateAPIKey(ctx, "wider", wrenn.ScopeExec); !errors.Is(err, wrenn.ErrForbidden) {
			t.Fatalf("a key granting a scope it lacks got %v; want ErrForbidden", err)
		}
		if _, err := other.ListTemplates(ctx); !errors.Is(err, wrenn.ErrForbidden) {
			t.Fatalf("a key without the templates scope listed templates: %v; want ErrForbidden", err)
		}
		if err := c.DeleteAPIKey(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := other.GetCapsule(ctx, capsule.ID); !errors.Is(err, wrenn.ErrUnauthenticated) {
			t.Fatalf("a deleted key got %v; want ErrUnauthenticated", err)
		}
	})

	t.Run("destroy", func(t *testing.T) {
		if err := c.DestroyCapsule(ctx, capsule.ID); err != nil {
			t.Fatal(err)
		}
		got, err := c.GetCapsule(ctx, capsule.ID)
		if err != nil || got.Status != wrenn.StatusStopped || got.StoppedAt == nil {
			t.Fatalf("after destroy GetCapsule = %+v, %v", got, err)
		}
	})
}
