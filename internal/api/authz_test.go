package api_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/wrenn-dev/wrenn/internal/api"
	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
)

// An API key does what its scopes allow, whatever its creator could do.
func TestAPIKeyScopes(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	bob := e.signup("bob@example.com")

	created := e.call("POST", "/v1/api-keys", map[string]string{"name": "default"}, bob.bearer()...).want(t, "create default key", http.StatusCreated)
	if got := fmt.Sprint(created.body["scopes"]); got != "[capsules exec files snapshots templates]" {
		t.Errorf("default scopes: got %s, want capsules exec files snapshots templates", got)
	}
	def := []string{"X-API-Key", created.str("key")}
	keysBefore := e.count("api_keys")

	tests := []struct {
		name         string
		method, path string
		body         any
		headers      []string
		status       int
	}{
		// A key cannot mint keys unless scoped to.
		{"default key creates a key", "POST", "/v1/api-keys", map[string]string{"name": "minted"}, def, http.StatusForbidden},
		{"default key lists keys", "GET", "/v1/api-keys", nil, def, http.StatusForbidden},
		{"default key deletes a key", "DELETE", "/v1/api-keys/" + created.str("id"), nil, def, http.StatusForbidden},
		{"default key reads the team", "GET", "/v1/team/members", nil, def, http.StatusForbidden},
		{"default key reads the audit log", "GET", "/v1/audit-log", nil, def, http.StatusForbidden},
		{"default key lists hosts", "GET", "/v1/hosts", nil, def, http.StatusForbidden},
		{"default key lists capsules", "GET", "/v1/capsules", nil, def, http.StatusOK},
		{"default key lists templates", "GET", "/v1/templates", nil, def, http.StatusOK},
		{"default key lists snapshots", "GET", "/v1/snapshots", nil, def, http.StatusOK},
		{"default key asks who it is", "GET", "/v1/me", nil, def, http.StatusOK},
		// Sessions keep the user's full power.
		{"session lists keys", "GET", "/v1/api-keys", nil, bob.bearer(), http.StatusOK},
		{"session reads the team", "GET", "/v1/team/members", nil, bob.bearer(), http.StatusOK},
		// Scope names are checked.
		{"unknown scope", "POST", "/v1/api-keys", map[string]any{"name": "x", "scopes": []string{"capsules", "root"}}, bob.bearer(), http.StatusBadRequest},
		{"no scope", "POST", "/v1/api-keys", map[string]any{"name": "x", "scopes": []string{}}, bob.bearer(), http.StatusBadRequest},
		{"scopes not a list", "POST", "/v1/api-keys", map[string]any{"name": "x", "scopes": "capsules"}, bob.bearer(), http.StatusBadRequest},
		// Only platform admins grant platform:admin.
		{"non-admin grants platform:admin", "POST", "/v1/api-keys", map[string]any{"name": "x", "scopes": []string{"platform:admin"}}, bob.bearer(), http.StatusForbidden},
	}
	for _, tt := range tests {
		r := e.call(tt.method, tt.path, tt.body, tt.headers...)
		if r.status != tt.status {
			t.Errorf("%s: got %d %s, want %d", tt.name, r.status, r.raw, tt.status)
		}
		if r.status >= 400 && r.errCode() == "" {
			t.Errorf("%s: got %s, want the JSON error shape", tt.name, r.raw)
		}
	}
	if n := e.count("api_keys"); n != keysBefore {
		t.Fatalf("got %d keys after refused creations, want %d", n, keysBefore)
	}

	// A key scoped for keys grants only scopes it holds.
	manager := []string{"X-API-Key", e.createKey("manager", []string{"keys:manage", "capsules"}, bob.bearer()...)}
	e.call("POST", "/v1/api-keys", map[string]any{"name": "wider", "scopes": []string{"capsules", "exec"}}, manager...).
		want(t, "key grants a scope it lacks", http.StatusForbidden)
	narrower := e.call("POST", "/v1/api-keys", map[string]any{"name": "narrower", "scopes": []string{"capsules"}}, manager...).
		want(t, "key grants a scope it holds", http.StatusCreated)
	if got := fmt.Sprint(narrower.body["scopes"]); got != "[capsules]" {
		t.Errorf("narrower key: got scopes %s, want [capsules]", got)
	}
	e.call("GET", "/v1/templates", nil, "X-API-Key", narrower.str("key")).want(t, "capsules-only key lists templates", http.StatusForbidden)
	e.call("DELETE", "/v1/api-keys/"+narrower.str("id"), nil, manager...).want(t, "manager deletes a key", http.StatusNoContent)

	// A platform admin's key is a platform admin's only when scoped so.
	plain := []string{"X-API-Key", e.createKey("plain", []string{"hosts", "team", "capsules"}, admin.bearer()...)}
	e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, plain...).want(t, "admin's unscoped key adds a host", http.StatusForbidden)
	if me := e.call("GET", "/v1/me", nil, plain...).want(t, "me", http.StatusOK); me.body["is_platform_admin"] != false {
		t.Errorf("admin's unscoped key: got is_platform_admin %v, want false", me.body["is_platform_admin"])
	}
	e.call("GET", "/v1/audit-log", nil, plain...).want(t, "admin's unscoped key reads the audit log", http.StatusOK)
	scoped := []string{"X-API-Key", e.createKey("scoped", []string{"hosts", "platform:admin", "keys:manage"}, admin.bearer()...)}
	e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, scoped...).want(t, "admin's scoped key adds a host", http.StatusCreated)
	// Deduplicated and in a fixed order.
	again := e.call("POST", "/v1/api-keys", map[string]any{"name": "again", "scopes": []string{"platform:admin", "hosts", "hosts"}}, scoped...).
		want(t, "admin key passes platform:admin on", http.StatusCreated)
	if got := fmt.Sprint(again.body["scopes"]); got != "[hosts platform:admin]" {
		t.Errorf("scopes: got %s, want [hosts platform:admin]", got)
	}
	list := e.call("GET", "/v1/api-keys", nil, scoped...).want(t, "list", http.StatusOK)
	for _, k := range list.list {
		if k.(map[string]any)["scopes"] == nil {
			t.Errorf("list: key %v has no scopes", k)
		}
	}
}

