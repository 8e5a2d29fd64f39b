package api_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn-dev/wrenn/internal/api"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
)

func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
	e.createHost(admin)

	h := e.call("GET", "/health", nil).want(t, "health", http.StatusOK)
	if h.str("status") != "ok" {
		t.Errorf("health: got %s, want status ok", h.raw)
	}
	m := string(e.call("GET", "/metrics", nil).want(t, "metrics", http.StatusOK).raw)
	for _, want := range []string{
		`wrenn_hosts{status="online"} 1`,
		`wrenn_hosts{status="pending"} 1`,
		`wrenn_hosts{status="unreachable"} 0`,
		`wrenn_http_requests_total{code="201",method="POST",route="/v1/hosts"} 2`,
		`wrenn_http_request_duration_seconds_count{method="POST",route="/v1/auth/signup"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	spec := e.call("GET", "/openapi.yaml", nil).want(t, "openapi", http.StatusOK)
	if !strings.HasPrefix(string(spec.raw), "openapi: 3") {
		t.Errorf("openapi.yaml: got %.40q", spec.raw)
	}
}

// TestMetricsLabelsClosed sends 20,000 requests with invented methods to
// invented paths: the request metrics keep a bounded number of series.
func TestMetricsLabelsClosed(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(api.NewServer(api.Deps{Store: e.store, Config: e.cfg, Signer: hostauth.NewSigner(e.key), Registry: reg}))
	defer srv.Close()
	series := func() int {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "wrenn_http_") {
				n += len(mf.GetMetric())
			}
		}
		return n
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 20000 {
		path := fmt.Sprintf("/v1/x%d", i)
		if i%2 == 0 {
			path = "/v1/capsules"
		}
		req, err := http.NewRequest(fmt.Sprintf("M%d", i), srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		if res.StatusCode < 400 {
			t.Fatalf("%s %s: got %d, want an error", req.Method, path, res.StatusCode)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := series()
	t.Logf("20,000 requests with invented methods: %d request series, heap %+.1f MiB", n, (float64(after.HeapAlloc)-float64(before.HeapAlloc))/(1<<20))
	if n > 10 {
		t.Errorf("got %d request series, want at most 10", n)
	}
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	b, _ := io.ReadAll(res.Body)
	for _, want := range []string{`code="405",method="other",route="unmatched"`, `code="404",method="other",route="unmatched"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
