package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkTemplateCopy moves the base template (about 435 MB, 37,000
// files, from `make test`'s images) from one host's images directory to
// another's, as a copy between hosts does without the network: export,
// digest, unpack, sync, rename. In the same run, the baseline reads the
// template into the tar stream only (what the sending side costs). It
// reports the medians and the copy's ratio to the baseline.
func BenchmarkTemplateCopy(b *testing.B) {
	images := os.Getenv("WRENN_TEST_IMAGES")
	if images == "" {
		b.Fatal("WRENN_TEST_IMAGES is not set: run the benchmarks with `make bench`, which builds the base template")
	}
	from := transferHost(b)
	if err := os.Symlink(filepath.Join(images, "base"), filepath.Join(from.imagesDir(), "base")); err != nil {
		b.Fatal(err)
	}
	const rounds = 3
	var reads, copies []time.Duration
	var size int64
	for range rounds {
		t0 := time.Now()
		n, err := countExport(from)
		if err != nil {
			b.Fatal(err)
		}
		reads, size = append(reads, time.Since(t0)), n

		to := transferHost(b)
		t0 = time.Now()
		pr, pw := io.Pipe()
		sum := sha256.New()
		go func() {
			_ = pw.CloseWithError(from.ExportTemplate(context.Background(), "base", io.MultiWriter(pw, sum)))
		}()
		if _, err := to.ReceiveTemplate(context.Background(), "base", pr, func() string { return hex.EncodeToString(sum.Sum(nil)) }); err != nil {
			b.Fatal(err)
		}
		copies = append(copies, time.Since(t0))
		_ = os.RemoveAll(to.imagesDir())
	}
	median := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	read, cp := median(reads), median(copies)
	b.ReportMetric(float64(size)/(1<<20), "stream-MiB")
	b.ReportMetric(read.Seconds(), "read-p50-s")
	b.ReportMetric(cp.Seconds(), "copy-p50-s")
	b.ReportMetric(float64(size)/(1<<20)/cp.Seconds(), "copy-MiB/s")
	b.ReportMetric(cp.Seconds()/read.Seconds(), "copy/read")
}

// countExport streams template base of c to nowhere and counts it.
func countExport(c *Capsules) (int64, error) {
	cw := &countingWriter{}
	err := c.ExportTemplate(context.Background(), "base", cw)
	return cw.n, err
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
