package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/config"
)

// cookiesOf returns the cookies an answer sets, by name.
func cookiesOf(r response) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		out[c.Name] = c
	}
	return out
}

// browser is a signed-in dashboard: its two cookies.
type browser struct {
	session, csrf string
}

// cookie returns the Cookie header of b.
func (b browser) cookie() []string {
	return []string{"Cookie", "wrenn_session=" + b.session + "; wrenn_csrf=" + b.csrf}
}

// withCSRF returns the headers of an unsafe request from b's own page.
func (b browser) withCSRF() []string { return append(b.cookie(), "X-CSRF-Token", b.csrf) }

func (e *env) login(email string, headers ...string) (response, browser) {
	e.t.Helper()
	r := e.call("POST", "/v1/auth/login", map[string]string{"email": email, "password": "correct horse"}, headers...).
		want(e.t, "login "+email, http.StatusOK)
	cs := cookiesOf(r)
	if cs["wrenn_session"] == nil || cs["wrenn_csrf"] == nil {
		e.t.Fatalf("login: got cookies %v, want wrenn_session and wrenn_csrf", r.header.Values("Set-Cookie"))
	}
	return r, browser{session: cs["wrenn_session"].Value, csrf: cs["wrenn_csrf"].Value}
}

func TestLoginSetsCookies(t *testing.T) {
	e := newEnv(t)
	signup := e.call("POST", "/v1/auth/signup", map[string]string{"email": "a@example.com", "password": "correct horse"}).
		want(t, "signup", http.StatusCreated)
	if cs := cookiesOf(signup); cs["wrenn_session"] == nil || cs["wrenn_session"].Value != signup.str("token") || cs["wrenn_csrf"] == nil {
		t.Errorf("signup: got cookies %v, want the session token and a CSRF token", signup.header.Values("Set-Cookie"))
	}
	r, b := e.login("a@example.com")
	cs := cookiesOf(r)
	exp, err := time.Parse(time.RFC3339, r.str("expires_at"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		httpOnly bool
	}{
		{"wrenn_session", true},
		{"wrenn_csrf", false},
	}
	for _, tt := range tests {
		c := cs[tt.name]
		if c.HttpOnly != tt.httpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || !c.Expires.Equal(exp) {
			t.Errorf("%s: got HttpOnly=%v SameSite=%v Path=%q Secure=%v Expires=%v; want HttpOnly=%v, Strict, /, not Secure over plain HTTP, %v",
				tt.name, c.HttpOnly, c.SameSite, c.Path, c.Secure, c.Expires, tt.httpOnly, exp)
		}
	}
	if b.session != r.str("token") {
		t.Errorf("session cookie holds %q, want the token of the answer", b.session)
	}
	if b.csrf == "" || b.csrf == b.session {
		t.Errorf("got CSRF cookie %q, want a token of its own", b.csrf)
	}
}

func TestSecureCookies(t *testing.T) {
	tests := []struct {
		name       string
		secure     bool // WRENN_COOKIE_SECURE
		trustProxy bool
		headers    []string
		want       bool
	}{
		{"plain HTTP", false, false, nil, false},
		{"forced", true, false, nil, true},
		{"proxy says https, trusted", false, true, []string{"X-Forwarded-Proto", "https"}, true},
		{"proxy says https, not trusted", false, false, []string{"X-Forwarded-Proto", "https"}, false},
		{"proxy says http", false, true, []string{"X-Forwarded-Proto", "http"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *config.ControlPlane) { c.CookieSecure = tt.secure; trustLoopback(c, tt.trustProxy) })
			e.signup("a@example.com")
			r, _ := e.login("a@example.com", tt.headers...)
			for name, c := range cookiesOf(r) {
				if c.Secure != tt.want {
					t.Errorf("%s: got Secure=%v, want %v", name, c.Secure, tt.want)
				}
			}
		})
	}
}

