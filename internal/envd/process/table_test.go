package process

import (
	"context"
	"testing"
	"time"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

func newTestTable(t *testing.T, opts Options) *Table {
	t.Helper()
	tab := NewTable(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tab.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return tab
}

func waitEnd(t *testing.T, p *Proc) *envdv1.EndEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var cursor uint64
	for {
		r := p.log.read(cursor, 1<<30)
		cursor = r.next
		if r.end != nil {
			return r.end
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not end", p.pid)
		}
		if len(r.events) > 0 {
			continue
		}
		select {
		case <-r.wake:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestOutputNeverWaitsForReaders(t *testing.T) {
	tab := newTestTable(t, Options{})
	// 64 MiB of output and nobody reading: the process must still finish
	// promptly, its old output overtaken in the buffer.
	start := time.Now()
	p, err := tab.Start(&envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "head", Args: []string{"-c", "67108864", "/dev/zero"}}})
	if err != nil {
		t.Fatal(err)
	}
	if end := waitEnd(t, p); end.ExitCode != 0 {
		t.Fatalf("end = %v", end)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with no reader", d)
	}
	if got := p.log.retained(); got < 1<<20 || got > 1<<20+64<<10 {
		t.Errorf("retained %d bytes, want about 1 MiB", got)
	}
}

func TestTableForgetsOldFinishedProcesses(t *testing.T) {
	tab := newTestTable(t, Options{MaxFinished: 2})
	var procs []*Proc
	for range 3 {
		p, err := tab.Start(&envdv1.StartRequest{Process: &envdv1.ProcessConfig{Cmd: "true"}})
		if err != nil {
			t.Fatal(err)
		}
		waitEnd(t, p)
		procs = append(procs, p)
	}
	// finish records the process in the table just after the end event.
	time.Sleep(50 * time.Millisecond)
	tab.prune(time.Now())
	sel := func(p *Proc) *envdv1.ProcessSelector {
		return &envdv1.ProcessSelector{Selector: &envdv1.ProcessSelector_Pid{Pid: uint32(p.pid)}}
	}
	if _, err := tab.Find(sel(procs[0])); err == nil {
		t.Error("oldest finished process still known beyond MaxFinished")
	}
	for _, p := range procs[1:] {
		if _, err := tab.Find(sel(p)); err != nil {
			t.Errorf("recent finished process %d forgotten: %v", p.pid, err)
		}
	}
	// And all of them after KeepFinished.
	tab.prune(time.Now().Add(time.Hour))
	if n := len(tab.List()); n != 0 {
		t.Errorf("%d processes listed after KeepFinished, want 0", n)
	}
}
