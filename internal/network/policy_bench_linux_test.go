package network

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

func pctl(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

// BenchmarkEgressPolicy measures, in one run: a lookup of an allowed name
// from a capsule with a default-deny policy (through the forwarder, which
// asks upstream and adds the answer to the capsule's set before
// answering) against the same lookup sent straight to the upstream from
// the host (the baseline); and a policy change on a capsule.
func BenchmarkEgressPolicy(b *testing.B) {
	const n = 200
	w := newPolicyWorldB(b)
	s, err := w.m.Setup(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	deny := egress.Policy{Internet: true, Allow: []string{"allowed.test"}}
	if err := w.m.SetPolicy(context.Background(), "bench", deny); err != nil {
		b.Fatal(err)
	}
	q := new(dns.Msg).SetQuestion("allowed.test.", dns.TypeA)
	var direct, forwarded, changes []time.Duration
	for b.Loop() {
		for range n {
			c := &dns.Client{Timeout: 3 * time.Second}
			t0 := time.Now()
			if _, _, err := c.Exchange(q, w.in.DNS.String()); err != nil {
				b.Fatal(err)
			}
			direct = append(direct, time.Since(t0))
		}
		err := inNetns(s.NetnsPath, func() error {
			for range n {
				c := &dns.Client{Timeout: 3 * time.Second}
				t0 := time.Now()
				resp, _, err := c.Exchange(q, "192.0.2.53:53")
				if err != nil {
					return err
				}
				if len(resp.Answer) != 1 {
					b.Fatalf("forwarded answer: %v", resp)
				}
				forwarded = append(forwarded, time.Since(t0))
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			p := deny
			if i%2 == 1 {
				p = egress.Policy{Internet: true, Deny: []string{"denied.test", "198.51.100.0/24"}}
			}
			t0 := time.Now()
			if err := w.m.SetPolicy(context.Background(), "bench", p); err != nil {
				b.Fatal(err)
			}
			changes = append(changes, time.Since(t0))
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pctl(direct, 50)), "lookup-direct-p50-ms")
	b.ReportMetric(ms(pctl(forwarded, 50)), "lookup-forwarded-p50-ms")
	b.ReportMetric(float64(pctl(forwarded, 50))/float64(pctl(direct, 50)), "forwarded/direct")
	b.ReportMetric(ms(pctl(changes, 50)), "policy-change-p50-ms")
	b.ReportMetric(ms(pctl(changes, 95)), "policy-change-p95-ms")
	b.Logf("n=%d: lookup direct p50 %.2f ms, through the forwarder (default-deny, learning) p50 %.2f ms p95 %.2f ms (%.2f×); policy change p50 %.2f ms p95 %.2f ms",
		len(direct), ms(pctl(direct, 50)), ms(pctl(forwarded, 50)), ms(pctl(forwarded, 95)),
		float64(pctl(forwarded, 50))/float64(pctl(direct, 50)), ms(pctl(changes, 50)), ms(pctl(changes, 95)))
}
