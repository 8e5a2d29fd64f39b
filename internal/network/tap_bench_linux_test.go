package network

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkTapPeer measures what the routed tap adds to a capsule's
// network, against the veth peer (the baseline) in the same run: Setup (a
// create's network step), Renew (a resume's) and Teardown, each p50 over n
// capsules. The tap peer adds the tap, its address and MAC, forwarding and
// the namespace's NAT table.
func BenchmarkTapPeer(b *testing.B) {
	const n = 30
	ctx := context.Background()
	type phases struct{ setup, renew, teardown []time.Duration }
	run := func(peer Peer) phases {
		cfg := newTestConfig(b)
		cfg.Peer = peer
		m := newTestManager(b, cfg)
		var p phases
		for i := range n {
			id := fmt.Sprintf("bench-%s-%d", peer, i)
			t0 := time.Now()
			if _, err := m.Setup(ctx, id); err != nil {
				b.Fatal(err)
			}
			p.setup = append(p.setup, time.Since(t0))
			t0 = time.Now()
			if _, err := m.Renew(ctx, id); err != nil {
				b.Fatal(err)
			}
			p.renew = append(p.renew, time.Since(t0))
			t0 = time.Now()
			if err := m.Teardown(ctx, id); err != nil {
				b.Fatal(err)
			}
			p.teardown = append(p.teardown, time.Since(t0))
		}
		return p
	}
	var veth, tap phases
	for b.Loop() {
		veth, tap = run(PeerVeth), run(PeerTap)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, row := range []struct {
		name      string
		veth, tap []time.Duration
	}{{"setup", veth.setup, tap.setup}, {"renew", veth.renew, tap.renew}, {"teardown", veth.teardown, tap.teardown}} {
		v, t := pctl(row.veth, 50), pctl(row.tap, 50)
		b.ReportMetric(ms(t), row.name+"-tap-p50-ms")
		b.ReportMetric(float64(t)/float64(v), row.name+"-tap/veth")
		b.Logf("%s: veth p50 %.2f ms, tap p50 %.2f ms p95 %.2f ms (%.2f×)", row.name, ms(v), ms(t), ms(pctl(row.tap, 95)), float64(t)/float64(v))
	}
}
