package api_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// BenchmarkPortProxy measures the port proxy against a direct connection
// to the capsule's address, in the same run on the same capsule: the p50
// of a small GET (goal: at most 2 ms more) and the throughput of a 100 MiB
// download (goal: at least half of direct). Proxied requests carry an API
// key and take the path form, the whole way a client's request goes:
// control plane (authentication, capsule lookup, signing) → agent → the
// capsule's server.
func BenchmarkPortProxy(b *testing.B) {
	const requests, downloads, size = 400, 5, 100 << 20
	st := stacktest.Start(b)
	pc := startPortServers(b, newCapsuleClient(b, st))
	c, err := st.Store.GetCapsule(context.Background(), st.Team.ID, pc.id)
	if err != nil {
		b.Fatal(err)
	}
	direct := "http://" + net.JoinHostPort(c.Address, "8081")
	proxied := st.URL + pc.portPath(8081, "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}}
	get := func(url string, sink io.Writer) (time.Duration, int64) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-API-Key", st.Team.APIKey)
		t0 := time.Now()
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(sink, res.Body)
		_ = res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d, %v", url, res.StatusCode, err)
		}
		return time.Since(t0), n
	}

	var viaProxy, viaDirect []time.Duration
	var proxyMBs, directMBs []float64
	for b.Loop() {
		// Warm both paths' connections, then interleave.
		get(proxied+"/", io.Discard)
		get(direct+"/", io.Discard)
		for range requests {
			d, _ := get(proxied+"/", io.Discard)
			viaProxy = append(viaProxy, d)
			d, _ = get(direct+"/", io.Discard)
			viaDirect = append(viaDirect, d)
		}
		path := fmt.Sprintf("/bytes?n=%d&seed=3", size)
		for range downloads {
			d, n := get(proxied+path, io.Discard)
			proxyMBs = append(proxyMBs, float64(n)/(1<<20)/d.Seconds())
			d, n = get(direct+path, io.Discard)
			directMBs = append(directMBs, float64(n)/(1<<20)/d.Seconds())
		}
	}
	b.StopTimer()

	ms, pct := stacktest.Millis, stacktest.Percentile
	p50p, p50d := pct(viaProxy, 50), pct(viaDirect, 50)
	median := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	mp, md := median(proxyMBs), median(directMBs)
	b.ReportMetric(ms(p50p), "proxy-p50-ms")
	b.ReportMetric(ms(p50d), "direct-p50-ms")
	b.ReportMetric(ms(p50p-p50d), "overhead-p50-ms")
	b.ReportMetric(ms(pct(viaProxy, 95)), "proxy-p95-ms")
	b.ReportMetric(mp, "proxy-MiB/s")
	b.ReportMetric(md, "direct-MiB/s")
	b.ReportMetric(mp/md, "throughput-ratio")
	b.Logf("GET p50: proxy %.2f ms, direct %.2f ms, overhead %.2f ms (goal <= 2 ms); p95 proxy %.2f ms, direct %.2f ms",
		ms(p50p), ms(p50d), ms(p50p-p50d), ms(pct(viaProxy, 95)), ms(pct(viaDirect, 95)))
	b.Logf("100 MiB download, median of %d: proxy %.0f MiB/s, direct %.0f MiB/s, ratio %.2f (goal >= 0.5)",
		len(proxyMBs), mp, md, mp/md)
}
