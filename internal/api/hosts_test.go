package api_test

import (
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/agent"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
)

func TestHostLifecycle(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	if !strings.HasPrefix(reg.token, "wrnreg_") {
		t.Fatalf("got registration token %q, want wrnreg_ prefix", reg.token)
	}
	h := e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get pending host", http.StatusOK)
	if got := h.str("status"); got != "pending" {
		t.Errorf("new host: got status %q, want pending", got)
	}

	r := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
	host := r.body["host"].(map[string]any)
	if host["id"] != reg.hostID || host["status"] != "online" || host["runtime"] != "gvisor" {
		t.Errorf("register: got host %v, want %s online gvisor", host, reg.hostID)
	}
	if pk, err := hostauth.DecodePublicKey(r.str("cp_public_key")); err != nil || !pk.Equal(e.key.Public()) {
		t.Errorf("register: cp_public_key %q is not the control plane's key (%v)", r.str("cp_public_key"), err)
	}
	cred, refresh := r.str("credential"), r.str("refresh_token")
	if !strings.HasPrefix(cred, "wrnh_") || !strings.HasPrefix(refresh, "wrnr_") || r.str("credential_expires_at") == "" {
		t.Fatalf("register: got %s, want wrnh_ credential, wrnr_ refresh token and expiry", r.raw)
	}

	again := e.call("POST", "/v1/hosts/register", registerBody(reg.token))
	if again.status != http.StatusUnauthorized || again.errCode() != "invalid_registration_token" {
		t.Errorf("token reuse: got %d %s, want 401 invalid_registration_token", again.status, again.raw)
	}

	hb := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", heartbeatBody(), "Authorization", "Bearer "+cred).
		want(t, "heartbeat", http.StatusOK)
	if hb.str("status") != "online" || hb.body["heartbeat_interval_sec"] != float64(30) {
		t.Errorf("heartbeat: got %s, want online every 30 s", hb.raw)
	}

	rf := e.call("POST", "/v1/hosts/auth/refresh", map[string]string{"refresh_token": refresh}).want(t, "refresh", http.StatusOK)
	if rf.str("host_id") != reg.hostID || rf.str("credential") == cred || rf.str("refresh_token") == refresh {
		t.Errorf("refresh: got %s, want new credentials for %s", rf.raw, reg.hostID)
	}
	checks := []struct {
		name     string
		method   string
		path     string
		body     any
		headers  []string
		status   int
		wantCode string
	}{
		{"old credential after refresh", "POST", "/v1/hosts/" + reg.hostID + "/heartbeat", heartbeatBody(), []string{"Authorization", "Bearer " + cred}, 401, "invalid_host_credential"},
		{"new credential", "POST", "/v1/hosts/" + reg.hostID + "/heartbeat", heartbeatBody(), []string{"Authorization", "Bearer " + rf.str("credential")}, 200, ""},
		{"refresh token reuse", "POST", "/v1/hosts/auth/refresh", map[string]string{"refresh_token": refresh}, nil, 401, "invalid_refresh_token"},
		{"new refresh token", "POST", "/v1/hosts/auth/refresh", map[string]string{"refresh_token": rf.str("refresh_token")}, nil, 200, ""},
	}
	for _, c := range checks {
		got := e.call(c.method, c.path, c.body, c.headers...)
		if got.status != c.status || got.errCode() != c.wantCode {
			t.Errorf("%s: got %d %s, want %d %q", c.name, got.status, got.raw, c.status, c.wantCode)
		}
	}

	var actions []string
	rows, err := e.db.Query(t.Context(), `SELECT action FROM audit_log WHERE resource_id = $1 ORDER BY created_at`, reg.hostID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		_ = rows.Scan(&a)
		actions = append(actions, a)
	}
	if got, want := strings.Join(actions, ","), "host.create,host.register,host.refresh,host.refresh"; got != want {
		t.Errorf("audit: got %s, want %s", got, want)
	}
}