func TestCookieAuth(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	_, b := e.login("a@example.com")

	me := e.call("GET", "/v1/me", nil, b.cookie()...).want(t, "me with the cookie", http.StatusOK)
	if me.body["user"].(map[string]any)["email"] != "a@example.com" || me.str("auth_method") != "session" {
		t.Errorf("me: got %s", me.raw)
	}
	e.call("GET", "/v1/me", nil, "Cookie", "wrenn_session=garbage").want(t, "me with a bad cookie", http.StatusUnauthorized)
	e.call("GET", "/v1/me", nil, append(b.cookie(), "Origin", "https://evil.example")...).want(t, "cross-origin GET", http.StatusForbidden)
	e.call("GET", "/v1/me", nil, append(b.cookie(), "Origin", e.url)...).want(t, "same-origin GET", http.StatusOK)

	keys := func() int {
		var n int
		if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM api_keys WHERE deleted_at IS NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	create := map[string]string{"name": "k"}
	refused := []struct {
		name    string
		headers []string
	}{
		{"no CSRF token", b.cookie()},
		{"wrong CSRF token", append(b.cookie(), "X-CSRF-Token", "AAAA"+b.csrf[4:])},
		{"CSRF token of another session", append(b.cookie(), "X-CSRF-Token", func() string { _, o := e.login("a@example.com"); return o.csrf }())},
		{"cross-origin", append(b.withCSRF(), "Origin", "https://evil.example")},
		{"cross-origin, other port", append(b.withCSRF(), "Origin", strings.Replace(e.url, "127.0.0.1:", "127.0.0.1:1", 1))},
		{"null origin", append(b.withCSRF(), "Origin", "null")},
	}
	for _, tt := range refused {
		r := e.call("POST", "/v1/api-keys", create, tt.headers...)
		if r.status != http.StatusForbidden || r.errCode() != "forbidden" {
			t.Errorf("%s: got %d %s, want 403 forbidden", tt.name, r.status, r.raw)
		}
		if tt.name == "no CSRF token" && !strings.Contains(string(r.raw), "X-CSRF-Token") {
			t.Errorf("%s: got message %s, want one naming X-CSRF-Token", tt.name, r.raw)
		}
	}
	if n := keys(); n != 0 {
		t.Fatalf("got %d keys after refused requests, want 0", n)
	}
	key := e.call("POST", "/v1/api-keys", create, b.withCSRF()...).want(t, "create with CSRF token", http.StatusCreated)
	e.call("POST", "/v1/api-keys", create, append(b.withCSRF(), "Origin", e.url)...).want(t, "create from own origin", http.StatusCreated)
	e.call("DELETE", "/v1/api-keys/"+key.str("id"), nil, b.cookie()...).want(t, "delete without CSRF token", http.StatusForbidden)
	if n := keys(); n != 2 {
		t.Fatalf("got %d keys, want 2", n)
	}
	e.call("DELETE", "/v1/api-keys/"+key.str("id"), nil, b.withCSRF()...).want(t, "delete with CSRF token", http.StatusNoContent)

	// Bearer tokens and API keys need no CSRF token, even next to a cookie.
	e.call("POST", "/v1/api-keys", create, a.bearer()...).want(t, "bearer", http.StatusCreated)
	manage := map[string]any{"name": "k", "scopes": []string{"keys:manage"}}
	k2 := e.call("POST", "/v1/api-keys", manage, append(a.bearer(), "Cookie", "wrenn_session="+b.session)...).want(t, "bearer and cookie", http.StatusCreated)
	e.call("POST", "/v1/api-keys", manage, "X-API-Key", k2.str("key")).want(t, "API key", http.StatusCreated)
	e.call("POST", "/v1/api-keys", manage, "X-API-Key", k2.str("key"), "Origin", "https://evil.example").want(t, "API key from another origin", http.StatusCreated)
	// A present Authorization header is used as before, whatever cookie comes along.
	e.call("GET", "/v1/me", nil, append(b.cookie(), "Authorization", "Basic eDp5")...).want(t, "non-bearer Authorization", http.StatusUnauthorized)
}

func TestLogout(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	_, b := e.login("a@example.com")
	bearerTok := a.token

	e.call("POST", "/v1/auth/logout", nil, b.cookie()...).want(t, "logout without CSRF token", http.StatusForbidden)
	e.call("GET", "/v1/me", nil, b.cookie()...).want(t, "me after refused logout", http.StatusOK)
	r := e.call("POST", "/v1/auth/logout", nil, b.withCSRF()...).want(t, "logout", http.StatusNoContent)
	for name, c := range cookiesOf(r) {
		if c.MaxAge >= 0 || c.Value != "" {
			t.Errorf("logout: cookie %s: got MaxAge=%d value %q, want it deleted", name, c.MaxAge, c.Value)
		}
	}
	if len(cookiesOf(r)) != 2 {
		t.Errorf("logout: got cookies %v, want both cleared", r.header.Values("Set-Cookie"))
	}
	e.call("GET", "/v1/me", nil, b.cookie()...).want(t, "cookie after logout", http.StatusUnauthorized)
	e.call("GET", "/v1/me", nil, "Authorization", "Bearer "+b.session).want(t, "cookie's token as bearer after logout", http.StatusUnauthorized)
	e.call("POST", "/v1/auth/logout", nil, b.withCSRF()...).want(t, "logout twice", http.StatusNoContent)

	e.call("GET", "/v1/me", nil, a.bearer()...).want(t, "other session still valid", http.StatusOK)
	e.call("POST", "/v1/auth/logout", nil, "Authorization", "Bearer "+bearerTok).want(t, "bearer logout", http.StatusNoContent)
	e.call("GET", "/v1/me", nil, a.bearer()...).want(t, "bearer after logout", http.StatusUnauthorized)
	e.call("POST", "/v1/auth/logout", nil).want(t, "logout without a session", http.StatusNoContent)

	var n int
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'auth.logout'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("got %d auth.logout audit rows, want 2", n)
	}
	if n := e.count("revoked_sessions"); n != 2 {
		t.Errorf("got %d revoked sessions, want 2", n)
	}
	// Expired revocations go on the next logout.
	e.exec(`UPDATE revoked_sessions SET expires_at = now() - interval '1 hour'`)
	_, b2 := e.login("a@example.com")
	e.call("POST", "/v1/auth/logout", nil, b2.withCSRF()...).want(t, "third logout", http.StatusNoContent)
	if n := e.count("revoked_sessions"); n != 1 {
		t.Errorf("got %d revoked sessions after expiry, want 1", n)
	}
}

