package agent

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
)

func TestBackoff(t *testing.T) {
	b := backoff{base: 100 * time.Millisecond, max: time.Second}
	ceilings := []time.Duration{100, 200, 400, 800, 1000, 1000, 1000}
	for i, c := range ceilings {
		ceiling := c * time.Millisecond
		got := b.next()
		if got < ceiling/2 || got > ceiling {
			t.Errorf("attempt %d: wait %v, want within [%v, %v]", i, got, ceiling/2, ceiling)
		}
	}
	b.reset()
	if got := b.next(); got > 100*time.Millisecond {
		t.Errorf("after reset: wait %v, want <= 100ms", got)
	}
	for range 100 {
		b.next() // must not overflow into negative or zero waits
	}
	if got := b.next(); got < 500*time.Millisecond || got > time.Second {
		t.Errorf("after many attempts: wait %v, want within [500ms, 1s]", got)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHeartbeatUnreachableLogsOnce runs the heartbeat loop against a port
// nobody listens on: it must keep retrying, and warn once per outage rather
// than once per attempt.
func TestHeartbeatUnreachableLogsOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	_ = ln.Close()

	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := config.Agent{CPURL: dead, Dir: t.TempDir(), HeartbeatInterval: 200 * time.Millisecond, Runtime: config.RuntimeGVisor}
	srv, err := NewServer(cfg, Credential{
		HostID: testHostID, CPURL: dead, Credential: "wrnh_x", RefreshToken: "wrnr_x",
		CPPublicKey: hostauth.EncodePublicKey(newSigner(t).PublicKey()),
	}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	srv.heartbeatLoop(ctx)

	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Errorf("got %d warnings, want 1 per outage:\n%s", n, out)
	}
	// Backoff starts at 50 ms and is capped at the 200 ms interval, so
	// 1.5 s hold well over 5 attempts, and far fewer than a busy loop.
	if n := strings.Count(out, "heartbeat failed again"); n < 5 || n > 40 {
		t.Errorf("got %d retries in 1.5 s, want between 5 and 40:\n%s", n, out)
	}
	if strings.Contains(out, "wrnh_x") || strings.Contains(out, "wrnr_x") {
		t.Errorf("log contains a secret:\n%s", out)
	}
}
