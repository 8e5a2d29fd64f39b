package envdclient_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// bombSize is what the gzip bomb expands to; its compressed form is about
// a thousandth of that.
const bombSize = 256 << 20

var (
	bombOnce sync.Once
	bomb     []byte
)

// gzipBomb returns bombSize zero bytes, gzipped.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	bombOnce.Do(func() {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zeros := make([]byte, 1<<20)
		for range bombSize >> 20 {
			_, _ = zw.Write(zeros)
		}
		_ = zw.Close()
		bomb = buf.Bytes()
	})
	return bomb
}

// allocated returns how many bytes f allocated on the heap (all
// goroutines, so the rigged server's own work counts too).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// riggedEnvd starts an h2c server that answers every request with h.
func riggedEnvd(t *testing.T, h http.HandlerFunc) *envdclient.Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	c := envdclient.New(srv.URL, "tok")
	t.Cleanup(c.Close)
	return c
}

// allocLimit is what a refused answer may cost at most: far below the
// bomb, above a bounded read and the test's own bookkeeping.
const allocLimit = 64 << 20

func TestClientRefusesGzipBombs(t *testing.T) {
	b := gzipBomb(t)
	t.Logf("gzip bomb: %d KiB expanding to %d MiB", len(b)>>10, bombSize>>20)

	t.Run("unary", func(t *testing.T) {
		var sawAccept string
		c := riggedEnvd(t, func(w http.ResponseWriter, r *http.Request) {
			sawAccept = r.Header.Get("Accept-Encoding")
			w.Header().Set("Content-Type", "application/proto")
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(b)
		})
		var err error
		n := allocated(func() {
			_, err = c.Filesystem.ListDir(context.Background(), connect.NewRequest(&envdv1.ListDirRequest{Path: "/"}))
		})
		t.Logf("unary gzip bomb: allocated %.1f MiB, err %v", float64(n)/(1<<20), err)
		if err == nil {
			t.Fatal("ListDir accepted a gzip answer")
		}
		if n > allocLimit {
			t.Errorf("refusing the bomb allocated %d MiB, want at most %d MiB", n>>20, allocLimit>>20)
		}
		if strings.Contains(sawAccept, "gzip") {
			t.Errorf("the client asked for gzip: Accept-Encoding %q", sawAccept)
		}
	})

	t.Run("stream", func(t *testing.T) {
		var sawAccept string
		c := riggedEnvd(t, func(w http.ResponseWriter, r *http.Request) {
			sawAccept = r.Header.Get("Connect-Accept-Encoding") + "," + r.Header.Get("Accept-Encoding")
			w.Header().Set("Content-Type", "application/connect+proto")
			w.Header().Set("Connect-Content-Encoding", "gzip")
			env := make([]byte, 5)
			env[0] = 1 // compressed
			binary.BigEndian.PutUint32(env[1:], uint32(len(b)))
			_, _ = w.Write(append(env, b...))
		})
		var err error
		n := allocated(func() {
			stream, serr := c.Process.Start(context.Background(), connect.NewRequest(&envdv1.StartRequest{Process: &envdv1.ProcessConfig{Shell: "true"}}))
			if serr != nil {
				err = serr
				return
			}
			for stream.Receive() {
			}
			err = stream.Err()
			_ = stream.Close()
		})
		t.Logf("stream gzip bomb: allocated %.1f MiB, err %v", float64(n)/(1<<20), err)
		if err == nil {
			t.Fatal("Start accepted a gzip stream")
		}
		if n > allocLimit {
			t.Errorf("refusing the bomb allocated %d MiB, want at most %d MiB", n>>20, allocLimit>>20)
		}
		if strings.Contains(sawAccept, "gzip") {
			t.Errorf("the client asked for gzip: %q", sawAccept)
		}
	})

	t.Run("http gzip", func(t *testing.T) {
		c := riggedEnvd(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(b)
		})
		var err error
		n := allocated(func() { _, err = c.Metrics(context.Background()) })
		t.Logf("metrics gzip bomb: allocated %.1f MiB, err %v", float64(n)/(1<<20), err)
		if err == nil {
			t.Fatal("Metrics accepted a gzip answer")
		}
		if n > allocLimit {
			t.Errorf("refusing the bomb allocated %d MiB, want at most %d MiB", n>>20, allocLimit>>20)
		}
	})
}

func TestClientBoundsLargeAnswers(t *testing.T) {
	t.Run("message", func(t *testing.T) {
		// A listing one byte over the limit, plain.
		big, err := proto.Marshal(&envdv1.ListDirResponse{Entries: []*envdv1.EntryInfo{{Name: strings.Repeat("n", envdclient.MaxMessageBytes)}}})
		if err != nil {
			t.Fatal(err)
		}
		c := riggedEnvd(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/proto")
			_, _ = w.Write(big)
		})
		_, err = c.Filesystem.ListDir(context.Background(), connect.NewRequest(&envdv1.ListDirRequest{Path: "/"}))
		if connect.CodeOf(err) != connect.CodeResourceExhausted || connect.IsWireError(err) {
			t.Fatalf("ListDir of %d bytes: got %v, want a local resource_exhausted", len(big), err)
		}
	})
	t.Run("json", func(t *testing.T) {
		c := riggedEnvd(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"timestamp":"`))
			chunk := bytes.Repeat([]byte("x"), 1<<20)
			for range 64 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			_, _ = w.Write([]byte(`"}`))
		})
		var err error
		n := allocated(func() { _, err = c.Metrics(context.Background()) })
		t.Logf("64 MiB metrics answer: allocated %.1f MiB, err %v", float64(n)/(1<<20), err)
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("Metrics of 64 MiB: got %v, want a size error", err)
		}
		if n > allocLimit/2 {
			t.Errorf("refusing it allocated %d MiB", n>>20)
		}
	})
}
