package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dashboardDir returns a directory laid out like a built dashboard.
func dashboardDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"index.html":          "<!doctype html><title>app</title>",
		"assets/app-1234.js":  "console.log(1)",
		"assets/app-1234.css": "body{}",
		"favicon.svg":         "<svg/>",
		".env":                "SECRET=1",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A file next to the dashboard that must never be served.
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "secret.txt"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func get(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, "/", nil)
	req.URL.Path = target // as the server would see it, unnormalised
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandler(t *testing.T) {
	h := Handler(dashboardDir(t))
	tests := []struct {
		method, path string
		status       int
		body         string
		contentType  string
		cache        string
	}{
		{"GET", "/", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/capsules", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/capsules/6f1c2e4a-0000-4000-8000-000000000000", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/index.html", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"HEAD", "/keys", 200, "", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/assets/app-1234.js", 200, "console.log(1)", "text/javascript; charset=utf-8", cacheImmutable},
		{"GET", "/assets/app-1234.css", 200, "body{}", "text/css; charset=utf-8", cacheImmutable},
		{"GET", "/favicon.svg", 200, "<svg/>", "image/svg+xml", cacheNoCache},
		{"GET", "/assets/gone.js", 404, "", "", cacheNoCache},
		{"GET", "/assets", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/.env", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/../secret.txt", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/assets/../../secret.txt", 200, "<!doctype html><title>app</title>", "text/html; charset=utf-8", cacheNoCache},
		{"GET", "/assets/%2e%2e/%2e%2e/secret.txt", 404, "", "", cacheNoCache},
		{"POST", "/", 405, "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			res := get(t, h, tt.method, tt.path)
			defer func() { _ = res.Body.Close() }()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("got status %d, want %d; body %s", res.StatusCode, tt.status, body)
			}
			if tt.body != "" && string(body) != tt.body {
				t.Errorf("got body %q, want %q", body, tt.body)
			}
			if strings.Contains(string(body), "secret") {
				t.Errorf("served a file outside the dashboard: %q", body)
			}
			if tt.contentType != "" && res.Header.Get("Content-Type") != tt.contentType {
				t.Errorf("got Content-Type %q, want %q", res.Header.Get("Content-Type"), tt.contentType)
			}
			if tt.cache != "" && res.Header.Get("Cache-Control") != tt.cache {
				t.Errorf("got Cache-Control %q, want %q", res.Header.Get("Cache-Control"), tt.cache)
			}
			for k, v := range securityHeaders {
				if got := res.Header.Get(k); got != v {
					t.Errorf("got %s %q, want %q", k, got, v)
				}
			}
		})
	}
	if csp := securityHeaders["Content-Security-Policy"]; !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q lacks frame-ancestors 'none' or script-src 'self'", csp)
	}
}

func TestHandlerNotBuilt(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".gitkeep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/capsules", "/.gitkeep"} {
		res := get(t, Handler(dir), "GET", p)
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "make build") ||
			!strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s: got %d %s %q, want 503 with a page that says to run make build", p, res.StatusCode, res.Header.Get("Content-Type"), body)
		}
		if res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no Content-Security-Policy", p)
		}
	}
}

func TestBuiltIn(t *testing.T) {
	// Whether or not the dashboard was built, the built-in copy answers:
	// the app, or the page that says it is not built.
	res := get(t, Handler(""), "GET", "/")
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("got status %d, want 200 or 503", res.StatusCode)
	}
}
