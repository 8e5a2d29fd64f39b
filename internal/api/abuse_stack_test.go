package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// abuseProbe asks another team's capsule to run a command every 100 ms
// and records how long each answer took; every answer must come within a
// second. It also samples the host's threads and the control plane's heap
// (it runs in this process).
type abuseProbe struct {
	st     *stacktest.Stack
	team   stacktest.Team
	id     string
	client *http.Client

	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	answers int
	worst   time.Duration
	// failed are the answers that did not come or were wrong; slow the
	// right ones that took over a second.
	failed, slow []string
	// phase names the attack under way, for failures.
	phase      string
	peakTasks  int
	peakHeapMB float64

	lapStart time.Time
	laps     []string
}

// requestSeries counts the control plane's wrenn_http_requests_total
// series.
func requestSeries(t *testing.T, st *stacktest.Stack) int {
	t.Helper()
	res, err := http.Get(st.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	n := 0
	for line := range strings.Lines(string(metrics)) {
		if strings.HasPrefix(line, "wrenn_http_requests_total{") {
			n++
		}
	}
	return n
}

func startProbe(t *testing.T, st *stacktest.Stack, team stacktest.Team, capsuleID string) *abuseProbe {
	p := &abuseProbe{st: st, team: team, id: capsuleID, client: &http.Client{Timeout: 5 * time.Second},
		stop: make(chan struct{}), phase: "start", peakTasks: stacktest.HostTasks(t)}
	p.wg.Go(p.ask)
	p.wg.Go(func() { p.sample(t) })
	return p
}

func (p *abuseProbe) set(phase string) {
	p.mu.Lock()
	p.phase = phase
	p.mu.Unlock()
	p.lapStart = time.Now()
}

// lap records how long the phase under way took.
func (p *abuseProbe) lap(phase string) {
	p.laps = append(p.laps, fmt.Sprintf("%s %v", phase, time.Since(p.lapStart).Round(10*time.Millisecond)))
}

func (p *abuseProbe) ask() {
	body := []byte(`{"cmd": "echo alive"}`)
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
		req, _ := http.NewRequest("POST", p.st.URL+"/v1/capsules/"+p.id+"/exec", bytes.NewReader(body))
		req.Header.Set("X-API-Key", p.team.APIKey)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		res, err := p.client.Do(req)
		var out struct {
			Stdout string `json:"stdout"`
		}
		status := 0
		if err == nil {
			status = res.StatusCode
			_ = json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&out)
			_ = res.Body.Close()
		}
		took := time.Since(start)
		p.mu.Lock()
		p.answers++
		p.worst = max(p.worst, took)
		what := fmt.Sprintf("during %s: %d %q in %v (%v)", p.phase, status, out.Stdout, took.Round(time.Millisecond), err)
		switch {
		case err != nil || status != http.StatusOK || out.Stdout != "alive\n":
			p.failed = append(p.failed, what)
		case took > time.Second:
			p.slow = append(p.slow, what)
		}
		p.mu.Unlock()
	}
}

func (p *abuseProbe) sample(t *testing.T) {
	var ms runtime.MemStats
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		tasks := stacktest.HostTasks(t)
		runtime.ReadMemStats(&ms)
		p.mu.Lock()
		p.peakTasks = max(p.peakTasks, tasks)
		p.peakHeapMB = max(p.peakHeapMB, float64(ms.HeapInuse)/(1<<20))
		p.mu.Unlock()
	}
}

func (p *abuseProbe) end() {
	close(p.stop)
	p.wg.Wait()
}

