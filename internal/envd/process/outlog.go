package process

import (
	"sort"
	"sync"

	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// stream says where a chunk of output came from.
type stream uint8

const (
	streamStdout stream = iota
	streamStderr
	streamPty
)

// chunk is one read from a process's output, at byte offset off of the log.
type chunk struct {
	kind stream
	off  uint64
	data []byte
}

// maxEventBytes caps the data of one DataEvent built from adjacent chunks.
const maxEventBytes = 64 << 10

// outlog is a process's output: an append-only sequence of chunks of which
// the newest chunks holding at least limit bytes are kept (at most one chunk
// more). Writers never wait for readers; a
// reader that falls more than limit bytes behind is told how many bytes it
// missed. It is safe for concurrent use.
type outlog struct {
	limit int

	mu     sync.Mutex
	chunks []chunk
	size   int    // bytes held in chunks
	total  uint64 // bytes ever appended; the offset of the next chunk
	end    *envdv1.EndEvent
	wake   chan struct{} // closed and replaced on every change
}

func newOutlog(limit int) *outlog {
	return &outlog{limit: limit, wake: make(chan struct{})}
}

// append adds a copy of data, dropping the oldest chunks beyond the limit.
func (l *outlog) append(kind stream, data []byte) {
	if len(data) == 0 {
		return
	}
	c := chunk{kind: kind, data: append([]byte(nil), data...)}
	l.mu.Lock()
	c.off = l.total
	l.total += uint64(len(data))
	l.chunks = append(l.chunks, c)
	l.size += len(data)
	drop := 0
	// Keep at least limit bytes: drop a chunk only if what remains is enough.
	for drop < len(l.chunks)-1 && l.size-len(l.chunks[drop].data) >= l.limit {
		l.size -= len(l.chunks[drop].data)
		l.chunks[drop] = chunk{}
		drop++
	}
	if drop > 0 {
		l.chunks = l.chunks[drop:]
	}
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// retained returns the number of bytes held.
func (l *outlog) retained() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// finish records the end event; later reads return it once caught up.
func (l *outlog) finish(end *envdv1.EndEvent) {
	l.mu.Lock()
	l.end = end
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// readResult is what a reader at some offset gets.
type readResult struct {
	dropped uint64              // bytes lost between the cursor and events
	events  []*envdv1.DataEvent // next data, adjacent chunks merged
	next    uint64              // cursor after events
	end     *envdv1.EndEvent    // set when the reader is caught up and the process ended
	wake    <-chan struct{}     // closed when there is more to read
}

// read returns up to maxBytes (roughly) of output from cursor on.
func (l *outlog) read(cursor uint64, maxBytes int) readResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := readResult{next: cursor, wake: l.wake}
	if len(l.chunks) > 0 && cursor < l.chunks[0].off {
		r.dropped = l.chunks[0].off - cursor
		cursor = l.chunks[0].off
		r.next = cursor
	}
	i := sort.Search(len(l.chunks), func(i int) bool {
		c := l.chunks[i]
		return c.off+uint64(len(c.data)) > cursor
	})
	budget := maxBytes
	var cur *envdv1.DataEvent
	var curKind stream
	var buf []byte
	flush := func() {
		if cur == nil {
			return
		}
		switch curKind {
		case streamStdout:
			cur.Output = &envdv1.DataEvent_Stdout{Stdout: buf}
		case streamStderr:
			cur.Output = &envdv1.DataEvent_Stderr{Stderr: buf}
		default:
			cur.Output = &envdv1.DataEvent_Pty{Pty: buf}
		}
		r.events = append(r.events, cur)
		cur, buf = nil, nil
	}
	for ; i < len(l.chunks) && budget > 0; i++ {
		c := l.chunks[i]
		data := c.data[cursor-c.off:]
		if cur != nil && (curKind != c.kind || len(buf)+len(data) > maxEventBytes) {
			flush()
		}
		if cur == nil {
			cur, curKind = &envdv1.DataEvent{}, c.kind
			buf = make([]byte, 0, min(maxEventBytes, max(len(data), 4096)))
		}
		buf = append(buf, data...)
		cursor += uint64(len(data))
		budget -= len(data)
	}
	flush()
	r.next = cursor
	if cursor == l.total && l.end != nil {
		r.end = l.end
	}
	return r
}
