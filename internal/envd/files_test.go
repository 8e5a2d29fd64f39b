package envd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// randomStream is n bytes of reproducible pseudo-random data, made on the fly.
func randomStream(seed uint64, n int64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(s), n)
}

func TestUploadDownloadOneGiB(t *testing.T) {
	const size = 1 << 30
	const rssCeiling = 100 << 20
	in := newEnvd(t)
	path := filepath.Join(t.TempDir(), "big.bin")

	var maxRSS atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if r := rss(t, in.pid()); r > maxRSS.Load() {
				maxRSS.Store(r)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	ctx := context.Background()
	up := sha256.New()
	res, err := in.Client.Upload(ctx, path, io.TeeReader(randomStream(1, size), up), envdclient.UploadOptions{Size: size})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if res.Size != size {
		t.Errorf("upload size %d, want %d", res.Size, size)
	}
	body, err := in.Client.Download(ctx, path, "")
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	down := sha256.New()
	n, err := io.Copy(down, body)
	_ = body.Close()
	close(stop)
	wg.Wait()
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v; want %d", n, err, size)
	}
	if !bytes.Equal(up.Sum(nil), down.Sum(nil)) {
		t.Error("downloaded checksum differs from uploaded")
	}
	t.Logf("envd max RSS during 1 GiB up+down: %d MiB", maxRSS.Load()>>20)
	if maxRSS.Load() > rssCeiling {
		t.Errorf("envd RSS peaked at %d MiB, want < %d MiB", maxRSS.Load()>>20, rssCeiling>>20)
	}
}

func TestRangeDownload(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "f")
	data := []byte(strings.Repeat("0123456789", 100))
	if _, err := in.Client.Upload(ctx, path, bytes.NewReader(data), envdclient.UploadOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ off, n int64 }{{0, 10}, {105, 50}, {990, 10}, {500, -1}} {
		body, err := in.Client.DownloadRange(ctx, path, "", tc.off, tc.n)
		if err != nil {
			t.Fatalf("range %d+%d: %v", tc.off, tc.n, err)
		}
		got, _ := io.ReadAll(body)
		_ = body.Close()
		end := int64(len(data))
		if tc.n >= 0 {
			end = tc.off + tc.n
		}
		if !bytes.Equal(got, data[tc.off:end]) {
			t.Errorf("range %d+%d = %q, want %q", tc.off, tc.n, got, data[tc.off:end])
		}
	}
	// An unsatisfiable range is refused.
	req, _ := http.NewRequest(http.MethodGet, in.URL+"/files?path="+url.QueryEscape(path), nil)
	req.Header.Set(envdclient.TokenHeader, in.Token)
	req.Header.Set("Range", "bytes=5000-6000")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("range past the end: status %d, want 416", resp.StatusCode)
	}
}

// TestDownloadPseudoFile reads a /proc file, which says it is empty until
// read: its bytes must come whole, not as the zero its size promises.
func TestDownloadPseudoFile(t *testing.T) {
	in := newEnvd(t)
	got := download(t, in, "/proc/self/status")
	if !bytes.HasPrefix(got, []byte("Name:")) || !bytes.Contains(got, []byte("\nPid:")) {
		t.Errorf("download of /proc/self/status = %q, want the process status", got)
	}
	// A really empty file is still empty, with a 200.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := download(t, in, empty); len(got) != 0 {
		t.Errorf("download of an empty file = %q", got)
	}
}

func TestUploadReplacesAtomically(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	old := bytes.Repeat([]byte("old "), 1000)
	if _, err := in.Client.Upload(ctx, path, bytes.NewReader(old), envdclient.UploadOptions{}); err != nil {
		t.Fatal(err)
	}

	// While a new version streams in, readers still see the old one whole.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := in.Client.Upload(ctx, path, pr, envdclient.UploadOptions{})
		done <- err
	}()
	newData := bytes.Repeat([]byte("new!"), 1<<18)
	if _, err := pw.Write(newData[:len(newData)/2]); err != nil {
		t.Fatal(err)
	}
	if got := download(t, in, path); !bytes.Equal(got, old) {
		t.Errorf("during upload: read %d bytes, want the old %d", len(got), len(old))
	}
	if _, err := pw.Write(newData[len(newData)/2:]); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := download(t, in, path); !bytes.Equal(got, newData) {
		t.Errorf("after upload: read %d bytes, want the new %d", len(got), len(newData))
	}

	// An upload that breaks off leaves the old file and no temporary file.
	pr, pw = io.Pipe()
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		_, err := in.Client.Upload(cctx, path, pr, envdclient.UploadOptions{})
		done <- err
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("partial"), 1000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	pw.CloseWithError(errors.New("client gave up"))
	if err := <-done; err == nil {
		t.Fatal("cancelled upload succeeded")
	}
	waitUntil(t, func() bool {
		entries, _ := os.ReadDir(dir)
		return len(entries) == 1
	})
	if got := download(t, in, path); !bytes.Equal(got, newData) {
		t.Error("a broken upload changed the file")
	}
}

