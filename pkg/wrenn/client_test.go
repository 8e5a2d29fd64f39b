package wrenn

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewConfig(t *testing.T) {
	env := map[string]string{"WRENN_API_KEY": "wrn_env", "WRENN_BASE_URL": "http://cp.example:9000/"}
	c, err := New(WithGetenv(func(k string) string { return env[k] }))
	if err != nil {
		t.Fatal(err)
	}
	if c.apiKey != "wrn_env" || c.BaseURL() != "http://cp.example:9000" {
		t.Errorf("from the environment: key %q, base %q", c.apiKey, c.BaseURL())
	}
	c, err = New(WithGetenv(func(k string) string { return env[k] }), WithAPIKey("wrn_opt"), WithBaseURL("https://x.example"))
	if err != nil || c.apiKey != "wrn_opt" || c.BaseURL() != "https://x.example" {
		t.Errorf("options did not win: %v %q %q", err, c.apiKey, c.BaseURL())
	}
	if _, err := New(WithGetenv(func(string) string { return "" })); err == nil {
		t.Error("New without a key succeeded")
	}
	if _, err := New(WithAPIKey("k"), WithBaseURL("ftp://x")); err == nil {
		t.Error("New with an ftp URL succeeded")
	}
	c, _ = New(WithGetenv(func(k string) string { return map[string]string{"WRENN_API_KEY": "k"}[k] }))
	if c.BaseURL() != DefaultBaseURL {
		t.Errorf("default base URL %q", c.BaseURL())
	}
}

// TestRetries checks the client's own policy: a GET is tried again after a
// 503, a POST never (it may have happened).
func TestRetries(t *testing.T) {
	var gets, posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") != "wrn_k" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		n := &gets
		if r.Method == http.MethodPost {
			n = &posts
		}
		if n.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"no_host","message":"no host"}}`))
			return
		}
		_, _ = w.Write([]byte(`[]`))
	}))
	defer srv.Close()
	c, err := New(WithAPIKey("wrn_k"), WithBaseURL(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	c.backoff = time.Millisecond
	ctx := context.Background()
	if _, err := c.ListTemplates(ctx); err != nil || gets.Load() != 3 {
		t.Errorf("GET: %v after %d tries; want success after 3", err, gets.Load())
	}
	_, err = c.CreateAPIKey(ctx, "x")
	var e *Error
	if !errors.As(err, &e) || e.Code != "no_host" || e.StatusCode != 503 || !errors.Is(err, ErrUnavailable) || posts.Load() != 1 {
		t.Errorf("POST: %v after %d tries; want one try and the 503 no_host", err, posts.Load())
	}
	gets.Store(0)
	c.retries = 0
	if _, err := c.ListTemplates(ctx); !errors.Is(err, ErrUnavailable) || gets.Load() != 1 {
		t.Errorf("without retries: %v after %d tries", err, gets.Load())
	}
}
