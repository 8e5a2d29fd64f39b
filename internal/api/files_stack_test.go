package api_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// multipartBody returns a files/write form with the given fields in order;
// the field "file" is sent as a file part.
func multipartBody(t testing.TB, fields ...string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		var (
			w   io.Writer
			err error
		)
		if fields[i] == "file" {
			w, err = mw.CreateFormFile("file", "upload.bin")
		} else {
			w, err = mw.CreateFormField(fields[i])
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, fields[i+1])
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), &buf
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// entryNamed returns the entry called name of a files/list answer.
func entryNamed(a answer, name string) map[string]any {
	entries, _ := a.body["entries"].([]any)
	for _, e := range entries {
		if e := e.(map[string]any); e["name"] == name {
			return e
		}
	}
	return nil
}

func TestFilesStack(t *testing.T) {
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)
	const dir = "/var/tmp/files-test"

	data := make([]byte, 3<<20+17)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	ct, body := multipartBody(t, "path", dir+"/sub/data.bin", "mode", "640", "file", string(data))
	a := cc.raw("POST", "/files/write", ct, body).want(t, "write", http.StatusOK)
	if a.str("path") != dir+"/sub/data.bin" || a.num("size") != float64(len(data)) {
		t.Errorf("write answered %s", a.raw)
	}

	got := cc.call("POST", "/files/read", map[string]any{"path": dir + "/sub/data.bin"}).want(t, "read", http.StatusOK)
	if sum(got.raw) != sum(data) {
		t.Errorf("read back %d bytes with another checksum than the %d written", len(got.raw), len(data))
	}
	if got.header.Get("Content-Type") != "application/octet-stream" || got.header.Get("Content-Length") != strconv.Itoa(len(data)) {
		t.Errorf("read headers: %v", got.header)
	}
	if out := cc.sh("sha256sum " + dir + "/sub/data.bin | cut -d' ' -f1"); out != sum(data)+"\n" {
		t.Errorf("sha256sum in the capsule says %q", out)
	}

	l := cc.call("POST", "/files/list", map[string]any{"path": dir + "/sub"}).want(t, "list", http.StatusOK)
	e := entryNamed(l, "data.bin")
	if e == nil || e["type"] != "file" || e["size"] != float64(len(data)) || e["mode"] != float64(0o640) ||
		e["path"] != dir+"/sub/data.bin" || e["permissions"] != "-rw-r-----" || e["modified_at"] == nil {
		t.Errorf("list: %s", l.raw)
	}
	l = cc.call("POST", "/files/list", map[string]any{"path": dir, "depth": 2}).want(t, "list depth 2", http.StatusOK)
	if entryNamed(l, "sub") == nil || entryNamed(l, "data.bin") == nil {
		t.Errorf("list depth 2: %s", l.raw)
	}

	// A listing is bounded as JSON: 7,000 names of 200 '<' take 3 MB
	// in envd's answer and 19 MB as JSON, where each '<' is "\u003c".
	cc.sh(`d=/tmp/wide; mkdir $d; n=$(printf '%200s' | tr ' ' '<'); i=0; while [ $i -lt 7000 ]; do : > "$d/$n$i"; i=$((i+1)); done`)
	cc.call("POST", "/files/list", map[string]any{"path": "/tmp/wide"}).
		wantError(t, "list of 19 MB as JSON", http.StatusRequestEntityTooLarge, "payload_too_large")
	cc.sh("rm -rf /tmp/wide")

	// Ranges through the streamed download.
	req, err := http.NewRequest("GET", st.URL+cc.path("/files?path="+dir+"/sub/data.bin"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=100-199")
	part := cc.send(req).want(t, "range", http.StatusPartialContent)
	if !bytes.Equal(part.raw, data[100:200]) || part.header.Get("Content-Range") != fmt.Sprintf("bytes 100-199/%d", len(data)) {
		t.Errorf("range: %d bytes, Content-Range %q", len(part.raw), part.header.Get("Content-Range"))
	}
	req.Header.Set("Range", "bytes=99999999-")
	cc.send(req).wantError(t, "unsatisfiable range", http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable")

	// mkdir, with and without parents.
	m := cc.call("POST", "/files/mkdir", map[string]any{"path": dir + "/a/b/c"}).want(t, "mkdir", http.StatusOK)
	if m.str("type") != "directory" || m.str("path") != dir+"/a/b/c" {
		t.Errorf("mkdir answered %s", m.raw)
	}
	cc.call("POST", "/files/mkdir", map[string]any{"path": dir + "/a/b/c"}).want(t, "mkdir again", http.StatusOK)
	cc.call("POST", "/files/mkdir", map[string]any{"path": dir + "/a/b/c", "parents": false}).
		wantError(t, "mkdir existing without parents", http.StatusConflict, "file_exists")
	cc.call("POST", "/files/mkdir", map[string]any{"path": dir + "/x/y", "parents": false}).
		wantError(t, "mkdir without parents", http.StatusNotFound, "file_not_found")
	if l := cc.call("POST", "/files/list", map[string]any{"path": dir + "/a/b"}).want(t, "list", http.StatusOK); entryNamed(l, "c")["type"] != "directory" {
		t.Errorf("list after mkdir: %s", l.raw)
	}

	// Errors that are the caller's.
	cc.call("POST", "/files/read", map[string]any{"path": dir + "/missing"}).wantError(t, "read missing", http.StatusNotFound, "file_not_found")
	cc.call("POST", "/files/read", map[string]any{"path": dir}).wantError(t, "read a directory", http.StatusBadRequest, "invalid_request")
	cc.call("POST", "/files/list", map[string]any{"path": dir + "/sub/data.bin"}).wantError(t, "list a file", http.StatusBadRequest, "invalid_request")
	cc.call("POST", "/files/list", map[string]any{"path": "/no/such"}).wantError(t, "list missing", http.StatusNotFound, "file_not_found")
	cc.call("POST", "/files/read", map[string]any{"path": dir + "/sub/data.bin", "user": "nobody"}).wantError(t, "no permission", http.StatusForbidden, "forbidden")
	cc.call("POST", "/files/remove", map[string]any{"path": dir + "/a", "recursive": false}).
		wantError(t, "remove non-empty without recursive", http.StatusConflict, "conflict")
	ct, body = multipartBody(t, "file", "x", "path", dir+"/late")
	cc.raw("POST", "/files/write", ct, body).
		wantError(t, "file before path", http.StatusBadRequest, "invalid_request")
	ct, body = multipartBody(t, "path", dir+"/nofile")
	cc.raw("POST", "/files/write", ct, body).
		wantError(t, "no file part", http.StatusBadRequest, "invalid_request")
	ct, body = multipartBody(t, "path", "relative", "file", "x")
	cc.raw("POST", "/files/write", ct, body).
		wantError(t, "relative path", http.StatusBadRequest, "invalid_request")
	cc.call("POST", "/files/remove", map[string]any{"path": "/"}).wantError(t, "remove /", http.StatusBadRequest, "invalid_request")

	// remove, recursive by default.
	cc.call("POST", "/files/remove", map[string]any{"path": dir + "/a"}).want(t, "remove", http.StatusNoContent)
	cc.call("POST", "/files/remove", map[string]any{"path": dir + "/sub/data.bin"}).want(t, "remove file", http.StatusNoContent)
	l = cc.call("POST", "/files/list", map[string]any{"path": dir, "depth": 3}).want(t, "list after remove", http.StatusOK)
	if entries := l.body["entries"].([]any); len(entries) != 1 || entryNamed(l, "sub") == nil {
		t.Errorf("after remove: %s", l.raw)
	}
	cc.call("POST", "/files/remove", map[string]any{"path": dir + "/a"}).wantError(t, "remove again", http.StatusNotFound, "file_not_found")

	// PUT replaces, GET streams.
	a = cc.raw("PUT", "/files?path="+dir+"/put.txt&mode=600", "application/octet-stream", bytes.NewReader([]byte("put body\n"))).want(t, "put", http.StatusOK)
	if a.num("size") != 9 {
		t.Errorf("put answered %s", a.raw)
	}
	if out := cc.sh("cat " + dir + "/put.txt; stat -c %a " + dir + "/put.txt"); out != "put body\n600\n" {
		t.Errorf("put wrote %q", out)
	}

	// An upload the client breaks off leaves the old file.
	conn, err := net.Dial("tcp", strings.TrimPrefix(st.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: wrenn\r\nX-API-Key: %s\r\nContent-Length: 1000\r\n\r\nonly ten b",
		cc.path("/files?path="+dir+"/put.txt"), cc.tm.APIKey)
	_ = conn.(*net.TCPConn).CloseWrite()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	readAnswer(t, res).wantError(t, "broken upload", http.StatusBadRequest, "invalid_request")
	// envd learns of the break a moment after the control plane answers
	// (the abort crosses the agent), and then removes its temporary file.
	want := "put body\n.\n..\nput.txt\nsub\n"
	out := cc.sh("cat " + dir + "/put.txt; ls -a " + dir)
	for deadline := time.Now().Add(5 * time.Second); out != want && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		out = cc.sh("cat " + dir + "/put.txt; ls -a " + dir)
	}
	if out != want {
		t.Errorf("after a broken upload: %q", out)
	}

	// Every change is in the audit log.
	log := auditLog(t, st)
	actions := map[string]int{}
	for _, e := range log.list {
		e := e.(map[string]any)
		if e["resource_id"] == cc.id {
			actions[e["action"].(string)]++
		}
	}
	if actions["file.write"] != 2 || actions["file.mkdir"] != 2 || actions["file.remove"] != 2 {
		t.Errorf("audit actions %v, want 2 writes, 2 mkdirs, 2 removes", actions)
	}
}

// prng is a reproducible byte stream that hashes what it hands out.
type prng struct {
	r    *rand.ChaCha8
	left int64
	h    io.Writer
}

func (p *prng) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, _ := p.r.Read(b)
	p.left -= int64(n)
	_, _ = p.h.Write(b[:n])
	return n, nil
}

// TestLargeFileStack streams 200 MiB up with PUT and down with GET and
// checks both ends hash the same, while the test process (which is also
// the control plane) never holds the file in memory.
func TestLargeFileStack(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 400 MiB; skipped with -short")
	}
	st := stacktest.Start(t)
	cc := newCapsuleClient(t, st)
	const size = 200 << 20
	const path = "/var/tmp/large.bin"

	// Garbage of earlier tests must not count.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	floor := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()

	up := sha256.New()
	src := &prng{r: rand.NewChaCha8([32]byte{7}), left: size, h: up}
	start := time.Now()
	req, err := http.NewRequest("PUT", st.URL+cc.path("/files?path="+path), src)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	a := cc.send(req).want(t, "put", http.StatusOK)
	upTime := time.Since(start)
	if a.num("size") != size {
		t.Fatalf("put answered %s", a.raw)
	}

	start = time.Now()
	res := cc.tm.Do(t, st, "GET", cc.path("/files?path="+path), nil)
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Length") != strconv.Itoa(size) {
		t.Fatalf("get: %d, Content-Length %q", res.StatusCode, res.Header.Get("Content-Length"))
	}
	down := sha256.New()
	n, err := io.CopyBuffer(down, res.Body, make([]byte, 256<<10))
	if err != nil || n != size {
		t.Fatalf("get: %d bytes, %v", n, err)
	}
	downTime := time.Since(start)
	if hex.EncodeToString(up.Sum(nil)) != hex.EncodeToString(down.Sum(nil)) {
		t.Error("the file read back differs from the one written")
	}
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	grew := peak.Load() - min(floor, peak.Load())
	t.Logf("200 MiB: upload %.0f MiB/s, download %.0f MiB/s; heap in use grew by %d MiB at most",
		mbps(upTime), mbps(downTime), grew>>20)
	if grew > 64<<20 {
		t.Errorf("heap in use grew by %d MiB: something buffered the file", grew>>20)
	}
}
