package e2e_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/testdb"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

const (
	// hostTimeout is several seconds, not one or two: a heartbeat lists
	// the host's sandboxes with `runsc list`, which took over 2 s while the
	// API package's stack tests loaded both cores, and an idle host marked
	// unreachable made capsules "missing" in tests about something else.
	hostTimeout       = 5 * time.Second
	monitorInterval   = 500 * time.Millisecond
	heartbeatInterval = 300 * time.Millisecond
	// credentialTTL is short so that the agent must refresh its
	// credential during the test, as it does every day in production.
	credentialTTL = 3 * time.Second

	tokenRefused = "registration token invalid, expired or already used"
	hostRejected = "host credential rejected by the control plane"
)

// hostView is the part of the control plane's host object the test reads.
type hostView struct {
	ID              string     `json:"id"`
	Status          string     `json:"status"`
	Address         string     `json:"address"`
	Arch            string     `json:"arch"`
	CPUs            int        `json:"cpus"`
	MemoryMB        int64      `json:"memory_mb"`
	DiskMB          int64      `json:"disk_mb"`
	Runtime         string     `json:"runtime"`
	Hostname        string     `json:"hostname"`
	AgentVersion    string     `json:"agent_version"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
}

// bootstrapToken is the WRENN_BOOTSTRAP_TOKEN of every control plane the
// tests start; the first signup presents it and becomes platform admin.
const bootstrapToken = "e2e-bootstrap-token-0123456789abcdef"

// adminScopes are the scopes of the platform admin's API key in the tests.
var adminScopes = []string{"capsules", "exec", "files", "snapshots", "templates", "hosts", "team", "keys:manage", "platform:admin"}

func startControlPlane(t *testing.T, dbURL, addr string) *process {
	t.Helper()
	cp := start(t, "wrenn-cp", bin.cp, map[string]string{
		"DATABASE_URL":                dbURL,
		"WRENN_CP_LISTEN_ADDR":        addr,
		"WRENN_JWT_SECRET":            "e2e-secret-that-is-at-least-32-bytes-long",
		"WRENN_HOST_TIMEOUT":          hostTimeout.String(),
		"WRENN_HOST_MONITOR_INTERVAL": monitorInterval.String(),
		"WRENN_HOST_CREDENTIAL_TTL":   credentialTTL.String(),
		"WRENN_AUTH_RATE_LIMIT":       "1000",
		"WRENN_AGENT_ALLOWED_CIDRS":   "127.0.0.0/8",
		"WRENN_LOG_LEVEL":             "debug",
		"WRENN_BOOTSTRAP_TOKEN":       bootstrapToken,
	})
	eventually(t, 20*time.Second, "control plane answers /health", func() error {
		if cp.exited() {
			t.Fatalf("wrenn-cp exited early:\n%s", cp.logs())
		}
		resp, err := http.Get("http://" + addr + "/health")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return cp
}

// agentEnv is the environment of an agent working in dir and listening on
// addr, with runsc from `make test` and a network of its own. When the test
// ends, `wrenn-agent remove-capsules` takes the agent's capsules and network
// away (an agent that stops keeps them, as it must).
func agentEnv(t *testing.T, cpURL, dir, addr string) map[string]string {
	t.Helper()
	runsc, _ := stacktest.Env(t)
	prefix, cidr := stacktest.NetworkPool(t)
	env := map[string]string{
		"WRENN_CP_URL":             cpURL,
		"WRENN_DIR":                dir,
		"WRENN_HOST_LISTEN_ADDR":   addr,
		"WRENN_HEARTBEAT_INTERVAL": heartbeatInterval.String(),
		"WRENN_LOG_LEVEL":          "debug",
		"WRENN_RUNSC":              runsc,
		"WRENN_NETWORK_PREFIX":     prefix,
		"WRENN_CAPSULE_CIDR":       cidr.String(),
	}
	t.Cleanup(func() {
		if _, err := os.Stat(dir); err != nil {
			return // the agent never started
		}
		p := start(t, "wrenn-agent-remove-capsules", bin.agent, env, "remove-capsules")
		if code := p.wait(t, time.Minute); code != 0 {
			t.Errorf("wrenn-agent remove-capsules exited %d:\n%s", code, p.logs())
		}
	})
	return env
}

// createHost adds a host as the admin and returns its id and registration
// token.
func createHost(t *testing.T, admin *client) (id, token string) {
	t.Helper()
	var created struct {
		ID                string `json:"id"`
		RegistrationToken string `json:"registration_token"`
	}
	admin.must(http.StatusCreated, "POST", "/v1/hosts", map[string]string{"type": "regular"}, &created)
	if created.ID == "" || !strings.HasPrefix(created.RegistrationToken, "wrnreg_") {
		t.Fatalf("POST /v1/hosts answered id %q, registration_token %q", created.ID, created.RegistrationToken)
	}
	return created.ID, created.RegistrationToken
}

// getHost returns GET /v1/hosts/{id} both as a hostView and as a map, for
// the fields hostView leaves out.
func getHost(t *testing.T, admin *client, id string) (hostView, map[string]any) {
	t.Helper()
	var raw json.RawMessage
	admin.must(http.StatusOK, "GET", "/v1/hosts/"+id, nil, &raw)
	var h hostView
	var m map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if h.ID != id {
		t.Fatalf("GET /v1/hosts/%s answered id %q", id, h.ID)
	}
	return h, m
}

func waitStatus(t *testing.T, admin *client, id, want string, timeout time.Duration) hostView {
	t.Helper()
	var h hostView
	eventually(t, timeout, "host "+id+" becomes "+want, func() error {
		h, _ = getHost(t, admin, id)
		if h.Status != want {
			return fmt.Errorf("status %q", h.Status)
		}
		return nil
	})
	return h
}

// refusedRegistration runs `wrenn-agent --register token` in a fresh
// directory and expects it to exit non-zero saying the token was refused,
// without writing a credential.
func refusedRegistration(t *testing.T, cpURL, token string) {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, "wrenn-agent-refused", bin.agent, agentEnv(t, cpURL, dir, addr), "--register", token, "--address", addr)
	if code := p.wait(t, 20*time.Second); code == 0 {
		t.Fatalf("wrenn-agent --register with a refused token exited 0:\n%s", p.logs())
	}
	if out := p.logs(); !strings.Contains(out, tokenRefused) || !strings.Contains(out, "POST /v1/hosts/{id}/token") {
		t.Errorf("refused registration output does not say why and what to do:\n%s", out)
	}
	if strings.Contains(p.logs(), token) {
		t.Errorf("output contains the registration token")
	}
	if _, err := os.Stat(filepath.Join(dir, "host-token")); err == nil {
		t.Errorf("a refused registration wrote a credential file")
	}
}

func readCredential(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "host-token"))
	if err != nil {
		t.Fatalf("reading credential file: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("credential file is not JSON: %v", err)
	}
	return m
}

// TestRegistrationStory follows a user from an empty database to a host
// that is registered, heartbeats, survives restarts of the agent and of the
// control plane, and is locked out once deleted; and checks every way a
// registration token must be refused.
func TestRegistrationStory(t *testing.T) {
	began := time.Now()
	dbURL := testdb.New(t)

	// Migrate, start, sign up, create an API key.
	migrate := start(t, "wrenn-cp-migrate", bin.cp, map[string]string{"DATABASE_URL": dbURL}, "migrate", "up")
	if code := migrate.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("wrenn-cp migrate up exited %d:\n%s", code, migrate.logs())
	}
	cpAddr := freeAddr(t)
	cpURL := "http://" + cpAddr
	cp := startControlPlane(t, dbURL, cpAddr)

	anon := &client{t: t, base: cpURL}
	var session struct {
		Token string `json:"token"`
	}
	anon.must(http.StatusCreated, "POST", "/v1/auth/signup",
		map[string]string{"email": "admin@example.com", "password": "correct horse battery staple", "name": "Ada", "bootstrap_token": bootstrapToken}, &session)
	if session.Token == "" {
		t.Fatal("signup answered no token")
	}
	user := &client{t: t, base: cpURL, header: http.Header{"Authorization": {"Bearer " + session.Token}}}
	var key struct {
		Key string `json:"key"`
	}
	user.must(http.StatusCreated, "POST", "/v1/api-keys", map[string]any{"name": "e2e", "scopes": adminScopes}, &key)
	if !strings.HasPrefix(key.Key, "wrn_") {
		t.Fatalf("POST /v1/api-keys answered key %q", key.Key)
	}
	admin := &client{t: t, base: cpURL, header: http.Header{"X-Api-Key": {key.Key}}}

	// Add a host and register the agent with its token.
	hostID, regToken := createHost(t, admin)
	if h, _ := getHost(t, admin, hostID); h.Status != "pending" {
		t.Errorf("new host status = %q, want pending", h.Status)
	}
	agentDir := filepath.Join(t.TempDir(), "wrenn") // the agent creates it
	agentAddr := freeAddr(t)
	env := agentEnv(t, cpURL, agentDir, agentAddr)
	agent := start(t, "wrenn-agent", bin.agent, env, "--register", regToken, "--address", agentAddr)

	h := waitStatus(t, admin, hostID, "online", 10*time.Second)
	t.Logf("host online %v after start", time.Since(began).Round(time.Millisecond))
	hostname, _ := os.Hostname()
	if h.Address != agentAddr || h.Hostname != hostname || h.CPUs < 1 || h.MemoryMB < 256 || h.DiskMB < 1 ||
		h.Runtime != "gvisor" || h.Arch == "" || h.AgentVersion != agentVersion {
		t.Errorf("registered host = %+v, want this machine's specs at %s", h, agentAddr)
	}
	if !strings.Contains(agent.logs(), agentAddr) {
		t.Errorf("agent log does not name its bound address %s:\n%s", agentAddr, agent.logs())
	}

	// The credential file: 0600, the contract's fields, in a 0700 directory.
	fi, err := os.Stat(filepath.Join(agentDir, "host-token"))
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode != 0o600 {
		t.Errorf("credential file mode = %o, want 600", mode)
	}
	if di, _ := os.Stat(agentDir); di.Mode().Perm() != 0o700 {
		t.Errorf("WRENN_DIR mode = %o, want 700", di.Mode().Perm())
	}
	cred := readCredential(t, agentDir)
	if cred["host_id"] != hostID || cred["cp_url"] != cpURL ||
		!strings.HasPrefix(fmt.Sprint(cred["credential"]), "wrnh_") ||
		!strings.HasPrefix(fmt.Sprint(cred["refresh_token"]), "wrnr_") || cred["cp_public_key"] == "" {
		t.Errorf("credential file = %v, want the contract's fields for host %s", cred, hostID)
	}
	for _, secret := range []string{regToken, fmt.Sprint(cred["credential"]), fmt.Sprint(cred["refresh_token"])} {
		if strings.Contains(agent.logs(), secret) {
			t.Errorf("agent log contains a secret token")
		}
	}

	// Heartbeats arrive.
	first := h.LastHeartbeatAt
	if first == nil {
		t.Fatal("online host has no last_heartbeat_at")
	}
	eventually(t, 5*time.Second, "last_heartbeat_at advances", func() error {
		h, _ := getHost(t, admin, hostID)
		if h.LastHeartbeatAt == nil || !h.LastHeartbeatAt.After(*first) {
			return fmt.Errorf("last_heartbeat_at = %v, first %v", h.LastHeartbeatAt, first)
		}
		return nil
	})

	// The control plane reaches the agent's HostInfo RPC with its signed
	// token: the host object carries what only the agent knows.
	eventually(t, 5*time.Second, "GET /v1/hosts/{id} shows HostInfo data", func() error {
		_, m := getHost(t, admin, hostID)
		info, ok := m["agent"].(map[string]any)
		if !ok {
			return fmt.Errorf("no agent info (agent_error %v)", m["agent_error"])
		}
		if info["host_id"] != hostID || info["kernel_version"] == "" || info["agent_version"] != agentVersion ||
			info["hostname"] != hostname {
			return fmt.Errorf("agent info %v, want this host's", info)
		}
		return nil
	})

	// Nobody but the control plane can call the agent.
	t.Run("agent refuses callers that are not the control plane", func(t *testing.T) {
		_, forgedKey, _ := ed25519.GenerateKey(rand.Reader)
		forged, err := hostauth.NewSigner(forgedKey).Token(hostID, hostagentv1connect.HostAgentServiceHostInfoProcedure)
		if err != nil {
			t.Fatal(err)
		}
		// The agent speaks TLS only, with the key it pinned at
		// registration (kept in its directory).
		id, err := hosttls.LoadOrCreate(agentDir)
		if err != nil {
			t.Fatal(err)
		}
		pinned := &http.Client{Transport: hosttls.Transport(id.Pin, nil, hosttls.AnyHTTP)}
		if _, m := getHost(t, admin, hostID); m["tls_spki_sha256"] != id.Pin {
			t.Errorf("control plane pinned %v, want the agent's key %q", m["tls_spki_sha256"], id.Pin)
		}
		plain, err := http.Post("http://"+agentAddr+hostagentv1connect.HostAgentServiceHostInfoProcedure, "application/json", strings.NewReader("{}"))
		if err == nil {
			body, _ := io.ReadAll(plain.Body)
			_ = plain.Body.Close()
			if plain.StatusCode != http.StatusBadRequest || strings.Contains(string(body), hostID) {
				t.Errorf("plain http to the agent: %d %s, want refused", plain.StatusCode, body)
			}
		}
		for _, tc := range []struct {
			name, path, auth string
			want             int
		}{
			{"no token", hostagentv1connect.HostAgentServiceHostInfoProcedure, "", http.StatusUnauthorized},
			{"forged token", hostagentv1connect.HostAgentServiceHostInfoProcedure, "Bearer " + forged, http.StatusUnauthorized},
			{"host credential instead of a cp token", hostagentv1connect.HostAgentServiceHostInfoProcedure, "Bearer " + fmt.Sprint(cred["credential"]), http.StatusUnauthorized},
			{"unknown path", "/admin", "", http.StatusNotFound},
		} {
			req, _ := http.NewRequest("POST", "https://"+agentAddr+tc.path, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := pinned.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tc.want || strings.Contains(string(body), hostID) {
				t.Errorf("%s: %d %s, want %d without host data", tc.name, resp.StatusCode, body, tc.want)
			}
		}
	})

	// The credential expires after credentialTTL; the agent refreshes it
	// on the 401 and the host never drops out.
	eventually(t, credentialTTL+5*time.Second, "agent refreshes its credential", func() error {
		if !strings.Contains(agent.logs(), "host credential refreshed") {
			return fmt.Errorf("no refresh logged yet")
		}
		if now := readCredential(t, agentDir); now["credential"] == cred["credential"] || now["refresh_token"] == cred["refresh_token"] {
			return fmt.Errorf("credential file unchanged")
		}
		return nil
	})
	if fi, _ := os.Stat(filepath.Join(agentDir, "host-token")); fi.Mode().Perm() != 0o600 {
		t.Errorf("refreshed credential file mode = %o, want 600", fi.Mode().Perm())
	}
	if h, _ := getHost(t, admin, hostID); h.Status != "online" {
		t.Errorf("after refresh status = %q, want online", h.Status)
	}

	// Stop the agent: it exits 0, and the host goes unreachable within the
	// timeout (plus one monitor pass and some slack for a busy machine).
	agent.stop(t)
	stopped := time.Now()
	waitStatus(t, admin, hostID, "unreachable", hostTimeout+monitorInterval+3*time.Second)
	t.Logf("host unreachable %v after the agent stopped", time.Since(stopped).Round(time.Millisecond))

	// Restart without --register: the saved credential is enough.
	agent = start(t, "wrenn-agent-restarted", bin.agent, env)
	waitStatus(t, admin, hostID, "online", 10*time.Second)

	// The control plane goes away and comes back: the agent warns once,
	// keeps retrying, and the host is online again without intervention.
	cp.stop(t)
	eventually(t, 5*time.Second, "agent notices the control plane is gone", func() error {
		if !strings.Contains(agent.logs(), "heartbeat failed") {
			return fmt.Errorf("no warning yet")
		}
		return nil
	})
	time.Sleep(4 * heartbeatInterval) // several retries during the outage
	cp = startControlPlane(t, dbURL, cpAddr)
	waitStatus(t, admin, hostID, "online", 10*time.Second)
	eventually(t, 5*time.Second, "agent logs the recovery", func() error {
		if !strings.Contains(agent.logs(), "heartbeat accepted again") {
			return fmt.Errorf("no recovery logged yet")
		}
		return nil
	})
	if n := strings.Count(agent.logs(), "level=WARN msg=\"heartbeat failed"); n != 1 {
		t.Errorf("agent warned %d times during one outage, want once", n)
	}
	if agent.exited() {
		t.Fatalf("agent exited while the control plane was down:\n%s", agent.logs())
	}

	// The same registration token a second time: refused.
	refusedRegistration(t, cpURL, regToken)

	// An expired token: refused.
	expiredHost, expiredToken := createHost(t, admin)
	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	tag, err := conn.Exec(context.Background(),
		"UPDATE host_registration_tokens SET expires_at = now() - interval '1 minute' WHERE host_id = $1", expiredHost)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("expiring the registration token: %v (%d rows)", err, tag.RowsAffected())
	}
	refusedRegistration(t, cpURL, expiredToken)
	if h, _ := getHost(t, admin, expiredHost); h.Status != "pending" {
		t.Errorf("host with refused token: status %q, want pending", h.Status)
	}

	// Regenerate: the old token is refused, the new one works.
	newHost, oldToken := createHost(t, admin)
	var regen struct {
		RegistrationToken string `json:"registration_token"`
	}
	admin.must(http.StatusCreated, "POST", "/v1/hosts/"+newHost+"/token", nil, &regen)
	if !strings.HasPrefix(regen.RegistrationToken, "wrnreg_") || regen.RegistrationToken == oldToken {
		t.Fatalf("POST /v1/hosts/{id}/token answered %q", regen.RegistrationToken)
	}
	refusedRegistration(t, cpURL, oldToken)
	newDir, newAddr := t.TempDir(), freeAddr(t)
	second := start(t, "wrenn-agent-second", bin.agent, agentEnv(t, cpURL, newDir, newAddr),
		"--register", regen.RegistrationToken, "--address", newAddr)
	waitStatus(t, admin, newHost, "online", 10*time.Second)
	second.stop(t)

	// Deleting the host locks its agent out: it says so clearly and keeps
	// running (retrying slowly) instead of exiting or spinning.
	admin.must(http.StatusNoContent, "DELETE", "/v1/hosts/"+hostID, nil, nil)
	eventually(t, 5*time.Second, "agent reports it was rejected", func() error {
		if !strings.Contains(agent.logs(), hostRejected) {
			return fmt.Errorf("no rejection logged yet")
		}
		return nil
	})
	time.Sleep(5 * heartbeatInterval)
	if agent.exited() {
		t.Fatalf("agent exited after its host was deleted:\n%s", agent.logs())
	}
	if n := strings.Count(agent.logs(), hostRejected); n != 1 {
		t.Errorf("rejection logged %d times, want once", n)
	}
	agent.stop(t)

	// What the log told the operator to do: register again, in the same
	// WRENN_DIR, with a token for a new host. The old credential file is
	// replaced.
	replacement, replacementToken := createHost(t, admin)
	agent = start(t, "wrenn-agent-reregistered", bin.agent, env, "--register", replacementToken, "--address", agentAddr)
	waitStatus(t, admin, replacement, "online", 10*time.Second)
	if got := readCredential(t, agentDir)["host_id"]; got != replacement {
		t.Errorf("after re-registering, credential file is for host %v, want %s", got, replacement)
	}
	agent.stop(t)
	cp.stop(t)
	t.Logf("registration story took %v", time.Since(began).Round(time.Millisecond))
}
