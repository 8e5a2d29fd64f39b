package api_test

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// bombSize is what gzipBomb expands to: 256 MiB of zeros, about 254 KiB
// gzipped.
const bombSize = 256 << 20

func gzipBomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range bombSize >> 20 {
		_, _ = zw.Write(zeros)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// heapAllocated returns the bytes f allocated on the control plane's heap
// (the API runs in this process) and the heap in use afterwards.
func heapAllocated(f func()) (total, inUse uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, after.HeapAlloc
}

// TestRiggedAgentAnswersBounded points a host at an "agent" that answers
// every call with a gzip bomb or with an oversize message: the control plane
// refuses the answer without inflating it and keeps serving.
func TestRiggedAgentAnswersBounded(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
	b := gzipBomb(t)
	plain := bytes.Repeat([]byte{0x0a, 0x00}, 32<<20) // 64 MiB of empty fields
	for _, tc := range []struct {
		name string
		body []byte
		gzip bool
	}{{"gzip bomb", b, true}, {"64 MiB message", plain, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var acceptEncoding string
			agent, agentAddr := newAgentServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				acceptEncoding = r.Header.Get("Accept-Encoding")
				w.Header().Set("Content-Type", "application/proto")
				if tc.gzip {
					w.Header().Set("Content-Encoding", "gzip")
				}
				_, _ = w.Write(tc.body)
			}))
			defer agent.Close()
			e.exec(`UPDATE hosts SET address = $2 WHERE id = $1`, reg.hostID, agentAddr)
			var got response
			total, inUse := heapAllocated(func() {
				got = e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK)
			})
			t.Logf("%s (%d KiB on the wire): control plane allocated %.1f MiB, heap in use %.1f MiB; agent_error %q",
				tc.name, len(tc.body)>>10, float64(total)/(1<<20), float64(inUse)/(1<<20), got.str("agent_error"))
			if got.body["agent"] != nil || got.str("agent_error") == "" {
				t.Errorf("got %s, want agent_error and no agent", got.raw)
			}
			if total > 48<<20 {
				t.Errorf("refusing the answer allocated %d MiB, want under 48 MiB", total>>20)
			}
			if strings.Contains(acceptEncoding, "gzip") {
				t.Errorf("the control plane asked the agent for gzip (Accept-Encoding %q)", acceptEncoding)
			}
			e.call("GET", "/health", nil).want(t, "health after the answer", http.StatusOK)
		})
	}
}
