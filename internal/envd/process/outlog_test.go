package process

import (
	"bytes"
	"testing"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

func collect(t *testing.T, l *outlog, cursor uint64) (dropped uint64, out []byte, end *envdv1.EndEvent) {
	t.Helper()
	for {
		r := l.read(cursor, 1<<20)
		dropped += r.dropped
		for _, ev := range r.events {
			switch o := ev.Output.(type) {
			case *envdv1.DataEvent_Stdout:
				out = append(out, o.Stdout...)
			case *envdv1.DataEvent_Stderr:
				out = append(out, o.Stderr...)
			}
		}
		cursor = r.next
		if len(r.events) == 0 {
			return dropped, out, r.end
		}
	}
}

func TestOutlogKeepsEverythingUnderLimit(t *testing.T) {
	l := newOutlog(1 << 10)
	l.append(streamStdout, []byte("hello "))
	l.append(streamStderr, []byte("world"))
	l.finish(&envdv1.EndEvent{ExitCode: 3, Exited: true})
	dropped, out, end := collect(t, l, 0)
	if dropped != 0 || string(out) != "hello world" || end.GetExitCode() != 3 {
		t.Fatalf("got dropped=%d out=%q end=%v, want 0, %q, exit 3", dropped, out, end, "hello world")
	}
}

func TestOutlogDropsOldestAndReportsIt(t *testing.T) {
	l := newOutlog(100)
	var all []byte
	for i := range 50 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, 10)
		all = append(all, b...)
		l.append(streamStdout, b)
	}
	dropped, out, _ := collect(t, l, 0)
	if dropped != 400 {
		t.Errorf("dropped = %d, want 400 (exactly the limit kept)", dropped)
	}
	if !bytes.Equal(out, all[400:]) {
		t.Errorf("out = %q, want %q", out, all[400:])
	}
	// A reader in the middle of a chunk resumes inside it.
	_, out, _ = collect(t, l, 495)
	if !bytes.Equal(out, all[495:]) {
		t.Errorf("from 495: out = %q, want %q", out, all[495:])
	}
}

func TestOutlogMergesAdjacentChunksOfOneKind(t *testing.T) {
	l := newOutlog(1 << 20)
	for range 10 {
		l.append(streamStdout, []byte("x"))
	}
	l.append(streamStderr, []byte("y"))
	r := l.read(0, 1<<20)
	if len(r.events) != 2 {
		t.Fatalf("got %d events, want 2 (merged stdout, stderr)", len(r.events))
	}
	if got := string(r.events[0].GetStdout()); got != "xxxxxxxxxx" {
		t.Errorf("stdout = %q, want 10 x", got)
	}
}

func TestOutlogWakesReaders(t *testing.T) {
	l := newOutlog(1 << 10)
	r := l.read(0, 1<<10)
	select {
	case <-r.wake:
		t.Fatal("woken before any write")
	default:
	}
	l.append(streamStdout, []byte("x"))
	select {
	case <-r.wake:
	default:
		t.Fatal("not woken by a write")
	}
}
