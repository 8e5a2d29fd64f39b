package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/wrenn-dev/wrenn/internal/api"
	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/testdb"
)

// env is a running API on a fresh, migrated database.
type env struct {
	t     *testing.T
	url   string
	dbURL string
	store *store.Store
	db    *pgx.Conn
	cfg   config.ControlPlane
	key   ed25519.PrivateKey
	// signups counts signup calls: the first presents the bootstrap token
	// and makes the platform admin.
	signups int
}

// testBootstrapToken is the bootstrap token of every test env.
const testBootstrapToken = "test-bootstrap-token-0123456789abcdef"

// newEnv starts the API with test-sized settings; tweak adjusts them.
func newEnv(t *testing.T, tweak ...func(*config.ControlPlane)) *env {
	t.Helper()
	ctx := context.Background()
	st, dbURL := testdb.Store(t)
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	key, err := st.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.ControlPlane{
		DatabaseURL:          dbURL,
		JWTSecret:            []byte("0123456789abcdef0123456789abcdef"),
		JWTTTL:               time.Hour,
		HostTimeout:          90 * time.Second,
		HostMonitorInterval:  10 * time.Second,
		RegistrationTokenTTL: time.Hour,
		HostCredentialTTL:    24 * time.Hour,
		// Agents run on this machine, reached over loopback; some tests
		// report addresses in 10.0.0.0/8.
		AgentAllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
		AuthRateLimit:     1000,
		LoginMaxFailures:  5,
		LoginLockout:      time.Minute,
		BootstrapToken:    testBootstrapToken,
		Signup:            config.SignupOpen,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	srv := httptest.NewServer(api.NewServer(api.Deps{
		Store: st, Config: cfg, Signer: hostauth.NewSigner(key),
		Passwords: auth.Passwords{Cost: bcrypt.MinCost},
	}))
	t.Cleanup(srv.Close)
	return &env{t: t, url: srv.URL, dbURL: dbURL, store: st, db: conn, cfg: cfg, key: key}
}

// response is a decoded answer.
type response struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
	list   []any
}

// str returns a top-level string field.
func (r response) str(k string) string { s, _ := r.body[k].(string); return s }

// errCode returns error.code of an error answer.
func (r response) errCode() string {
	e, _ := r.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// call sends body (a string is sent as is, anything else as JSON) with
// headers given as name, value pairs.
func (e *env) call(method, path string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = res.Body.Close() }()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := response{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		if raw[0] == '[' {
			_ = json.Unmarshal(raw, &r.list)
		} else if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, raw)
		}
	}
	return r
}

// want fails the test unless r has status.
func (r response) want(t *testing.T, what string, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: got status %d, want %d; body %s", what, r.status, status, r.raw)
	}
	return r
}

// account is a signed-up user.
type account struct {
	id, email, token, teamID string
}

func (a account) bearer() []string { return []string{"Authorization", "Bearer " + a.token} }

// signup signs up a user with a team of its own; the env's first signup
// presents the bootstrap token, so that user is platform admin.
func (e *env) signup(email string) account {
	e.t.Helper()
	body := map[string]string{"email": email, "password": "correct horse", "name": "Test"}
	if e.signups == 0 {
		body["bootstrap_token"] = testBootstrapToken
	}
	e.signups++
	r := e.call("POST", "/v1/auth/signup", body).want(e.t, "signup "+email, http.StatusCreated)
	user := r.body["user"].(map[string]any)
	team := r.body["team"].(map[string]any)
	return account{id: user["id"].(string), email: email, token: r.str("token"), teamID: team["id"].(string)}
}

// count returns the number of rows in table.
func (e *env) count(table string) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// exec runs SQL on the test database.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.db.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// registration is a host created by an admin, not yet registered.
type registration struct {
	hostID, token string
}

func (e *env) createHost(admin account) registration {
	e.t.Helper()
	r := e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, admin.bearer()...).
		want(e.t, "create host", http.StatusCreated)
	return registration{hostID: r.str("id"), token: r.str("registration_token")}
}

func registerBody(token string) map[string]any {
	return map[string]any{
		"token": token, "address": "127.0.0.1:1", "arch": "amd64", "cpus": 8,
		"memory_mb": 32000, "disk_mb": 500000, "runtime": "gvisor", "agent_version": "test", "hostname": "node-1",
		"tls_spki_sha256": testAgentTLS.Pin,
	}
}

// testAgentTLS is the TLS key pair of the tests' fake agents; registerBody
// sends its pin.
var testAgentTLS = func() hosttls.Identity {
	id, err := hosttls.Generate()
	if err != nil {
		panic(err)
	}
	return id
}()

// newAgentServer serves h as an agent does: TLS only, with the key
// testAgentTLS (or id, when given), HTTP/2 and HTTP/1.1. It returns the
// server and its host:port.
func newAgentServer(t testing.TB, h http.Handler, id ...hosttls.Identity) (*httptest.Server, string) {
	t.Helper()
	key := testAgentTLS
	if len(id) > 0 {
		key = id[0]
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = hosttls.ServerConfig(key)
	srv.TLS.NextProtos = []string{"h2", "http/1.1"}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, strings.TrimPrefix(srv.URL, "https://")
}

func heartbeatBody() map[string]any {
	return map[string]any{"free_cpus": 6, "free_memory_mb": 20000, "free_disk_mb": 400000, "capsules": []any{}}
}

// foreignToken returns a well-formed session token for userID signed with
// a secret the server does not know.
func foreignToken(t *testing.T, userID string) string {
	t.Helper()
	tok, _, err := auth.NewSessions([]byte("another secret another secret 00"), time.Hour).Issue(userID)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// trustLoopback makes the test client (on loopback) a trusted proxy, or
// not.
func trustLoopback(c *config.ControlPlane, on bool) {
	c.TrustedProxies = nil
	if on {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
}

// createKey creates an API key named name with scopes (none: the
// default set) as the holder of headers, and returns the key.
func (e *env) createKey(name string, scopes []string, headers ...string) string {
	e.t.Helper()
	body := map[string]any{"name": name}
	if scopes != nil {
		body["scopes"] = scopes
	}
	return e.call("POST", "/v1/api-keys", body, headers...).want(e.t, "create key "+name, http.StatusCreated).str("key")
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