func download(t testing.TB, in *instance, path string) []byte {
	t.Helper()
	body, err := in.Client.Download(context.Background(), path, "")
	if err != nil {
		t.Fatalf("download %s: %v", path, err)
	}
	defer func() { _ = body.Close() }()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sharedDir returns a directory every user can reach and write.
func sharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "envd-shared-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func TestUploadParentsModeOwnerAndMultipart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: envd can give the uploaded files and directories to nobody only when it runs as root")
	}
	in := newEnvd(t)
	ctx := context.Background()
	dir := sharedDir(t)
	path := filepath.Join(dir, "a", "b", "c.txt")
	if _, err := in.Client.Upload(ctx, path, strings.NewReader("hello"), envdclient.UploadOptions{Mode: 0o600, User: "nobody"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), path} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
			t.Errorf("%s owned by %d, want nobody (65534)", p, uid)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}

	// Multipart, as the public files/write route sends it.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	must(t, mw.WriteField("path", filepath.Join(dir, "multi.txt")))
	fw, _ := mw.CreateFormFile("file", "multi.txt")
	if _, err := fw.Write([]byte("from a form")); err != nil {
		t.Fatal(err)
	}
	_ = mw.Close()
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/files", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set(envdclient.TokenHeader, in.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("multipart upload: status %d", resp.StatusCode)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "multi.txt")); string(got) != "from a form" {
		t.Errorf("multipart upload wrote %q", got)
	}
}

func TestFileTransferErrors(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A FIFO nobody writes to: opening it for reading must not block envd.
	fifo := filepath.Join(t.TempDir(), "fifo")
	must(t, syscall.Mkfifo(fifo, 0o644))
	code := func(err error) int {
		var e *envdclient.Error
		if errors.As(err, &e) {
			return e.Status
		}
		return 0
	}
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
	}{
		{"download missing path", func() error { _, err := in.Client.Download(ctx, "", ""); return err }, 400},
		{"download relative path", func() error { _, err := in.Client.Download(ctx, "etc/passwd", ""); return err }, 400},
		{"download nonexistent", func() error { _, err := in.Client.Download(ctx, "/no/such/file", ""); return err }, 404},
		{"download directory", func() error { _, err := in.Client.Download(ctx, dir, ""); return err }, 400},
		{"download fifo", func() error { _, err := in.Client.Download(ctx, fifo, ""); return err }, 400},
		{"download unknown user", func() error { _, err := in.Client.Download(ctx, secret, "no-such-user"); return err }, 400},
		{"download forbidden", func() error { _, err := in.Client.Download(ctx, secret, "nobody"); return err }, 403},
		{"upload missing path", func() error {
			_, err := in.Client.Upload(ctx, "", strings.NewReader("x"), envdclient.UploadOptions{})
			return err
		}, 400},
		{"upload relative path", func() error {
			_, err := in.Client.Upload(ctx, "x/y", strings.NewReader("x"), envdclient.UploadOptions{})
			return err
		}, 400},
		{"upload over directory", func() error {
			_, err := in.Client.Upload(ctx, dir, strings.NewReader("x"), envdclient.UploadOptions{})
			return err
		}, 400},
		{"upload under a file", func() error {
			_, err := in.Client.Upload(ctx, secret+"/x", strings.NewReader("x"), envdclient.UploadOptions{})
			return err
		}, 400},
		{"upload bad mode", func() error {
			_, err := in.Client.Upload(ctx, dir+"/m", strings.NewReader("x"), envdclient.UploadOptions{Mode: 0o10000})
			return err
		}, 400},
		{"upload forbidden", func() error {
			_, err := in.Client.Upload(ctx, "/root/envd-test-forbidden", strings.NewReader("x"), envdclient.UploadOptions{User: "nobody"})
			return err
		}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 && strings.Contains(tc.name, "forbidden") {
				t.Skip("needs root: the forbidden case acts as nobody against root-owned paths, which envd can do only when it runs as root")
			}
			if got := code(tc.call()); got != tc.status {
				t.Errorf("status = %d, want %d", got, tc.status)
			}
		})
	}
}