func TestRegistrationTokens(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")

	t.Run("expired", func(t *testing.T) {
		reg := e.createHost(admin)
		e.exec(`UPDATE host_registration_tokens SET expires_at = now() - interval '1 second' WHERE host_id = $1`, reg.hostID)
		r := e.call("POST", "/v1/hosts/register", registerBody(reg.token))
		if r.status != http.StatusUnauthorized || r.errCode() != "invalid_registration_token" {
			t.Errorf("got %d %s, want 401 invalid_registration_token", r.status, r.raw)
		}
	})
	t.Run("expired credential and refresh token", func(t *testing.T) {
		reg := e.createHost(admin)
		r := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
		e.exec(`UPDATE host_credentials SET expires_at = now() - interval '1 second' WHERE host_id = $1`, reg.hostID)
		e.exec(`UPDATE host_refresh_tokens SET expires_at = now() - interval '1 second' WHERE host_id = $1`, reg.hostID)
		hb := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", heartbeatBody(), "Authorization", "Bearer "+r.str("credential"))
		if hb.status != http.StatusUnauthorized || hb.errCode() != "invalid_host_credential" {
			t.Errorf("expired credential: got %d %s, want 401 invalid_host_credential", hb.status, hb.raw)
		}
		rf := e.call("POST", "/v1/hosts/auth/refresh", map[string]string{"refresh_token": r.str("refresh_token")})
		if rf.status != http.StatusUnauthorized || rf.errCode() != "invalid_refresh_token" {
			t.Errorf("expired refresh token: got %d %s, want 401 invalid_refresh_token", rf.status, rf.raw)
		}
	})
	t.Run("regenerated", func(t *testing.T) {
		reg := e.createHost(admin)
		nt := e.call("POST", "/v1/hosts/"+reg.hostID+"/token", nil, admin.bearer()...).want(t, "new token", http.StatusCreated)
		if old := e.call("POST", "/v1/hosts/register", registerBody(reg.token)); old.status != http.StatusUnauthorized {
			t.Errorf("old token: got %d %s, want 401", old.status, old.raw)
		}
		e.call("POST", "/v1/hosts/register", registerBody(nt.str("registration_token"))).want(t, "new token", http.StatusCreated)
	})
	t.Run("concurrent", func(t *testing.T) {
		reg := e.createHost(admin)
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			counts = map[int]int{}
		)
		for range 10 {
			wg.Go(func() {
				r := e.call("POST", "/v1/hosts/register", registerBody(reg.token))
				mu.Lock()
				counts[r.status]++
				mu.Unlock()
			})
		}
		wg.Wait()
		if counts[201] != 1 || counts[401] != 9 {
			t.Errorf("10 registrations with one token: got statuses %v, want one 201 and nine 401", counts)
		}
		var creds int
		if err := e.db.QueryRow(t.Context(), `SELECT count(*) FROM host_credentials WHERE host_id = $1`, reg.hostID).Scan(&creds); err != nil {
			t.Fatal(err)
		}
		if creds != 1 {
			t.Errorf("got %d credentials, want 1", creds)
		}
	})
	t.Run("deleted host", func(t *testing.T) {
		reg := e.createHost(admin)
		r := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
		e.call("DELETE", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "delete", http.StatusNoContent)
		hb := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", heartbeatBody(), "Authorization", "Bearer "+r.str("credential"))
		if hb.status != http.StatusUnauthorized || hb.errCode() != "invalid_host_credential" {
			t.Errorf("heartbeat of deleted host: got %d %s, want 401 invalid_host_credential", hb.status, hb.raw)
		}
		e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get deleted", http.StatusNotFound)
	})
	t.Run("other host's credential", func(t *testing.T) {
		a, b := e.createHost(admin), e.createHost(admin)
		ra := e.call("POST", "/v1/hosts/register", registerBody(a.token)).want(t, "register a", http.StatusCreated)
		e.call("POST", "/v1/hosts/register", registerBody(b.token)).want(t, "register b", http.StatusCreated)
		e.call("POST", "/v1/hosts/"+b.hostID+"/heartbeat", heartbeatBody(), "Authorization", "Bearer "+ra.str("credential")).
			want(t, "heartbeat with another host's credential", http.StatusForbidden)
	})
}

func TestGetHostAsksAgent(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	r := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
	// The real agent's RPC server, with the credential registration gave it.
	dir := t.TempDir()
	ag, err := agent.NewServer(config.Agent{Dir: dir, Runtime: config.RuntimeGVisor},
		agent.Credential{HostID: reg.hostID, CPPublicKey: r.str("cp_public_key")},
		nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	id, err := hosttls.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.Pin != ag.TLSPin() {
		t.Fatalf("agent's pin %s, its directory's %s", ag.TLSPin(), id.Pin)
	}
	srv, addr := newAgentServer(t, ag.Handler(), id)
	e.exec(`UPDATE hosts SET address = $2, tls_spki_sha256 = $3 WHERE id = $1`, reg.hostID, addr, ag.TLSPin())

	got := e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK)
	info, _ := got.body["agent"].(map[string]any)
	if info["host_id"] != reg.hostID || info["runtime"] != "gvisor" || info["cpus"] == nil {
		t.Errorf("got agent %v (agent_error %v), want HostInfo of %s", info, got.body["agent_error"], reg.hostID)
	}

	srv.Close()
	got = e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host, agent down", http.StatusOK)
	if got.body["agent"] != nil || got.str("agent_error") == "" || strings.Contains(got.str("agent_error"), "127.0.0.1") {
		t.Errorf("agent down: got %s, want agent_error, without the network's details, and no agent", got.raw)
	}
}

