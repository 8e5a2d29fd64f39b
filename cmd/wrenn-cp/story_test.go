package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/testdb"
)

// call sends a JSON request and decodes the JSON answer.
func call(t *testing.T, method, url string, body any, header ...string) (int, map[string]any) {
	t.Helper()
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, url, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// TestHostGoesUnreachableAndComesBack runs the liveness story against the
// server as run starts it, with a 1 s host timeout.
func TestHostGoesUnreachableAndComesBack(t *testing.T) {
	base, stop, done := start(t, map[string]string{
		"DATABASE_URL":                testdb.New(t),
		"WRENN_JWT_SECRET":            strings.Repeat("k", 32),
		"WRENN_CP_LISTEN_ADDR":        "127.0.0.1:0",
		"WRENN_LOG_FORMAT":            "json",
		"WRENN_HOST_TIMEOUT":          "1s",
		"WRENN_HOST_MONITOR_INTERVAL": "200ms",
		"WRENN_AGENT_ALLOWED_CIDRS":   "127.0.0.0/8",
		"WRENN_BOOTSTRAP_TOKEN":       strings.Repeat("b", 32),
	})
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	status, signup := call(t, "POST", base+"/v1/auth/signup", map[string]string{
		"email": "admin@example.com", "password": "correct horse", "bootstrap_token": strings.Repeat("b", 32),
	})
	if status != http.StatusCreated {
		t.Fatalf("signup: got %d %v", status, signup)
	}
	auth := []string{"Authorization", "Bearer " + signup["token"].(string)}
	status, host := call(t, "POST", base+"/v1/hosts", map[string]string{"type": "regular"}, auth...)
	if status != http.StatusCreated {
		t.Fatalf("create host: got %d %v", status, host)
	}
	id := host["id"].(string)
	status, reg := call(t, "POST", base+"/v1/hosts/register", map[string]any{
		"token": host["registration_token"], "address": "127.0.0.1:1", "arch": "amd64", "cpus": 2,
		"memory_mb": 1024, "disk_mb": 1024, "runtime": "gvisor",
		// The agent's TLS key pin (any well-formed one: nothing calls the agent).
		"tls_spki_sha256": base64.StdEncoding.EncodeToString(make([]byte, 32)),
	})
	if status != http.StatusCreated {
		t.Fatalf("register: got %d %v", status, reg)
	}
	heartbeat := func() (int, map[string]any) {
		return call(t, "POST", base+"/v1/hosts/"+id+"/heartbeat",
			map[string]any{"free_cpus": 2, "free_memory_mb": 1024, "free_disk_mb": 1024},
			"Authorization", "Bearer "+reg["credential"].(string))
	}
	if status, hb := heartbeat(); status != http.StatusOK || hb["heartbeat_interval_sec"] != float64(1) {
		t.Fatalf("heartbeat: got %d %v, want 200 asking for 1 s heartbeats", status, hb)
	}

	hostStatus := func() string {
		_, h := call(t, "GET", base+"/v1/hosts/"+id, nil, auth...)
		s, _ := h["status"].(string)
		return s
	}
	start := time.Now()
	for hostStatus() != "unreachable" {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("host still %s 5 s after its last heartbeat, want unreachable after 1 s", hostStatus())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status, _ := heartbeat(); status != http.StatusOK {
		t.Fatalf("heartbeat after silence: got %d", status)
	}
	if got := hostStatus(); got != "online" {
		t.Errorf("after a heartbeat: got %s, want online", got)
	}
}