// Every scope a session may grant is accepted, and the error names the
// known ones.
func TestAPIKeyScopeNames(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	r := e.call("POST", "/v1/api-keys", map[string]any{"name": "all", "scopes": auth.AllScopes}, admin.bearer()...).want(t, "all scopes", http.StatusCreated)
	if got := fmt.Sprint(r.body["scopes"]); got != fmt.Sprint(auth.AllScopes) {
		t.Errorf("got %s, want %v", got, auth.AllScopes)
	}
	bad := e.call("POST", "/v1/api-keys", map[string]any{"name": "bad", "scopes": []string{"Capsules"}}, admin.bearer()...).want(t, "bad scope", http.StatusBadRequest)
	if msg := fmt.Sprint(bad.body["error"]); !strings.Contains(msg, `"Capsules"`) || !strings.Contains(msg, "keys:manage") {
		t.Errorf("got %s, want a message naming the bad scope and the known ones", bad.raw)
	}
}

// The first platform admin comes from the bootstrap token, not from being
// first to sign up.
func TestBootstrap(t *testing.T) {
	e := newEnv(t)
	e.signups = 1 // the helper must not present the token
	signup := func(email, token string) response {
		body := map[string]string{"email": email, "password": "correct horse"}
		if token != "" {
			body["bootstrap_token"] = token
		}
		return e.call("POST", "/v1/auth/signup", body)
	}
	first := signup("first@example.com", "").want(t, "first signup", http.StatusCreated)
	if first.body["user"].(map[string]any)["is_platform_admin"] != false {
		t.Errorf("first signup without the token: got %s, want no platform admin", first.raw)
	}
	token := e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, "Authorization", "Bearer "+first.str("token"))
	token.want(t, "first user adds a host", http.StatusForbidden)

	users := e.count("users")
	if r := signup("wrong@example.com", testBootstrapToken+"x"); r.status != http.StatusForbidden || r.errCode() != "forbidden" {
		t.Errorf("wrong token: got %d %s, want 403 forbidden", r.status, r.raw)
	}
	if n := e.count("users"); n != users {
		t.Fatalf("a refused signup created a user")
	}
	admin := signup("admin@example.com", testBootstrapToken).want(t, "signup with the token", http.StatusCreated)
	if admin.body["user"].(map[string]any)["is_platform_admin"] != true {
		t.Errorf("signup with the token: got %s, want platform admin", admin.raw)
	}
	e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, "Authorization", "Bearer "+admin.str("token")).
		want(t, "bootstrapped admin adds a host", http.StatusCreated)
	// Spent.
	if r := signup("again@example.com", testBootstrapToken); r.status != http.StatusForbidden || !strings.Contains(string(r.raw), "spent") {
		t.Errorf("token again: got %d %s, want 403 saying it is spent", r.status, r.raw)
	}
	if n := e.count("users"); n != users+1 {
		t.Errorf("got %d users, want %d", n, users+1)
	}
	// Spent even when no platform admin is left.
	e.exec(`UPDATE users SET is_platform_admin = false`)
	signup("later@example.com", testBootstrapToken).want(t, "token after the admin was demoted", http.StatusForbidden)
	var meta string
	if err := e.db.QueryRow(t.Context(), `SELECT metadata::text FROM audit_log WHERE action = 'auth.signup' AND resource_id = $1`,
		admin.body["user"].(map[string]any)["id"]).Scan(&meta); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(meta, `"platform_admin": true`) {
		t.Errorf("audit of the bootstrap signup: got metadata %s, want platform_admin", meta)
	}
}

