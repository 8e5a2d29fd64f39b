package envd_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
)

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkExecTrue measures the round trip of running `true` through envd
// over loopback (Start until the end event) against exec.Command("true").Run()
// in the same process, and reports both medians and their ratio. The medians
// come from a fixed number of interleaved samples, whatever b.N is.
func BenchmarkExecTrue(b *testing.B) {
	in := newEnvd(b)
	const samples = 200
	for range 10 { // warm up connections and caches
		in.run(b, cmd("true"))
	}
	var viaEnvd, direct []time.Duration
	for range samples {
		start := time.Now()
		in.run(b, cmd("true"))
		viaEnvd = append(viaEnvd, time.Since(start))
		start = time.Now()
		if err := exec.Command("true").Run(); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(start))
	}
	pe, pd := median(viaEnvd), median(direct)
	b.Logf("exec true: envd p50 %v, exec.Command p50 %v, ratio %.2f (%d samples)", pe, pd, float64(pe)/float64(pd), samples)
	for b.Loop() {
		in.run(b, cmd("true"))
	}
	// After the loop: b.Loop's timer reset would drop them.
	b.ReportMetric(float64(pe.Microseconds()), "envd_p50_us")
	b.ReportMetric(float64(pd.Microseconds()), "exec_p50_us")
	b.ReportMetric(float64(pe)/float64(pd), "ratio")
}

// BenchmarkFileTransfer measures upload and download throughput through envd
// against a plain io.Copy (plus fsync, which uploads do too) between two
// files on the same disk, in the same run. Medians of 3 rounds of 256 MiB.
func BenchmarkFileTransfer(b *testing.B) {
	const size = 256 << 20
	const rounds = 3
	in := newEnvd(b)
	ctx := context.Background()
	dir := b.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, randomStream(7, size)); err != nil {
		b.Fatal(err)
	}
	_ = f.Close()

	upload := func() time.Duration {
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		start := time.Now()
		if _, err := in.Client.Upload(ctx, filepath.Join(dir, "uploaded"), f, envdclient.UploadOptions{Size: size}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	download := func() time.Duration {
		out, err := os.Create(filepath.Join(dir, "downloaded"))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = out.Close() }()
		start := time.Now()
		body, err := in.Client.Download(ctx, src, "")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(out, body)
		_ = body.Close()
		if err != nil || n != size {
			b.Fatalf("download: %d bytes, %v", n, err)
		}
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	plainCopy := func() time.Duration {
		in, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = in.Close() }()
		start := time.Now()
		out, err := os.Create(filepath.Join(dir, "copied"))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = out.Close() }()
		if _, err := io.Copy(out, in); err != nil {
			b.Fatal(err)
		}
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var up, down, cp []time.Duration
	for range rounds {
		up = append(up, upload())
		down = append(down, download())
		cp = append(cp, plainCopy())
	}
	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	u, d, c := mbps(median(up)), mbps(median(down)), mbps(median(cp))
	b.Logf("256 MiB: upload %.0f MB/s, download %.0f MB/s, io.Copy+fsync %.0f MB/s (ratios %.2f, %.2f)", u, d, c, u/c, d/c)
	b.SetBytes(size)
	for b.Loop() {
		upload()
	}
	b.ReportMetric(u, "upload_MB/s")
	b.ReportMetric(d, "download_MB/s")
	b.ReportMetric(c, "iocopy_MB/s")
	b.ReportMetric(u/c, "upload/iocopy")
	b.ReportMetric(d/c, "download/iocopy")
}
