package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/testdb"
)

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// bootstrapTokens receives the bootstrap tokens servers started by start
// log.
var bootstrapTokens = make(chan string, 16)

// start runs the server like main does, on a free port, and returns its base
// URL (read from the "listening" log line), a function that stops it the way
// SIGTERM does (through the context), and run's result. A bootstrap token
// it logs goes to bootstrapTokens.
func start(t *testing.T, env map[string]string) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"serve"}, getenv(env), io.Discard, pw)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line struct {
				Msg, Addr      string
				BootstrapToken string `json:"bootstrap_token"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line.BootstrapToken != "" {
				bootstrapTokens <- line.BootstrapToken
			}
			if line.Msg == "listening" {
				addr <- line.Addr
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Cleanup(cancel)
	select {
	case a := <-addr:
		return "http://" + a, cancel, done
	case err := <-done:
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no listening line within 30 s")
	}
	return "", nil, nil
}

func TestServe(t *testing.T) {
	dbURL := testdb.New(t)
	env := map[string]string{
		"DATABASE_URL":         dbURL,
		"WRENN_JWT_SECRET":     strings.Repeat("k", 32),
		"WRENN_CP_LISTEN_ADDR": "127.0.0.1:0",
		"WRENN_LOG_FORMAT":     "json",
	}
	base, stop, done := start(t, env)

	res, err := http.Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /health: got %d, want 200", res.StatusCode)
	}
	// No platform admin yet: the log carries a bootstrap token (before the
	// listening line), and the signup that presents it makes one.
	var token string
	select {
	case token = <-bootstrapTokens:
	default:
		t.Fatal("no bootstrap token in the log of a server without a platform admin")
	}
	status, signup := call(t, "POST", base+"/v1/auth/signup", map[string]string{
		"email": "admin@example.com", "password": "correct horse", "bootstrap_token": token,
	})
	if status != http.StatusCreated || signup["user"].(map[string]any)["is_platform_admin"] != true {
		t.Fatalf("signup with the logged token: got %d %v, want 201 and a platform admin", status, signup)
	}
	for _, path := range []string{"/metrics", "/openapi.yaml"} {
		res, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || len(b) == 0 {
			t.Errorf("GET %s: got %d with %d bytes, want 200 with a body", path, res.StatusCode, len(b))
		}
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20 s of shutdown")
	}
}

func TestMigrateCommands(t *testing.T) {
	env := map[string]string{"DATABASE_URL": testdb.New(t)}
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "status"}, "pending"},
		{[]string{"migrate", "up"}, "applied 00001_foundation.sql"},
		{[]string{"migrate", "up"}, "no pending migrations"},
		{[]string{"migrate", "status"}, "applied"},
		{[]string{"migrate", "down"}, "rolled back 00012_base_template.sql"},
		{[]string{"migrate", "down"}, "rolled back 00011_template_builds.sql"},
		{[]string{"migrate", "down"}, "rolled back 00010_ports.sql"},
		{[]string{"migrate", "down"}, "rolled back 00009_network_policy.sql"},
		{[]string{"migrate", "down"}, "rolled back 00008_host_links.sql"},
		{[]string{"migrate", "down"}, "rolled back 00007_quotas.sql"},
		{[]string{"migrate", "down"}, "rolled back 00006_authz.sql"},
		{[]string{"migrate", "down"}, "rolled back 00005_dashboard.sql"},
		{[]string{"migrate", "down"}, "rolled back 00004_snapshot_requests.sql"},
		{[]string{"migrate", "down"}, "rolled back 00003_lifecycle.sql"},
		{[]string{"migrate", "down"}, "rolled back 00002_capsules.sql"},
		{[]string{"migrate", "down"}, "rolled back 00001_foundation.sql"},
		{[]string{"migrate", "down"}, "no migrations to roll back"},
		{[]string{"migrate", "up"}, "applied 00001_foundation.sql"},
	}
	for _, s := range steps {
		var out bytes.Buffer
		if err := run(t.Context(), s.args, getenv(env), &out, io.Discard); err != nil {
			t.Fatalf("%v: %v", s.args, err)
		}
		if !strings.Contains(out.String(), s.want) {
			t.Fatalf("%v: got %q, want it to mention %q", s.args, out.String(), s.want)
		}
	}
}

func TestRunRefusesBadInvocations(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, nil, "unknown command"},
		{"serve without config", []string{"serve"}, nil, "DATABASE_URL is required"},
		{"serve short secret", nil, map[string]string{"DATABASE_URL": "postgres://x/y", "WRENN_JWT_SECRET": "short"}, "WRENN_JWT_SECRET"},
		{"migrate without direction", []string{"migrate"}, map[string]string{"DATABASE_URL": "postgres://x/y"}, "usage"},
		{"migrate without database", []string{"migrate", "up"}, nil, "DATABASE_URL"},
		{"serve with pending migrations", nil, map[string]string{
			"DATABASE_URL": testdb.New(t), "WRENN_JWT_SECRET": strings.Repeat("k", 32), "WRENN_AUTO_MIGRATE": "false",
		}, "pending migrations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, getenv(tt.env), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
