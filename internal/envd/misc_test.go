package envd_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

func TestHealthMetricsAndPreparePause(t *testing.T) {
	in := newEnvd(t)
	ctx := context.Background()
	if err := in.Client.Health(ctx); err != nil {
		t.Fatalf("health: %v", err)
	}
	m, err := in.Client.Metrics(ctx)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if m.CPUCount < 1 || m.MemTotalBytes == 0 || m.MemUsedBytes == 0 || m.MemUsedBytes > m.MemTotalBytes ||
		m.DiskTotalBytes == 0 || m.DiskUsedBytes > m.DiskTotalBytes || m.CPUUsedPercent < 0 || m.CPUUsedPercent > 100 {
		t.Errorf("implausible metrics: %+v", m)
	}
	if err := in.Client.PreparePause(ctx); err != nil {
		t.Errorf("prepare-pause: %v", err)
	}
}

func TestKeepaliveOnIdleStream(t *testing.T) {
	in := startEnvd(t, nil, "--keepalive", "100ms")
	in.Token = "k"
	ctx := context.Background()
	if err := in.Client.Init(ctx, initReq("k")); err != nil {
		t.Fatal(err)
	}
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(cmd("sleep", "0.5")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	keepalives := 0
	for s.Receive() {
		if s.Msg().Event.GetKeepalive() != nil {
			keepalives++
		}
	}
	if keepalives < 2 {
		t.Errorf("%d keepalives in 0.5 s at 100 ms, want at least 2", keepalives)
	}

	// Watch streams follow the same interval.
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	w, err := in.Client.Filesystem.Watch(wctx, connect.NewRequest(&envdv1.WatchRequest{Path: t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	keepalives = 0
	for w.Receive() {
		if w.Msg().GetKeepalive() != nil {
			keepalives++
		}
	}
	if keepalives < 2 {
		t.Errorf("%d watch keepalives in 0.5 s at 100 ms, want at least 2", keepalives)
	}
}

func TestInputWithoutOpenStdin(t *testing.T) {
	in := newEnvd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := in.Client.Process.Start(ctx, connect.NewRequest(cmd("sleep", "5")))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	s.Receive()
	sel := &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: s.Msg().Event.GetStart().GetPid()}}
	_, err = in.Client.Process.SendInput(ctx, connect.NewRequest(&envdv1.SendInputRequest{Process: sel, Data: []byte("x")}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("input without stdin: %v, want failed_precondition", err)
	}
	if _, err := in.Client.Process.SendSignal(ctx, connect.NewRequest(&envdv1.SendSignalRequest{Process: sel, Signal: envdv1.Signal_SIGNAL_SIGTERM})); err != nil {
		t.Errorf("signal: %v", err)
	}
	for s.Receive() {
		if end := s.Msg().Event.GetEnd(); end != nil && end.Signal != "SIGTERM" {
			t.Errorf("end = %v, want SIGTERM", end)
		}
	}
}

func TestClientWithDialer(t *testing.T) {
	in := newEnvd(t)
	var dials atomic.Int32
	d := &net.Dialer{}
	c := envdclient.New(in.URL, in.Token, envdclient.WithDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}))
	defer c.Close()
	if _, err := c.Process.List(context.Background(), connect.NewRequest(&envdv1.ListRequest{})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Metrics(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dials.Load() != 2 {
		t.Errorf("custom dialer used %d times, want 2 (one per transport)", dials.Load())
	}
}