// TestHeartbeatAddress: an agent started with --address (no --register)
// sends it with its heartbeats; the control plane records a changed one
// once, with an audit event, and leaves the address alone otherwise.
func TestHeartbeatAddress(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	r := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
	auth := []string{"Authorization", "Bearer " + r.str("credential")}
	address := func() string {
		return e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK).str("address")
	}
	moves := func() []any {
		return e.call("GET", "/v1/audit-log?action=host.address", nil, admin.bearer()...).want(t, "audit log", http.StatusOK).list
	}

	hb := heartbeatBody()
	hb["address"] = "10.0.1.5:50051"
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", hb, auth...).want(t, "heartbeat at a new address", http.StatusOK)
	if got := address(); got != "10.0.1.5:50051" {
		t.Errorf("after a heartbeat from 10.0.1.5:50051 the host's address is %q", got)
	}
	ev := moves()
	if len(ev) != 1 {
		t.Fatalf("host.address events: %v, want one", ev)
	}
	meta := ev[0].(map[string]any)["metadata"].(map[string]any)
	if meta["from"] != "127.0.0.1:1" || meta["to"] != "10.0.1.5:50051" || ev[0].(map[string]any)["actor_type"] != "host" {
		t.Errorf("host.address event = %v, want from 127.0.0.1:1 to 10.0.1.5:50051 by the host", ev[0])
	}

	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", hb, auth...).want(t, "heartbeat at the same address", http.StatusOK)
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", heartbeatBody(), auth...).want(t, "heartbeat without address", http.StatusOK)
	if got := address(); got != "10.0.1.5:50051" {
		t.Errorf("heartbeats without a new address changed it to %q", got)
	}
	if ev := moves(); len(ev) != 1 {
		t.Errorf("host.address events after unchanged heartbeats: %d, want 1", len(ev))
	}
}

// TestHeartbeatPinsTLSKey walks the upgrade path of a host registered
// before agents served TLS: with no key pinned it is not called; the first
// authenticated heartbeat that brings a pin pins it; a heartbeat with
// another key is refused (409 tls_key_mismatch) and records nothing; a new
// registration replaces the pin.
func TestHeartbeatPinsTLSKey(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	reg := e.createHost(admin)
	r := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated)
	hostAuth := []string{"Authorization", "Bearer " + r.str("credential")}
	if h := e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK); h.str("tls_spki_sha256") != testAgentTLS.Pin {
		t.Fatalf("pin after registration: %q, want %q", h.str("tls_spki_sha256"), testAgentTLS.Pin)
	}
	// As a host registered before TLS links: no pin. It is not called.
	_, addr := newAgentServer(t, http.NotFoundHandler())
	e.exec(`UPDATE hosts SET tls_spki_sha256 = '', address = $2 WHERE id = $1`, reg.hostID, addr)
	h := e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get unpinned host", http.StatusOK)
	if h.body["agent"] != nil || h.str("agent_error") == "" {
		t.Errorf("unpinned host: got %s, want agent_error and no agent", h.raw)
	}
	other, err := hosttls.Generate()
	if err != nil {
		t.Fatal(err)
	}
	bad := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", with(heartbeatBody(), "tls_spki_sha256", "abc"), hostAuth...)
	if bad.status != http.StatusBadRequest {
		t.Errorf("heartbeat with a malformed pin: %d %s, want 400", bad.status, bad.raw)
	}
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", with(heartbeatBody(), "tls_spki_sha256", testAgentTLS.Pin), hostAuth...).
		want(t, "first heartbeat with a pin", http.StatusOK)
	before := e.fingerprint()
	mismatch := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", with(heartbeatBody(), "tls_spki_sha256", other.Pin), hostAuth...)
	if mismatch.status != http.StatusConflict || mismatch.errCode() != "tls_key_mismatch" {
		t.Errorf("heartbeat with another key: %d %s, want 409 tls_key_mismatch", mismatch.status, mismatch.raw)
	}
	if after := e.fingerprint(); after != before {
		t.Errorf("a refused heartbeat changed the database:\nbefore %s\nafter  %s", before, after)
	}
	h = e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get pinned host", http.StatusOK)
	// The "agent" answers 404 to everything: reached over the pinned TLS,
	// the call is unimplemented (not unavailable).
	if h.str("tls_spki_sha256") != testAgentTLS.Pin || !strings.Contains(h.str("agent_error"), "unimplemented") {
		t.Errorf("after pinning: pin %q, agent_error %q; want the first pin and the agent reached", h.str("tls_spki_sha256"), h.str("agent_error"))
	}
	if n := e.count("audit_log WHERE action = 'host.tls_pin'"); n != 1 {
		t.Errorf("%d host.tls_pin audit entries, want 1", n)
	}
	// A new registration pins the agent's new key.
	nt := e.call("POST", "/v1/hosts/"+reg.hostID+"/token", nil, admin.bearer()...).want(t, "new token", http.StatusCreated)
	e.call("POST", "/v1/hosts/register", with(registerBody(nt.str("registration_token")), "tls_spki_sha256", other.Pin)).
		want(t, "register again", http.StatusCreated)
	if h := e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK); h.str("tls_spki_sha256") != other.Pin {
		t.Errorf("pin after registering again: %q, want the new key's", h.str("tls_spki_sha256"))
	}
	// Registration without a pin: 400.
	nt = e.call("POST", "/v1/hosts/"+reg.hostID+"/token", nil, admin.bearer()...).want(t, "new token", http.StatusCreated)
	if r := e.call("POST", "/v1/hosts/register", with(registerBody(nt.str("registration_token")), "tls_spki_sha256", nil)); r.status != http.StatusBadRequest {
		t.Errorf("registration without a pin: %d %s, want 400", r.status, r.raw)
	}
}