// Two signups presenting the token at once make one platform admin.
func TestBootstrapRace(t *testing.T) {
	e := newEnv(t)
	const n = 8
	statuses := make(chan int, n)
	for i := range n {
		go func() {
			body := map[string]string{"email": fmt.Sprintf("u%d@example.com", i), "password": "correct horse", "bootstrap_token": testBootstrapToken}
			j := strings.NewReader(fmt.Sprintf(`{"email":%q,"password":%q,"bootstrap_token":%q}`, body["email"], body["password"], body["bootstrap_token"]))
			res, err := http.Post(e.url+"/v1/auth/signup", "application/json", j)
			if err != nil {
				statuses <- 0
				return
			}
			_ = res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	created := 0
	for range n {
		switch s := <-statuses; s {
		case http.StatusCreated:
			created++
		case http.StatusForbidden:
		default:
			t.Errorf("got status %d, want 201 or 403", s)
		}
	}
	if admins := e.count("users WHERE is_platform_admin"); created != 1 || admins != 1 {
		t.Errorf("got %d signups through and %d platform admins, want 1 and 1", created, admins)
	}
}

// Without WRENN_BOOTSTRAP_TOKEN the server makes a token up and logs it
// while no platform admin exists.
func TestBootstrapTokenLogged(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	cfg := e.cfg
	cfg.BootstrapToken = ""
	start := func() *api.Server {
		return api.New(api.Deps{
			Store: e.store, Config: cfg, Signer: hostauth.NewSigner(e.key), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Passwords: auth.Passwords{Cost: bcrypt.MinCost},
		})
	}
	sv := start()
	if err := sv.Bootstrap(t.Context()); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`bootstrap_token=(wrnboot_[A-Za-z0-9_-]{43})`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("log: got %q, want a bootstrap token", logs.String())
	}
	srv := httptest.NewServer(sv)
	defer srv.Close()
	e.url = srv.URL
	e.call("POST", "/v1/auth/signup", map[string]string{"email": "a@example.com", "password": "correct horse", "bootstrap_token": testBootstrapToken}).
		want(t, "the test token on a server that made its own", http.StatusForbidden)
	r := e.call("POST", "/v1/auth/signup", map[string]string{"email": "a@example.com", "password": "correct horse", "bootstrap_token": m[1]}).
		want(t, "signup with the logged token", http.StatusCreated)
	if r.body["user"].(map[string]any)["is_platform_admin"] != true {
		t.Errorf("got %s, want platform admin", r.raw)
	}
	logs.Reset()
	if err := start().Bootstrap(t.Context()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "wrnboot_") {
		t.Errorf("log after bootstrap: got %q, want no token", logs.String())
	}
}

func TestSignupClosed(t *testing.T) {
	e := newEnv(t, func(c *config.ControlPlane) { c.Signup = config.SignupClosed })
	r := e.call("POST", "/v1/auth/signup", map[string]string{"email": "a@example.com", "password": "correct horse"})
	if r.status != http.StatusForbidden || !strings.Contains(string(r.raw), "closed") {
		t.Errorf("signup without token: got %d %s, want 403 signup closed", r.status, r.raw)
	}
	e.signup("admin@example.com") // with the token
	if n := e.count("users"); n != 1 {
		t.Errorf("got %d users, want 1", n)
	}
}

// retryAfter returns the Retry-After of r in seconds, failing unless it is
// a positive number.
func retryAfter(t *testing.T, r response) int {
	t.Helper()
	n, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || n <= 0 {
		t.Fatalf("got Retry-After %q, want a positive number of seconds", r.header.Get("Retry-After"))
	}
	return n
}

// Failed logins lock the account out for a while, whatever IP they come
// from, and unknown accounts answer the same.
func TestLoginLockout(t *testing.T) {
	e := newEnv(t, func(c *config.ControlPlane) {
		c.LoginMaxFailures = 3
		c.LoginLockout = time.Minute
		trustLoopback(c, true)
	})
	e.signup("bob@example.com")
	e.signup("alice@example.com")
	login := func(email, password string, ip int) response {
		return e.call("POST", "/v1/auth/login", map[string]string{"email": email, "password": password},
			"X-Forwarded-For", fmt.Sprintf("203.0.113.%d", ip))
	}

	// Failures are forgotten after a success.
	login("bob@example.com", "wrong password", 1).want(t, "failure 1", http.StatusUnauthorized)
	login("bob@example.com", "wrong password", 2).want(t, "failure 2", http.StatusUnauthorized)
	login("bob@example.com", "correct horse", 3).want(t, "success", http.StatusOK)
	if n := e.count("login_failures"); n != 0 {
		t.Errorf("got %d login_failures rows after a success, want 0", n)
	}

	for _, email := range []string{"bob@example.com", "nobody@example.com"} {
		for i := range 3 {
			login(email, "wrong password", 10+i).want(t, fmt.Sprintf("%s failure %d", email, i+1), http.StatusUnauthorized)
		}
		// Locked: even the right password, from yet another IP.
		r := login(email, "correct horse", 99)
		if r.status != http.StatusTooManyRequests || r.errCode() != "rate_limited" {
			t.Fatalf("%s locked: got %d %s, want 429 rate_limited", email, r.status, r.raw)
		}
		if n := retryAfter(t, r); n < 55 || n > 60 {
			t.Errorf("%s locked: got Retry-After %d, want about 60", email, n)
		}
		if !strings.Contains(string(r.raw), "too many failed logins for this account") {
			t.Errorf("%s locked: got %s", email, r.raw)
		}
	}
	// Another account is not affected.
	login("alice@example.com", "correct horse", 10).want(t, "alice", http.StatusOK)

	// The lock ends; the next failure locks for twice as long.
	e.exec(`UPDATE login_failures SET locked_until = now() - interval '1 second'`)
	login("bob@example.com", "wrong password", 1).want(t, "failure after the lock", http.StatusUnauthorized)
	r := login("bob@example.com", "correct horse", 1).want(t, "locked again", http.StatusTooManyRequests)
	if n := retryAfter(t, r); n < 115 || n > 120 {
		t.Errorf("second lock: got Retry-After %d, want about 120", n)
	}
	e.exec(`UPDATE login_failures SET locked_until = now() - interval '1 second'`)
	login("bob@example.com", "correct horse", 1).want(t, "after the lock", http.StatusOK)
}

// The per-IP budget counts what a client controls: an IPv6 /64, and the
// forwarded client only from trusted proxies.
func TestRateLimitBuckets(t *testing.T) {
	login := map[string]string{"email": "x@example.com", "password": "whatever1"}
	loopbackProxy := []string{"127.0.0.0/8", "::1/128"}
	tests := []struct {
		name         string
		proxies      []string
		first, again string // X-Forwarded-For of two logins
		wantSecond   int
	}{
		{"no trusted proxies: X-Forwarded-For ignored", nil, "203.0.113.1", "203.0.113.2", http.StatusTooManyRequests},
		{"peer not a trusted proxy: X-Forwarded-For ignored", []string{"10.0.0.0/8"}, "203.0.113.1", "203.0.113.2", http.StatusTooManyRequests},
		{"trusted proxy: two clients", loopbackProxy, "203.0.113.1", "203.0.113.2", http.StatusUnauthorized},
		{"trusted proxy: forged entries on the left", loopbackProxy, "198.51.100.1, 203.0.113.1", "198.51.100.2, 203.0.113.1", http.StatusTooManyRequests},
		{"two trusted hops", []string{"127.0.0.0/8", "10.0.0.0/8"}, "203.0.113.1, 10.0.0.5", "203.0.113.2, 10.0.0.6", http.StatusUnauthorized},
		{"garbage from the client", loopbackProxy, "garbage, 203.0.113.1", "more garbage, 203.0.113.1", http.StatusTooManyRequests},
		{"IPv6: same /64", loopbackProxy, "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", http.StatusTooManyRequests},
		{"IPv6: another /64", loopbackProxy, "2001:db8:1:2::1", "2001:db8:1:3::1", http.StatusUnauthorized},
		{"IPv4-mapped IPv6 is the IPv4 address", loopbackProxy, "::ffff:203.0.113.1", "203.0.113.1", http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.ControlPlane) {
				c.AuthRateLimit = 1
				c.LoginMaxFailures = 100
				for _, p := range tt.proxies {
					c.TrustedProxies = append(c.TrustedProxies, mustPrefix(t, p))
				}
			})
			e.call("POST", "/v1/auth/login", login, "X-Forwarded-For", tt.first).want(t, "first login", http.StatusUnauthorized)
			r := e.call("POST", "/v1/auth/login", login, "X-Forwarded-For", tt.again).want(t, "second login", tt.wantSecond)
			if r.status == http.StatusTooManyRequests {
				retryAfter(t, r)
			}
		})
	}
}
