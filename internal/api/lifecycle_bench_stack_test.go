package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// BenchmarkPauseResume measures, through the REST API, what users wait for
// on a capsule that has touched 64 MiB of memory: pause and resume (p50,
// p95), the disk a paused capsule takes, and creating a capsule from a
// snapshot against creating one from the base template, in the same run.
// The agent's warm pool is off, so that both creates do their whole work
// (a snapshot is never pooled).
func BenchmarkPauseResume(b *testing.B) {
	const cycles, creates = 20, 10
	st := stacktest.Start(b, stacktest.Options{ColdStarts: true})
	cc := newCapsuleClient(b, st)
	// /dev/shm is memory inside the sandbox: 64 MiB that a pause must save.
	cc.sh("head -c 67108864 /dev/urandom > /dev/shm/ballast")

	var pauses, resumes []time.Duration
	var snapBytes float64
	for b.Loop() {
		for range cycles {
			t0 := time.Now()
			p := cc.call("POST", "/pause", nil).want(b, "pause", http.StatusOK)
			pauses = append(pauses, time.Since(t0))
			snapBytes = p.num("snapshot_bytes")
			t0 = time.Now()
			cc.call("POST", "/resume", nil).want(b, "resume", http.StatusOK)
			resumes = append(resumes, time.Since(t0))
		}
	}
	b.StopTimer()

	teamCall(b, st, st.Team, "POST", "/v1/snapshots", map[string]any{"capsule_id": cc.id, "name": "bench"}).
		want(b, "snapshot", http.StatusCreated)
	b.Cleanup(func() { teamCall(b, st, st.Team, "DELETE", "/v1/snapshots/bench", nil) })
	create := func(template string) time.Duration {
		t0 := time.Now()
		a := teamCall(b, st, st.Team, "POST", "/v1/capsules", map[string]any{"template": template}).
			want(b, "create from "+template, http.StatusCreated)
		d := time.Since(t0)
		teamCall(b, st, st.Team, "DELETE", "/v1/capsules/"+a.str("id"), nil).want(b, "destroy", http.StatusNoContent)
		return d
	}
	// Interleaved, so that both see the same machine.
	var fromSnap, fromBase []time.Duration
	for range creates {
		fromSnap = append(fromSnap, create("bench"))
		fromBase = append(fromBase, create("minimal"))
	}

	ms, pct := stacktest.Millis, stacktest.Percentile
	b.ReportMetric(ms(pct(pauses, 50)), "pause-p50-ms")
	b.ReportMetric(ms(pct(pauses, 95)), "pause-p95-ms")
	b.ReportMetric(ms(pct(resumes, 50)), "resume-p50-ms")
	b.ReportMetric(ms(pct(resumes, 95)), "resume-p95-ms")
	b.ReportMetric(snapBytes/(1<<20), "paused-disk-MiB")
	b.ReportMetric(ms(pct(fromSnap, 50)), "create-snapshot-p50-ms")
	b.ReportMetric(ms(pct(fromBase, 50)), "create-base-p50-ms")
	b.ReportMetric(float64(pct(fromSnap, 50))/float64(pct(fromBase, 50)), "snapshot/base")
	b.ReportMetric(float64(pct(resumes, 50))/float64(pct(fromBase, 50)), "resume/create-base")
	b.Logf("64 MiB touched, %d cycles: pause p50 %.1f ms p95 %.1f ms; resume p50 %.1f ms p95 %.1f ms; paused capsule %.1f MiB on disk; "+
		"create (n=%d, no pool) from snapshot p50 %.1f ms, from base p50 %.1f ms (%.2f×); resume p50 / create-from-base p50 = %.2f",
		cycles, ms(pct(pauses, 50)), ms(pct(pauses, 95)), ms(pct(resumes, 50)), ms(pct(resumes, 95)), snapBytes/(1<<20),
		creates, ms(pct(fromSnap, 50)), ms(pct(fromBase, 50)), float64(pct(fromSnap, 50))/float64(pct(fromBase, 50)),
		float64(pct(resumes, 50))/float64(pct(fromBase, 50)))
}