// consoleBytes is what a capsule's console log takes on the host.
func consoleBytes(t *testing.T, agentDir, runtimeID string) int64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(agentDir, "sandboxes", runtimeID, "console.log*"))
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestAbuseStack runs, one after the other against one real stack, the
// attacks of a hostile tenant: a fork bomb, a console flood, a disk fill,
// snapshots past the quota, a rigged agent's gzip bomb, an oversize
// listing, a flood of invented HTTP methods, a replayed call token and
// an SSRF registration. Throughout, another team's capsule is asked to run
// a command every 100 ms and must answer each time within a second; each
// attack must be stopped where the per-attack tests say. The figures
// (peak host threads, control-plane heap, disk taken) are logged.
//
// Its one-second rule is about the attacks, not about other tests: run
// beside the rest of the suite (two packages at once on 2 cores, load
// averages of 40 when several suites shared the machine) answers of
// several seconds were seen whatever the attack. So it runs alone, after
// the rest: `make test` runs it again with WRENN_TEST_ALONE=1 once `go
// test ./...` is done, and without that setting it skips.
func TestAbuseStack(t *testing.T) {
	if os.Getenv("WRENN_TEST_ALONE") != "1" {
		t.Skip("the abuse suite measures latency, so it runs alone: `make test` runs it after the rest, with WRENN_TEST_ALONE=1")
	}
	const pidsLimit = 256
	st := stacktest.Start(t, stacktest.Options{ColdStarts: true, CapsulePids: pidsLimit})
	victimTeam := st.NewTeam(t)
	var victim struct {
		ID string `json:"id"`
	}
	victimTeam.JSON(t, st, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, http.StatusCreated, &victim)
	baseTasks := stacktest.HostTasks(t)
	probe := startProbe(t, st, victimTeam, victim.ID)
	started := time.Now()
	newAttacker := func(body map[string]any) *capsuleClient {
		var c struct {
			ID string `json:"id"`
		}
		st.Team.JSON(t, st, "POST", "/v1/capsules", body, http.StatusCreated, &c)
		return &capsuleClient{t: t, st: st, tm: st.Team, id: c.ID}
	}
	destroy := func(cc *capsuleClient) {
		cc.call("DELETE", "", nil).want(t, "destroy "+cc.id, http.StatusNoContent)
	}

	// 1. Fork bomb: the capsule's host tasks stay within its pids limit.
	probe.set("fork bomb")
	bomb := newAttacker(map[string]any{"template": "minimal"})
	pidsFile := stacktest.CapsulePidsFile(t, bomb.id) // cold start: the runtime id is the capsule id
	bomb.exec(map[string]any{"cmd": `(f() { f | f & }; f) </dev/null >/dev/null 2>&1 &`}).want(t, "fork bomb", http.StatusOK)
	peakBomb := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		peakBomb = max(peakBomb, stacktest.ReadInt(pidsFile))
	}
	destroy(bomb)
	if peakBomb > pidsLimit {
		t.Errorf("fork bomb: the capsule had %d host tasks, past its limit %d", peakBomb, pidsLimit)
	}

	probe.lap("fork bomb")

	// 2. Console flood: 32 MiB into the sandbox's stdout leaves the
	// console log bounded on the host.
	probe.set("console flood")
	cc := newAttacker(map[string]any{"template": "minimal", "disk_mb": 256})
	cc.sh(`head -c 33554432 /dev/zero > /proc/1/fd/1`)
	console := consoleBytes(t, st.AgentConfig.Dir, cc.id)
	if console > 8<<20 {
		t.Errorf("console flood: %d MiB of console log on the host, want it bounded (4 MiB by default)", console>>20)
	}

	probe.lap("console flood")

	// 3. Disk fill: 400 MiB into a 256 MiB capsule fails with ENOSPC
	// and the host holds no more than disk_mb of it.
	probe.set("disk fill")
	a := cc.exec(map[string]any{"cmd": `dd if=/dev/zero of=/root/fill bs=1M count=400 2>&1; echo "rc=$?"`}).want(t, "disk fill", http.StatusOK)
	overlay := stacktest.OverlayBytes(t, st.AgentConfig.Dir, cc.id)
	if !strings.Contains(a.str("stdout"), "No space left on device") || overlay > (256+16)<<20 {
		t.Errorf("disk fill: %q, writable layer %d MiB on the host; want ENOSPC and at most 256 MiB", a.str("stdout"), overlay>>20)
	}
	cc.sh("rm -f /root/fill")

	probe.lap("disk fill")

	// 4. Snapshots past the quota: the team may hold 1.
	probe.set("snapshots")
	st.Team.JSON(t, st, "PUT", "/v1/admin/teams/"+st.Team.ID+"/quota", map[string]any{"snapshots": 1}, http.StatusOK, nil)
	for i := range 2 {
		res := st.Team.Do(t, st, "POST", "/v1/snapshots", map[string]any{"capsule_id": cc.id, "name": fmt.Sprintf("abuse-%d", i)})
		got := readAnswer(t, res)
		_ = res.Body.Close()
		switch {
		case i == 0 && got.status != http.StatusCreated:
			t.Errorf("snapshot 1 of a quota of 1: %d %s", got.status, got.raw)
		case i == 1 && (got.status != http.StatusForbidden || got.code() != "quota_exceeded"):
			t.Errorf("snapshot 2 of a quota of 1: %d %s, want 403 quota_exceeded", got.status, got.raw)
		}
	}

	probe.lap("snapshots")

	// 5. A rigged agent answers with a gzip bomb: refused, not inflated.
	probe.set("gzip bomb")
	bombBody := gzipBomb(t)
	_, riggedAddr := newAgentServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/proto")
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(bombBody)
	}))
	var rigged struct {
		ID                string `json:"id"`
		RegistrationToken string `json:"registration_token"`
	}
	st.Team.JSON(t, st, "POST", "/v1/hosts", map[string]string{"type": "regular"}, http.StatusCreated, &rigged)
	rb := registerBody(rigged.RegistrationToken)
	rb["address"] = riggedAddr
	st.Team.JSON(t, st, "POST", "/v1/hosts/register", rb, http.StatusCreated, nil)
	var host map[string]any
	total, _ := heapAllocated(func() {
		st.Team.JSON(t, st, "GET", "/v1/hosts/"+rigged.ID, nil, http.StatusOK, &host)
	})
	if host["agent"] != nil || host["agent_error"] == nil || total > 64<<20 {
		t.Errorf("gzip bomb: agent %v, agent_error %v, %d MiB allocated; want an error and under 64 MiB", host["agent"], host["agent_error"], total>>20)
	}
	st.Team.JSON(t, st, "DELETE", "/v1/hosts/"+rigged.ID, nil, http.StatusNoContent, nil)

	probe.lap("gzip bomb")

	// 6. An oversize listing: 7,000 names of 200 '<' are 19 MB as JSON.
	probe.set("oversize listing")
	cc.sh(`d=/tmp/wide; mkdir $d; n=$(printf '%200s' | tr ' ' '<'); i=0; while [ $i -lt 7000 ]; do : > "$d/$n$i"; i=$((i+1)); done`)
	cc.call("POST", "/files/list", map[string]any{"path": "/tmp/wide"}).
		wantError(t, "oversize listing", http.StatusRequestEntityTooLarge, "payload_too_large")

	probe.lap("oversize listing")

	// 7. A flood of invented HTTP methods: the metrics keep a closed set
	// of labels.
	probe.set("method flood")
	seriesBefore := requestSeries(t, st)
	for i := range 2000 {
		req, _ := http.NewRequest(fmt.Sprintf("M%d", i), st.URL+fmt.Sprintf("/v1/x%d", i), nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
	}
	series := requestSeries(t, st)
	if series-seriesBefore > 2 {
		t.Errorf("method flood: %d request series before, %d after; want at most 2 more (the closed set's \"other\")", seriesBefore, series)
	}

	probe.lap("method flood")

	// 8. A call token captured for one capsule, replayed on it and on
	// another team's capsule: refused both times.
	probe.set("token replay")
	path := hostauth.EnvdProxyPath(cc.id) + "/metrics"
	tok, err := st.Signer.BoundToken(st.HostID, hostauth.EnvdProcedure(cc.id), hostauth.RequestDigest("GET", path))
	if err != nil {
		t.Fatal(err)
	}
	agentHTTP := st.AgentHTTP(hosttls.AnyHTTP)
	for i, target := range []string{cc.id, cc.id, victim.ID} {
		req, _ := http.NewRequest("GET", "https://"+st.AgentAddr+hostauth.EnvdProxyPath(target)+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := agentHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if want := map[bool]int{true: http.StatusOK, false: http.StatusUnauthorized}[i == 0]; res.StatusCode != want {
			t.Errorf("token use %d (capsule %s): %d, want %d", i+1, target, res.StatusCode, want)
		}
	}

	probe.lap("token replay")

	// 9. SSRF: an agent registering at the metadata address, link-local
	// or unspecified addresses is refused, its token kept.
	probe.set("ssrf registration")
	var ssrf struct {
		RegistrationToken string `json:"registration_token"`
	}
	st.Team.JSON(t, st, "POST", "/v1/hosts", map[string]string{"type": "regular"}, http.StatusCreated, &ssrf)
	for _, addr := range []string{"169.254.169.254:80", "169.254.1.1:50051", "0.0.0.0:50051", "[::]:50051"} {
		rb := registerBody(ssrf.RegistrationToken)
		rb["address"] = addr
		res := st.Team.Do(t, st, "POST", "/v1/hosts/register", rb)
		got := readAnswer(t, res)
		_ = res.Body.Close()
		if got.status != http.StatusBadRequest {
			t.Errorf("registration at %s: %d %s, want 400", addr, got.status, got.raw)
		}
	}

	probe.lap("ssrf registration")
	probe.set("end")
	time.Sleep(300 * time.Millisecond) // one more answer after the last attack
	probe.end()
	t.Logf("phases: %s", strings.Join(probe.laps, ", "))
	t.Logf("abuse suite: %v; other team's capsule answered %d times, slowest %v; host threads before %d, peak %d (+%d; bombed capsule peak %d tasks, limit %d); control-plane heap peak %.1f MiB; console log %d KiB after 32 MiB; writable layer %d MiB after 400 MiB into 256; %d request series after 2,000 invented methods (%d before)",
		time.Since(started).Round(time.Millisecond), probe.answers, probe.worst.Round(time.Millisecond), baseTasks, probe.peakTasks,
		probe.peakTasks-baseTasks, peakBomb, pidsLimit, probe.peakHeapMB, console>>10, overlay>>20, series, seriesBefore)
	// Every answer must come, and within a second.
	failed, slow := probe.failed, probe.slow
	if probe.answers < 20 || len(failed) > 0 || len(slow) > 0 {
		t.Errorf("the other team's capsule answered %d times, slowest %v; failed: %v; over 1 s: %v", probe.answers, probe.worst, failed, slow)
	}
}
