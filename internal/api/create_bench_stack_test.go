package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// BenchmarkCreateToFirstCommand measures what a user waits for: from
// POST /v1/capsules until `true` has run in the new capsule (POST exec
// answered), through the REST API of a running control plane and agent.
// In the same run it measures the raw baseline: `runsc run` of the same
// minimal rootfs executing `/bin/sh -c true` until it exits.
//
// It reports p50/p95 of N sequential creates with the agent's warm pool (the
// default) and without it (every capsule boots), of 20 concurrent creates,
// and of the baseline, and the ratios of the sequential p50s to the
// baseline's (target ≤ 1.3). The same sequential runs, interleaved, create
// capsules of the base template (Debian with Python and Node.js): their
// p50s and their ratios to minimal's say what the batteries cost at start.
func BenchmarkCreateToFirstCommand(b *testing.B) {
	const sequential, concurrent = 30, 20
	templates := []string{"minimal", "base"}
	warm := stacktest.Start(b, stacktest.Options{Templates: templates})
	cold := stacktest.Start(b, stacktest.Options{ColdStarts: true, Templates: templates})
	runsc, images := stacktest.Env(b)

	createAndRun := func(st *stacktest.Stack, template string) (time.Duration, string) {
		t0 := time.Now()
		var c struct {
			ID string `json:"id"`
		}
		st.Team.JSON(b, st, "POST", "/v1/capsules", map[string]any{"template": template}, http.StatusCreated, &c)
		var out struct {
			ExitCode int `json:"exit_code"`
		}
		st.Team.JSON(b, st, "POST", "/v1/capsules/"+c.ID+"/exec", map[string]any{"cmd": "true"}, http.StatusOK, &out)
		d := time.Since(t0)
		if out.ExitCode != 0 {
			b.Fatalf("true exited %d", out.ExitCode)
		}
		return d, c.ID
	}
	destroy := func(st *stacktest.Stack, id string) {
		res := st.Team.Do(b, st, "DELETE", "/v1/capsules/"+id, nil)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusNoContent {
			b.Fatalf("DELETE %s = %d", id, res.StatusCode)
		}
	}
	bundle := rawBundle(b, filepath.Join(images, "minimal", "rootfs"))
	rawRun := func(i int) time.Duration {
		root := filepath.Join(bundle, "state")
		id := fmt.Sprintf("raw-%d-%d", os.Getpid(), i)
		t0 := time.Now()
		cmd := exec.Command(runsc, "--root", root, "--network=none",
			"--overlay2=root:dir="+filepath.Join(bundle, "overlay")+",size=1024m",
			"run", "--bundle", bundle, id)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("runsc run: %v: %s", err, out)
		}
		return time.Since(t0)
	}
	// settle waits until the warm stack's pool is full again (two
	// capsules of each template), as it is for a user who does not create
	// capsules back to back within ~0.2 s.
	settle := func() {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			n := map[string]int{}
			paths, _ := filepath.Glob(filepath.Join(warm.AgentConfig.Dir, "sandboxes", "*", "capsule.json"))
			for _, p := range paths {
				if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), `"status":"pooled"`) {
					for _, t := range templates {
						if strings.Contains(string(b), `"template":"`+t+`"`) {
							n[t]++
						}
					}
				}
			}
			if n["minimal"] >= 2 && n["base"] >= 2 {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.Fatal("the warm pool did not refill within 10 s")
	}

	// Warm-up: first runs pay for page cache and connection set-up.
	for i := range 3 {
		for _, tmpl := range templates {
			settle()
			_, id := createAndRun(warm, tmpl)
			destroy(warm, id)
			_, id = createAndRun(cold, tmpl)
			destroy(cold, id)
		}
		rawRun(-1 - i)
	}

	var seqWarm, seqCold, baseWarm, baseCold, raw []time.Duration
	for b.Loop() {
		// Interleaved, so that all see the same machine.
		for range sequential {
			b.StopTimer()
			settle()
			b.StartTimer()
			d, id := createAndRun(warm, "minimal")
			seqWarm = append(seqWarm, d)
			b.StopTimer()
			destroy(warm, id)
			d, id = createAndRun(cold, "minimal")
			seqCold = append(seqCold, d)
			destroy(cold, id)
			raw = append(raw, rawRun(len(raw)))
			settle()
			d, id = createAndRun(warm, "base")
			baseWarm = append(baseWarm, d)
			destroy(warm, id)
			d, id = createAndRun(cold, "base")
			baseCold = append(baseCold, d)
			destroy(cold, id)
			b.StartTimer()
		}
	}

	b.StopTimer()
	settle()
	var mu sync.Mutex
	var conc []time.Duration
	var ids []string
	var wg sync.WaitGroup
	for range concurrent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, id := createAndRun(warm, "minimal")
			mu.Lock()
			conc, ids = append(conc, d), append(ids, id)
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, id := range ids {
		destroy(warm, id)
	}

	ms, pct := stacktest.Millis, stacktest.Percentile
	ratio := func(ds []time.Duration) float64 { return float64(pct(ds, 50)) / float64(pct(raw, 50)) }
	b.ReportMetric(ms(pct(seqWarm, 50)), "warm-p50-ms")
	b.ReportMetric(ms(pct(seqWarm, 95)), "warm-p95-ms")
	b.ReportMetric(ms(pct(seqCold, 50)), "cold-p50-ms")
	b.ReportMetric(ms(pct(seqCold, 95)), "cold-p95-ms")
	b.ReportMetric(ms(pct(conc, 50)), "conc20-p50-ms")
	b.ReportMetric(ms(pct(conc, 95)), "conc20-p95-ms")
	b.ReportMetric(ms(pct(raw, 50)), "raw-runsc-p50-ms")
	b.ReportMetric(ratio(seqWarm), "warm/raw")
	b.ReportMetric(ratio(seqCold), "cold/raw")
	vsMinimal := func(base, minimal []time.Duration) float64 {
		return float64(pct(base, 50)) / float64(pct(minimal, 50))
	}
	b.ReportMetric(ms(pct(baseWarm, 50)), "base-warm-p50-ms")
	b.ReportMetric(ms(pct(baseCold, 50)), "base-cold-p50-ms")
	b.ReportMetric(vsMinimal(baseWarm, seqWarm), "base/minimal-warm")
	b.ReportMetric(vsMinimal(baseCold, seqCold), "base/minimal-cold")
	b.Logf("create→first command, n=%d each: warm pool p50 %.1f ms p95 %.1f ms (%.2f× raw); no pool p50 %.1f ms p95 %.1f ms (%.2f× raw); "+
		"20 concurrent p50 %.1f ms p95 %.1f ms; raw `runsc run` p50 %.1f ms p95 %.1f ms",
		len(seqWarm), ms(pct(seqWarm, 50)), ms(pct(seqWarm, 95)), ratio(seqWarm),
		ms(pct(seqCold, 50)), ms(pct(seqCold, 95)), ratio(seqCold),
		ms(pct(conc, 50)), ms(pct(conc, 95)), ms(pct(raw, 50)), ms(pct(raw, 95)))
	b.Logf("base template, n=%d each: warm pool p50 %.1f ms p95 %.1f ms (%.2f× minimal's); no pool p50 %.1f ms p95 %.1f ms (%.2f× minimal's)",
		len(baseWarm), ms(pct(baseWarm, 50)), ms(pct(baseWarm, 95)), vsMinimal(baseWarm, seqWarm),
		ms(pct(baseCold, 50)), ms(pct(baseCold, 95)), vsMinimal(baseCold, seqCold))
}

// rawBundle writes an OCI bundle that runs `/bin/sh -c true` in rootfs, the
// way `runsc spec` would, and returns its directory.
func rawBundle(b *testing.B, rootfs string) string {
	dir := stacktest.ScratchDir(b)
	if err := os.MkdirAll(filepath.Join(dir, "overlay"), 0o700); err != nil {
		b.Fatal(err)
	}
	spec := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"/bin/sh", "-c", "true"},
			Env:  []string{"PATH=/usr/bin:/bin"},
			Cwd:  "/",
		},
		Root: &specs.Root{Path: rootfs},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"ro"}},
		},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
			{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
		}},
	}
	j, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), j, 0o600); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// --network=none leaves an empty namespace mounted under the root.
		_ = exec.CommandContext(context.Background(), "umount", "-l", filepath.Join(dir, "state", "null-netns")).Run()
	})
	return dir
}
