package agent_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// BenchmarkPauseResume measures the agent's side of the lifecycle on a
// capsule (1 vCPU, 512 MiB) that has touched 64 MiB of memory: pause (until
// the saved state is durable and the sandbox gone) and resume (until envd
// answers again), each through the agent's RPC; the disk a paused capsule
// takes; and, in the same run, create→first command from a snapshot of that
// capsule against the same from its base template with a booting capsule
// (the baseline) and with the warm pool.
func BenchmarkPauseResume(b *testing.B) {
	const cycles, creates = 20, 15
	s := stacktest.Start(b, stacktest.Options{ColdStarts: true})
	svc := s.CapsuleService()
	ctx := context.Background()

	create := func(template string) (string, time.Duration) {
		id := uuid.NewString()
		t0 := time.Now()
		_, err := svc.CreateCapsule(ctx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{Spec: &hostagentv1.CapsuleSpec{
			CapsuleId: id, Template: template, Vcpus: 1, MemoryMb: 512, DiskMb: 1024,
		}}))
		if err != nil {
			b.Fatalf("CreateCapsule(%s): %v", template, err)
		}
		if r := stacktest.Run(b, s.Envd(b, id), "true"); r.ExitCode != 0 {
			b.Fatalf("true: %+v", r)
		}
		return id, time.Since(t0)
	}
	destroy := func(id string) {
		if _, err := svc.DestroyCapsule(ctx, connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id})); err != nil {
			b.Fatal(err)
		}
	}

	id, _ := create("minimal")
	defer destroy(id)
	if r := stacktest.Run(b, s.Envd(b, id), counterLoop+" head -c 67108864 /dev/urandom > /dev/shm/touched"); r.ExitCode != 0 {
		b.Fatalf("touching 64 MiB: %+v", r)
	}
	var pauses, resumes []time.Duration
	var savedBytes int64
	for b.Loop() {
		for range cycles {
			t0 := time.Now()
			res, err := svc.PauseCapsule(ctx, connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: id}))
			if err != nil {
				b.Fatal(err)
			}
			pauses = append(pauses, time.Since(t0))
			savedBytes = res.Msg.GetCapsule().GetSnapshotBytes()
			t0 = time.Now()
			if _, err := svc.ResumeCapsule(ctx, connect.NewRequest(&hostagentv1.ResumeCapsuleRequest{CapsuleId: id})); err != nil {
				b.Fatal(err)
			}
			resumes = append(resumes, time.Since(t0))
		}
	}
	b.StopTimer()

	name := "bench-" + uuid.NewString()[:8]
	if _, err := svc.SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{CapsuleId: id, Template: name, Resume: true})); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_, _ = svc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Template: name}))
	}()
	var fromSnap, fromBase []time.Duration
	for i := range creates + 2 {
		sid, d := create(name)
		destroy(sid)
		bid, e := create("minimal")
		destroy(bid)
		if i >= 2 { // the first ones warm the page cache
			fromSnap, fromBase = append(fromSnap, d), append(fromBase, e)
		}
	}

	ms, pct := stacktest.Millis, stacktest.Percentile
	b.ReportMetric(ms(pct(pauses, 50)), "pause-p50-ms")
	b.ReportMetric(ms(pct(pauses, 95)), "pause-p95-ms")
	b.ReportMetric(ms(pct(resumes, 50)), "resume-p50-ms")
	b.ReportMetric(ms(pct(resumes, 95)), "resume-p95-ms")
	b.ReportMetric(float64(savedBytes)/(1<<20), "paused-MiB")
	b.ReportMetric(ms(pct(fromSnap, 50)), "from-snapshot-p50-ms")
	b.ReportMetric(ms(pct(fromBase, 50)), "from-base-p50-ms")
	b.ReportMetric(float64(pct(fromSnap, 50))/float64(pct(fromBase, 50)), "snapshot/base")
	b.ReportMetric(float64(pct(resumes, 50))/float64(pct(fromBase, 50)), "resume/boot")
	b.Logf("64 MiB touched, n=%d: pause p50 %.1f ms p95 %.1f ms; resume p50 %.1f ms p95 %.1f ms; paused capsule on disk %.1f MiB; "+
		"create→first command n=%d: from snapshot p50 %.1f ms p95 %.1f ms, from base (booting) p50 %.1f ms p95 %.1f ms (%.2f×); resume p50 / booting create p50 = %.2f",
		len(pauses), ms(pct(pauses, 50)), ms(pct(pauses, 95)), ms(pct(resumes, 50)), ms(pct(resumes, 95)),
		float64(savedBytes)/(1<<20), len(fromSnap), ms(pct(fromSnap, 50)), ms(pct(fromSnap, 95)),
		ms(pct(fromBase, 50)), ms(pct(fromBase, 95)), float64(pct(fromSnap, 50))/float64(pct(fromBase, 50)),
		float64(pct(resumes, 50))/float64(pct(fromBase, 50)))
}