func TestFilesystemOperations(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	fsc := in.Client.Filesystem
	dir := t.TempDir()

	mk, err := fsc.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{Path: dir + "/a/b/c", Parents: true}))
	if err != nil {
		t.Fatalf("mkdir -p: %v", err)
	}
	if mk.Msg.Entry.Type != envdv1.FileType_FILE_TYPE_DIRECTORY || mk.Msg.Entry.Mode != 0o755 {
		t.Errorf("mkdir entry = %v", mk.Msg.Entry)
	}
	if _, err := fsc.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{Path: dir + "/a"})); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Errorf("mkdir existing: %v, want already_exists", err)
	}
	if _, err := fsc.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{Path: dir + "/x/y"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("mkdir without parents: %v, want not_found", err)
	}
	if _, err := fsc.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{Path: dir + "/a", Parents: true, Mode: 0o700})); err != nil {
		t.Errorf("mkdir -p existing: %v, want ok", err)
	}
	if fi, _ := os.Stat(dir + "/a"); fi.Mode().Perm() != 0o755 {
		t.Errorf("mkdir -p changed an existing directory's mode to %v", fi.Mode().Perm())
	}
	// The mode is applied exactly, whatever envd's umask.
	mk, err = fsc.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{Path: dir + "/open", Mode: 0o777}))
	if err != nil || mk.Msg.Entry.Mode != 0o777 {
		t.Errorf("mkdir mode 0777: %v, %v", mk.Msg.GetEntry(), err)
	}
	must(t, os.WriteFile(dir+"/a/f1", []byte("12345"), 0o640))
	must(t, os.WriteFile(dir+"/a/b/f2", nil, 0o644))
	must(t, os.Symlink("f1", dir+"/a/link"))

	st, err := fsc.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: dir + "/a/f1"}))
	if err != nil {
		t.Fatal(err)
	}
	if e := st.Msg.Entry; e.Size != 5 || e.Mode != 0o640 || e.Type != envdv1.FileType_FILE_TYPE_FILE || e.Permissions != "-rw-r-----" || e.Owner != "root" && os.Geteuid() == 0 || e.Name != "f1" {
		t.Errorf("stat = %v", e)
	}
	st, err = fsc.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: dir + "/a/link"}))
	if err != nil || st.Msg.Entry.Type != envdv1.FileType_FILE_TYPE_SYMLINK || st.Msg.Entry.SymlinkTarget != "f1" {
		t.Errorf("stat symlink = %v, %v", st.Msg.GetEntry(), err)
	}

	names := func(depth uint32) []string {
		t.Helper()
		ls, err := fsc.ListDir(ctx, connect.NewRequest(&envdv1.ListDirRequest{Path: dir + "/a", Depth: depth}))
		if err != nil {
			t.Fatalf("list depth %d: %v", depth, err)
		}
		var out []string
		for _, e := range ls.Msg.Entries {
			out = append(out, strings.TrimPrefix(e.Path, dir+"/a/"))
		}
		slices.Sort(out)
		return out
	}
	if got, want := names(1), []string{"b", "f1", "link"}; !slices.Equal(got, want) {
		t.Errorf("list depth 1 = %v, want %v", got, want)
	}
	if got, want := names(2), []string{"b", "b/c", "b/f2", "f1", "link"}; !slices.Equal(got, want) {
		t.Errorf("list depth 2 = %v, want %v", got, want)
	}

	mv, err := fsc.Move(ctx, connect.NewRequest(&envdv1.MoveRequest{Source: dir + "/a/f1", Destination: dir + "/a/b/moved"}))
	if err != nil || mv.Msg.Entry.Path != dir+"/a/b/moved" {
		t.Fatalf("move: %v %v", mv, err)
	}
	if _, err := os.Stat(dir + "/a/f1"); !errors.Is(err, os.ErrNotExist) {
		t.Error("move left the source")
	}
	if _, err := fsc.Move(ctx, connect.NewRequest(&envdv1.MoveRequest{Source: dir + "/a/f1", Destination: dir + "/z"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("move missing source: %v, want not_found", err)
	}

	if _, err := fsc.Remove(ctx, connect.NewRequest(&envdv1.RemoveRequest{Path: dir + "/a/b"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("remove non-empty dir without recursive: %v, want failed_precondition", err)
	}
	if _, err := fsc.Remove(ctx, connect.NewRequest(&envdv1.RemoveRequest{Path: dir + "/a/b", Recursive: true})); err != nil {
		t.Errorf("remove recursive: %v", err)
	}
	if _, err := os.Stat(dir + "/a/b"); !errors.Is(err, os.ErrNotExist) {
		t.Error("remove left the tree")
	}
	if _, err := fsc.Remove(ctx, connect.NewRequest(&envdv1.RemoveRequest{Path: dir + "/a/b"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("remove missing: %v, want not_found", err)
	}
}

func TestFilesystemBadInput(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	fsc := in.Client.Filesystem
	for _, tc := range []struct {
		name string
		call func() error
		code connect.Code
	}{
		{"stat empty", func() error { _, err := fsc.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{})); return err }, connect.CodeInvalidArgument},
		{"stat relative", func() error {
			_, err := fsc.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: "etc"}))
			return err
		}, connect.CodeInvalidArgument},
		{"stat missing", func() error {
			_, err := fsc.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: "/no/such"}))
			return err
		}, connect.CodeNotFound},
		{"stat unknown user", func() error {
			_, err := fsc.Stat(ctx, connect.NewRequest(&envdv1.StatRequest{Path: "/", User: "no-such-user"}))
			return err
		}, connect.CodeInvalidArgument},
		{"list a file", func() error {
			_, err := fsc.ListDir(ctx, connect.NewRequest(&envdv1.ListDirRequest{Path: "/etc/passwd"}))
			return err
		}, connect.CodeInvalidArgument},
		{"list missing", func() error {
			_, err := fsc.ListDir(ctx, connect.NewRequest(&envdv1.ListDirRequest{Path: "/no/such"}))
			return err
		}, connect.CodeNotFound},
		{"list too deep", func() error {
			_, err := fsc.ListDir(ctx, connect.NewRequest(&envdv1.ListDirRequest{Path: "/", Depth: 1000}))
			return err
		}, connect.CodeInvalidArgument},
		{"mkdir relative", func() error {
			_, err := fsc.MakeDir(ctx, connect.NewRequest(&envdv1.MakeDirRequest{Path: "a/b"}))
			return err
		}, connect.CodeInvalidArgument},
		{"move missing destination", func() error {
			_, err := fsc.Move(ctx, connect.NewRequest(&envdv1.MoveRequest{Source: "/tmp"}))
			return err
		}, connect.CodeInvalidArgument},
		{"remove root", func() error {
			_, err := fsc.Remove(ctx, connect.NewRequest(&envdv1.RemoveRequest{Path: "/", Recursive: true}))
			return err
		}, connect.CodeInvalidArgument},
		{"remove forbidden", func() error {
			_, err := fsc.Remove(ctx, connect.NewRequest(&envdv1.RemoveRequest{Path: "/etc/passwd", User: "nobody"}))
			return err
		}, connect.CodePermissionDenied},
		{"watch a file", func() error {
			s, err := fsc.Watch(ctx, connect.NewRequest(&envdv1.WatchRequest{Path: "/etc/passwd"}))
			if err == nil {
				s.Receive()
				err = s.Err()
			}
			return err
		}, connect.CodeInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 && strings.Contains(tc.name, "forbidden") {
				t.Skip("needs root: the forbidden case acts as nobody against root-owned paths, which envd can do only when it runs as root")
			}
			if got := connect.CodeOf(tc.call()); got != tc.code {
				t.Errorf("code = %v, want %v", got, tc.code)
			}
		})
	}
}

