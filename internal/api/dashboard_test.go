package api_test

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/config"
)

func TestDashboard(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"index.html": "<!doctype html>app", "assets/app.js": "console.log(1)"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, func(c *config.ControlPlane) { c.DashboardDir = dir })
	tests := []struct {
		method, path string
		status       int
		body         string // prefix
		errCode      string // of a JSON error answer
	}{
		{"GET", "/", 200, "<!doctype html>app", ""},
		{"GET", "/capsules", 200, "<!doctype html>app", ""},
		{"GET", "/capsules/6f1c2e4a-0000-4000-8000-000000000000", 200, "<!doctype html>app", ""},
		{"GET", "/keys", 200, "<!doctype html>app", ""},
		{"HEAD", "/audit", 200, "", ""},
		{"GET", "/assets/app.js", 200, "console.log(1)", ""},
		{"GET", "/health", 200, "{", ""},
		{"GET", "/openapi.yaml", 200, "openapi:", ""},
		{"GET", "/v1/nope", 404, "", "not_found"},
		{"GET", "/v1", 404, "", "not_found"},
		{"GET", "/v1/auth/login", 405, "", "method_not_allowed"},
		{"POST", "/", 404, "", "not_found"},
		{"POST", "/capsules", 404, "", "not_found"},
		{"DELETE", "/health", 405, "", "method_not_allowed"},
		{"GET", "/v1/me", 401, "", "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.call(tt.method, tt.path, nil).want(t, tt.method+" "+tt.path, tt.status)
			if !strings.HasPrefix(string(r.raw), tt.body) {
				t.Errorf("got body %.60q, want it to start with %q", r.raw, tt.body)
			}
			if tt.errCode != "" && r.errCode() != tt.errCode {
				t.Errorf("got %s, want error code %s", r.raw, tt.errCode)
			}
			isDashboard := tt.errCode == "" && !strings.HasPrefix(tt.path, "/health") && !strings.HasPrefix(tt.path, "/openapi")
			if got := r.header.Get("Content-Security-Policy") != ""; got != isDashboard {
				t.Errorf("got Content-Security-Policy %q, want one only on dashboard answers", r.header.Get("Content-Security-Policy"))
			}
		})
	}
	if r := e.call("GET", "/assets/app.js", nil); r.header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("asset: got Cache-Control %q, want immutable", r.header.Get("Cache-Control"))
	}
	if r := e.call("GET", "/capsules", nil); r.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("app route: got Cache-Control %q, want no-cache", r.header.Get("Cache-Control"))
	}

	// A raw request, so that the client does not clean the path.
	host := strings.TrimPrefix(e.url, "http://")
	for _, p := range []string{"/../../../../etc/passwd", "/assets/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte("GET " + p + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"))
		buf := make([]byte, 8192)
		var got []byte
		for {
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		_ = conn.Close()
		if strings.Contains(string(got), "root:") {
			t.Errorf("%s: served /etc/passwd", p)
		}
	}
}

func TestDashboardNotBuilt(t *testing.T) {
	e := newEnv(t, func(c *config.ControlPlane) { c.DashboardDir = t.TempDir() })
	r := e.call("GET", "/capsules", nil).want(t, "dashboard not built", http.StatusServiceUnavailable)
	if !strings.Contains(string(r.raw), "make build") {
		t.Errorf("got %s, want a page that says to run make build", r.raw)
	}
	e.call("GET", "/v1/nope", nil).want(t, "API 404", http.StatusNotFound)
}