// TestWebSocketCookieOrigin: a WebSocket upgrade with the session cookie
// from another origin is refused before its handler runs; from our own
// origin it reaches the handler (a 404 for an unknown capsule).
func TestWebSocketCookieOrigin(t *testing.T) {
	e := newEnv(t)
	e.signup("a@example.com")
	_, b := e.login("a@example.com")
	wsURL := "ws" + strings.TrimPrefix(e.url, "http") + "/v1/capsules/00000000-0000-0000-0000-000000000001/pty"
	tests := []struct {
		name   string
		origin string
		want   int
	}{
		{"foreign origin", "https://evil.example", http.StatusForbidden},
		{"own origin", e.url, http.StatusNotFound},
	}
	for _, tt := range tests {
		h := http.Header{}
		h.Set("Cookie", b.cookie()[1])
		h.Set("Origin", tt.origin)
		conn, res, err := websocket.Dial(context.Background(), wsURL, &websocket.DialOptions{HTTPHeader: h})
		if res != nil && res.Body != nil {
			_ = res.Body.Close()
		}
		if err == nil {
			_ = conn.CloseNow()
			t.Fatalf("%s: upgrade accepted, want refused", tt.name)
		}
		if res == nil || res.StatusCode != tt.want {
			t.Errorf("%s: got %v (%v), want status %d", tt.name, res, err, tt.want)
		}
	}
}

// TestLoginCrossOrigin: signup and login set the session cookies, so a page
// of another origin must not be able to call them (login CSRF: a form
// posting the attacker's credentials would sign the victim's browser into
// the attacker's account). Clients without an Origin header are unaffected.
func TestLoginCrossOrigin(t *testing.T) {
	e := newEnv(t)
	e.signup("a@example.com")
	creds := map[string]string{"email": "a@example.com", "password": "correct horse"}
	for _, origin := range []string{"https://evil.example", "null"} {
		r := e.call("POST", "/v1/auth/login", creds, "Origin", origin)
		if r.status != http.StatusForbidden || r.errCode() != "forbidden" {
			t.Errorf("login from %s: got %d %s, want 403 forbidden", origin, r.status, r.raw)
		}
		if cs := cookiesOf(r); len(cs) != 0 {
			t.Errorf("login from %s: got cookies %v, want none", origin, r.header.Values("Set-Cookie"))
		}
		r = e.call("POST", "/v1/auth/signup", map[string]string{"email": "b@example.com", "password": "correct horse"}, "Origin", origin)
		if r.status != http.StatusForbidden || len(cookiesOf(r)) != 0 {
			t.Errorf("signup from %s: got %d %v, want 403 and no cookies", origin, r.status, r.header.Values("Set-Cookie"))
		}
	}
	if n := e.count("users"); n != 1 {
		t.Errorf("got %d users after cross-origin signups, want 1", n)
	}
	e.login("a@example.com", "Origin", e.url)
	e.login("a@example.com")
}