func TestWatch(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	s, err := in.Client.Filesystem.Watch(ctx, connect.NewRequest(&envdv1.WatchRequest{Path: dir, Recursive: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if !s.Receive() || s.Msg().GetStart() == nil {
		t.Fatalf("first watch message is not start: %v", s.Err())
	}
	events := make(chan *envdv1.FilesystemEvent, 256)
	go func() {
		for s.Receive() {
			if ev := s.Msg().GetFilesystem(); ev != nil {
				events <- ev
			}
		}
		close(events)
	}()
	expect := func(path string, typ envdv1.EventType) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("watch ended waiting for %v %s: %v", typ, path, s.Err())
				}
				if ev.Path == path && ev.Type == typ {
					return
				}
			case <-deadline:
				t.Fatalf("no %v event for %s", typ, path)
			}
		}
	}
	f := filepath.Join(dir, "f")
	must(t, os.WriteFile(f, nil, 0o644))
	expect(f, envdv1.EventType_EVENT_TYPE_CREATE)
	must(t, os.WriteFile(f, []byte("data"), 0o644))
	expect(f, envdv1.EventType_EVENT_TYPE_WRITE)
	must(t, os.Rename(f, f+"2"))
	expect(f, envdv1.EventType_EVENT_TYPE_RENAME)
	expect(f+"2", envdv1.EventType_EVENT_TYPE_CREATE)
	must(t, os.Chmod(f+"2", 0o600))
	expect(f+"2", envdv1.EventType_EVENT_TYPE_CHMOD)
	_ = os.Remove(f + "2")
	expect(f+"2", envdv1.EventType_EVENT_TYPE_REMOVE)

	// A directory made after the watch started is watched too.
	sub := filepath.Join(dir, "sub")
	must(t, os.Mkdir(sub, 0o755))
	expect(sub, envdv1.EventType_EVENT_TYPE_CREATE)
	time.Sleep(50 * time.Millisecond)
	must(t, os.WriteFile(filepath.Join(sub, "g"), nil, 0o644))
	expect(filepath.Join(sub, "g"), envdv1.EventType_EVENT_TYPE_CREATE)
}
