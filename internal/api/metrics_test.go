package api_test

import (
	"net/http"
	"strings"
	"testing"
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
