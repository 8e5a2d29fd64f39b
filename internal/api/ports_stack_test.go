package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// proxyDomain is the WRENN_PROXY_DOMAIN of the port proxy's tests; no DNS
// is needed: requests go to the control plane's address with its Host.
const proxyDomain = "ports.wrenn.test"

// buildPortServer builds testdata/portserver (static) into a directory of
// t's that is removed when t ends, and returns its path; Go's build cache
// makes every build after the first quick.
func buildPortServer(t testing.TB) (string, error) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "portserver")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/portserver")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building portserver: %w: %s", err, out)
	}
	return bin, nil
}

// portCapsule is a capsule running busybox httpd on 8080 (serving
// /www/index.html) and portserver on 8081.
type portCapsule struct {
	*capsuleClient
	index string
}

// startPortServers starts both servers in cc's capsule and waits until
// GET /ports lists them.
func startPortServers(t testing.TB, cc *capsuleClient) *portCapsule {
	t.Helper()
	bin, err := buildPortServer(t)
	if err != nil {
		t.Fatal(err)
	}
	index := "<html><body>hello from busybox httpd in " + cc.id + "</body></html>"
	cc.raw("PUT", "/files?path=/www/index.html", "application/octet-stream", strings.NewReader(index)).
		want(t, "upload index.html", http.StatusOK)
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	cc.raw("PUT", "/files?path=/opt/portserver&mode=755", "application/octet-stream", f).
		want(t, "upload portserver", http.StatusOK)
	cc.exec(map[string]any{"cmd": "httpd -f -p 8080 -h /www", "background": true}).want(t, "start httpd", http.StatusAccepted)
	cc.exec(map[string]any{"cmd": "/opt/portserver -addr :8081", "background": true}).want(t, "start portserver", http.StatusAccepted)
	deadline := time.Now().Add(20 * time.Second)
	for {
		a := cc.call("GET", "/ports", nil).want(t, "list ports", http.StatusOK)
		var ports []int
		for _, p := range a.body["ports"].([]any) {
			m := p.(map[string]any)
			if m["listening"] == true {
				ports = append(ports, int(m["port"].(float64)))
			}
		}
		has := func(p int) bool {
			for _, q := range ports {
				if q == p {
					return true
				}
			}
			return false
		}
		if has(49983) {
			t.Fatalf("GET /ports lists envd's port: %s", a.raw)
		}
		if has(8080) && has(8081) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers not listening after 20 s: %s", a.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &portCapsule{capsuleClient: cc, index: index}
}

// portPath is the path form of port's sub.
func (pc *portCapsule) portPath(port int, sub string) string {
	return fmt.Sprintf("/v1/capsules/%s/ports/%d%s", pc.id, port, sub)
}

// hostOf is the host form's Host of port.
func (pc *portCapsule) hostOf(port int) string {
	return fmt.Sprintf("%d-%s.%s", port, pc.id, proxyDomain)
}

// get sends method path (on the control plane) with headers ("Host" sets
// the Host) and body.
func (pc *portCapsule) send(t testing.TB, method, path string, body io.Reader, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, pc.st.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Add(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = res.Body.Close() }()
	return readAnswer(t, res)
}

func TestPortProxyStack(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{ControlPlane: func(c *config.ControlPlane) { c.ProxyDomain = proxyDomain }})
	pc := startPortServers(t, newCapsuleClient(t, st))
	key := []string{"X-API-Key", st.Team.APIKey}

	t.Run("path form", func(t *testing.T) {
		a := pc.send(t, "GET", pc.portPath(8080, "/"), nil, key...).want(t, "httpd via path", http.StatusOK)
		if string(a.raw) != pc.index {
			t.Errorf("got %q, want the index page", a.raw)
		}
		if csp := a.header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox") {
			t.Errorf("path form answer has CSP %q, want a sandbox", csp)
		}
		// Without the slash: sent to the root.
		req, _ := http.NewRequest("GET", st.URL+pc.portPath(8080, ""), nil)
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if loc := res.Header.Get("Location"); res.StatusCode != http.StatusPermanentRedirect || loc != pc.portPath(8080, "/") {
			t.Errorf("GET without slash = %d to %q, want 308 to %q", res.StatusCode, loc, pc.portPath(8080, "/"))
		}
	})

	t.Run("host form", func(t *testing.T) {
		a := pc.send(t, "GET", "/", nil, append(key, "Host", pc.hostOf(8080))...).want(t, "httpd via host", http.StatusOK)
		if string(a.raw) != pc.index {
			t.Errorf("got %q, want the index page", a.raw)
		}
		a = pc.send(t, "GET", "/request?x=1", nil, append(key, "Host", pc.hostOf(8081))...).want(t, "portserver via host", http.StatusOK)
		if a.str("host") != pc.hostOf(8081) || a.str("uri") != "/request?x=1" {
			t.Errorf("the capsule saw Host %q and URI %q, want %q and /request?x=1", a.str("host"), a.str("uri"), pc.hostOf(8081))
		}
		// Another domain, or a malformed name, is the API's.
		pc.send(t, "GET", "/v1/me", nil, append(key, "Host", "8081-"+pc.id+".elsewhere.test")...).want(t, "other domain", http.StatusOK)
		pc.send(t, "GET", "/", nil, append(key, "Host", "x-"+pc.id+"."+proxyDomain)...).
			wantError(t, "bad port label", http.StatusBadRequest, "invalid_request")
	})

	t.Run("HTTP/2", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", st.URL+pc.portPath(8080, "/"), nil)
		req.Header.Set("X-API-Key", st.Team.APIKey)
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		a := readAnswer(t, res)
		if res.ProtoMajor != 2 || a.status != http.StatusOK || string(a.raw) != pc.index {
			t.Errorf("h2c GET = HTTP/%d %d %q, want HTTP/2 200 with the index", res.ProtoMajor, a.status, a.raw)
		}
	})

	t.Run("auth", func(t *testing.T) {
		pc.send(t, "GET", pc.portPath(8080, "/"), nil).wantError(t, "no credentials", http.StatusUnauthorized, "unauthenticated")
		pc.send(t, "GET", "/", nil, "Host", pc.hostOf(8080)).wantError(t, "no credentials (host)", http.StatusUnauthorized, "unauthenticated")
		other := st.NewTeam(t)
		pc.send(t, "GET", pc.portPath(8080, "/"), nil, "X-API-Key", other.APIKey).
			wantError(t, "another team", http.StatusNotFound, "capsule_not_found")
		pc.send(t, "GET", "/", nil, "X-API-Key", other.APIKey, "Host", pc.hostOf(8080)).
			wantError(t, "another team (host)", http.StatusNotFound, "capsule_not_found")
		// An API key without the exec scope.
		var k struct {
			Key string `json:"key"`
		}
		st.Team.JSON(t, st, "POST", "/v1/api-keys", map[string]any{"name": "no exec", "scopes": []string{"capsules"}}, http.StatusCreated, &k)
		pc.send(t, "GET", pc.portPath(8080, "/"), nil, "X-API-Key", k.Key).wantError(t, "no exec scope", http.StatusForbidden, "forbidden")

		// The dashboard's session cookie: GET as is, unsafe methods with
		// the CSRF token, never with a foreign Origin.
		login := pc.send(t, "POST", "/v1/auth/login", strings.NewReader(`{"email":"user1@example.com","password":"correct horse battery staple"}`),
			"Content-Type", "application/json").want(t, "login", http.StatusOK)
		var session, csrf string
		for _, ck := range (&http.Response{Header: login.header}).Cookies() {
			switch ck.Name {
			case "wrenn_session":
				session = ck.Value
			case "wrenn_csrf":
				csrf = ck.Value
			}
		}
		cookies := "wrenn_session=" + session + "; wrenn_csrf=" + csrf + "; app=1"
		pc.send(t, "GET", pc.portPath(8080, "/"), nil, "Cookie", cookies).want(t, "GET with the session cookie", http.StatusOK)
		pc.send(t, "POST", pc.portPath(8081, "/request"), strings.NewReader("x"), "Cookie", cookies).
			wantError(t, "POST with the cookie, no CSRF token", http.StatusForbidden, "forbidden")
		pc.send(t, "GET", pc.portPath(8081, "/request"), nil, "Cookie", cookies, "Origin", "https://evil.example").
			wantError(t, "cookie with a foreign Origin", http.StatusForbidden, "forbidden")
		a := pc.send(t, "POST", pc.portPath(8081, "/request"), strings.NewReader("x"), "Cookie", cookies, "X-CSRF-Token", csrf).
			want(t, "POST with the cookie and CSRF token", http.StatusOK)
		// What reached the capsule: no control-plane credential, the
		// app's own cookie, the prefix it is served under.
		var seen struct {
			Header http.Header `json:"header"`
		}
		_ = json.Unmarshal(a.raw, &seen)
		if c := seen.Header.Get("Cookie"); c != "app=1" {
			t.Errorf("the capsule got Cookie %q, want only app=1", c)
		}
		if v := seen.Header.Get("X-CSRF-Token"); v != "" {
			t.Errorf("the capsule got the CSRF token")
		}
		if p := seen.Header.Get("X-Forwarded-Prefix"); p != pc.portPath(8081, "") {
			t.Errorf("X-Forwarded-Prefix = %q, want %q", p, pc.portPath(8081, ""))
		}
		cpHost := strings.TrimPrefix(st.URL, "http://")
		if h, f, p := seen.Header.Get("X-Forwarded-Host"), seen.Header.Get("X-Forwarded-For"), seen.Header.Get("X-Forwarded-Proto"); h != cpHost || f != "127.0.0.1" || p != "http" {
			t.Errorf("X-Forwarded-Host, -For, -Proto = %q, %q, %q; want %q, 127.0.0.1, http", h, f, p, cpHost)
		}
		a = pc.send(t, "GET", pc.portPath(8081, "/request"), nil, key...).want(t, "request with a key", http.StatusOK)
		_ = json.Unmarshal(a.raw, &seen)
		if seen.Header.Get("X-API-Key") != "" || seen.Header.Get("Authorization") != "" {
			t.Errorf("the capsule got the caller's API key: %v", seen.Header)
		}
		var setCookies []string
		for _, ck := range (&http.Response{Header: a.header}).Cookies() {
			setCookies = append(setCookies, ck.Name)
		}
		if strings.Join(setCookies, ",") != "app" {
			t.Errorf("the capsule's answer sets cookies %v, want only app (never wrenn_*)", setCookies)
		}
	})

	t.Run("signed URL", func(t *testing.T) {
		var u struct {
			URL, PathURL, Token string
			ExpiresAt           time.Time `json:"expires_at"`
		}
		st.Team.JSON(t, st, "POST", pc.portPath(8081, "/url"), map[string]any{"expires_in_sec": 3}, http.StatusOK, &u)
		if !strings.HasPrefix(u.URL, "http://"+pc.hostOf(8081)) || !strings.Contains(u.URL, "wrenn_token="+u.Token) {
			t.Errorf("url = %q, want the host form with the token", u.URL)
		}
		a := pc.send(t, "GET", pc.portPath(8081, "/request?wrenn_token="+u.Token+"&x=2"), nil).want(t, "signed URL", http.StatusOK)
		if a.str("uri") != "/request?x=2" {
			t.Errorf("the capsule saw %q, want the token taken out", a.str("uri"))
		}
		var cookie string
		for _, ck := range (&http.Response{Header: a.header}).Cookies() {
			if ck.Name == "wrenn_port_token" {
				cookie = ck.Value
				if ck.Path != pc.portPath(8081, "/") || !ck.HttpOnly {
					t.Errorf("access cookie has path %q, HttpOnly %v", ck.Path, ck.HttpOnly)
				}
			}
		}
		if cookie != u.Token {
			t.Fatalf("no access cookie set with the token")
		}
		pc.send(t, "GET", pc.portPath(8081, "/"), nil, "Cookie", "wrenn_port_token="+cookie).want(t, "access cookie", http.StatusOK)
		pc.send(t, "GET", "/", nil, "Host", pc.hostOf(8081), "Cookie", "wrenn_port_token="+cookie).want(t, "access cookie (host)", http.StatusOK)
		pc.send(t, "GET", pc.portPath(8080, "/?wrenn_token="+u.Token), nil).
			wantError(t, "token of another port", http.StatusUnauthorized, "unauthenticated")
		pc.send(t, "GET", pc.portPath(8081, "/?wrenn_token=x"+u.Token), nil).
			wantError(t, "forged token", http.StatusUnauthorized, "unauthenticated")
		time.Sleep(time.Until(u.ExpiresAt) + 1100*time.Millisecond)
		a = pc.send(t, "GET", pc.portPath(8081, "/?wrenn_token="+u.Token), nil)
		a.wantError(t, "expired token", http.StatusUnauthorized, "unauthenticated")
		if !strings.Contains(string(a.raw), "expired") {
			t.Errorf("expired token answer %s does not say it expired", a.raw)
		}
		pc.send(t, "GET", pc.portPath(8081, "/"), nil, "Cookie", "wrenn_port_token="+cookie).
			wantError(t, "expired cookie", http.StatusUnauthorized, "unauthenticated")
		st.Team.JSON(t, st, "POST", pc.portPath(8081, "/url"), map[string]any{"expires_in_sec": 0}, http.StatusBadRequest, nil)
		st.Team.JSON(t, st, "POST", pc.portPath(49983, "/url"), nil, http.StatusForbidden, nil)
	})

	t.Run("public port", func(t *testing.T) {
		var p struct {
			Port   int  `json:"port"`
			Public bool `json:"public"`
		}
		st.Team.JSON(t, st, "PATCH", pc.portPath(8080, ""), map[string]any{"public": true}, http.StatusOK, &p)
		if !p.Public || p.Port != 8080 {
			t.Errorf("PATCH answered %+v", p)
		}
		a := pc.send(t, "GET", pc.portPath(8080, "/"), nil).want(t, "public port without auth", http.StatusOK)
		if string(a.raw) != pc.index {
			t.Errorf("got %q", a.raw)
		}
		pc.send(t, "GET", "/", nil, "Host", pc.hostOf(8080)).want(t, "public port without auth (host)", http.StatusOK)
		pc.send(t, "GET", pc.portPath(8081, "/"), nil).wantError(t, "the other port", http.StatusUnauthorized, "unauthenticated")
		var c struct {
			PublicPorts []int `json:"public_ports"`
		}
		st.Team.JSON(t, st, "GET", "/v1/capsules/"+pc.id, nil, http.StatusOK, &c)
		if len(c.PublicPorts) != 1 || c.PublicPorts[0] != 8080 {
			t.Errorf("public_ports = %v, want [8080]", c.PublicPorts)
		}
		st.Team.JSON(t, st, "PATCH", pc.portPath(8080, ""), map[string]any{"public": false}, http.StatusOK, &p)
		pc.send(t, "GET", pc.portPath(8080, "/"), nil).wantError(t, "private again", http.StatusUnauthorized, "unauthenticated")
		st.Team.JSON(t, st, "PATCH", pc.portPath(49983, ""), map[string]any{"public": true}, http.StatusForbidden, nil)
		st.Team.JSON(t, st, "PATCH", pc.portPath(8080, ""), map[string]any{}, http.StatusBadRequest, nil)
		st.NewTeam(t).JSON(t, st, "PATCH", pc.portPath(8080, ""), map[string]any{"public": true}, http.StatusNotFound, nil)
	})

	t.Run("WebSocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		echo := func(t *testing.T, conn *websocket.Conn) {
			defer func() { _ = conn.CloseNow() }()
			for i := range 3 {
				msg := fmt.Sprintf("hello %d", i)
				if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				_, got, err := conn.Read(ctx)
				if err != nil || string(got) != msg {
					t.Fatalf("echo of %q = %q, %v", msg, got, err)
				}
			}
		}
		wsURL := "ws" + strings.TrimPrefix(st.URL, "http") + pc.portPath(8081, "/ws")
		conn, res, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"X-Api-Key": {st.Team.APIKey}}})
		if res != nil && res.Body != nil {
			_ = res.Body.Close()
		}
		if err != nil {
			t.Fatalf("dial %s: %v (%v)", wsURL, err, res)
		}
		echo(t, conn)
		// The host form, with an access URL's token.
		var u struct{ Token string }
		st.Team.JSON(t, st, "POST", pc.portPath(8081, "/url"), nil, http.StatusOK, &u)
		cpAddr := strings.TrimPrefix(st.URL, "http://")
		_, cpPort, _ := net.SplitHostPort(cpAddr)
		client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, cpAddr)
		}}}
		conn, res, err = websocket.Dial(ctx, "ws://"+pc.hostOf(8081)+":"+cpPort+"/ws?wrenn_token="+u.Token, &websocket.DialOptions{HTTPClient: client})
		if res != nil && res.Body != nil {
			_ = res.Body.Close()
		}
		if err != nil {
			t.Fatalf("dial host form: %v (%v)", err, res)
		}
		echo(t, conn)
	})

	t.Run("server-sent events", func(t *testing.T) {
		req, _ := http.NewRequest("GET", st.URL+pc.portPath(8081, "/sse"), nil)
		req.Header.Set("X-API-Key", st.Team.APIKey)
		t0 := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		line, err := bufio.NewReader(res.Body).ReadString('\n')
		first := time.Since(t0)
		if err != nil || line != "data: tick 0\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		// The server sends the last event 400 ms after the first: the first
		// must arrive before that, not when the stream ends.
		if first > 350*time.Millisecond {
			t.Errorf("first event took %s: the proxy buffers", first)
		}
	})

	t.Run("large transfers", func(t *testing.T) {
		const n = 100 << 20
		want := sha256.New()
		if _, err := io.CopyN(want, rand.NewChaCha8([32]byte{7}), n); err != nil {
			t.Fatal(err)
		}
		var peak atomic.Uint64
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			var ms runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		})
		req, _ := http.NewRequest("GET", st.URL+pc.portPath(8081, fmt.Sprintf("/bytes?n=%d&seed=7", n)), nil)
		req.Header.Set("X-API-Key", st.Team.APIKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		copied, err := io.Copy(got, res.Body)
		_ = res.Body.Close()
		close(stop)
		wg.Wait()
		if err != nil || copied != n || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Errorf("download: %d bytes, sha256 %s, %v; want %d bytes, sha256 %s", copied,
				hex.EncodeToString(got.Sum(nil)), err, n, hex.EncodeToString(want.Sum(nil)))
		}
		// The control plane and agent run in this process: neither may
		// hold the download.
		if grew := int64(peak.Load()) - int64(base); grew > 32<<20 {
			t.Errorf("the heap grew by %d MiB during a 100 MiB download: the proxy buffers", grew>>20)
		}

		// A 20 MiB upload, streamed.
		const up = 20 << 20
		a := pc.send(t, "POST", pc.portPath(8081, "/request"), io.LimitReader(rand.NewChaCha8([32]byte{9}), up), key...).
			want(t, "upload", http.StatusOK)
		if a.num("body_bytes") != up {
			t.Errorf("the capsule got %v bytes, want %d", a.body["body_bytes"], up)
		}
	})

	t.Run("refused and missing ports", func(t *testing.T) {
		pc.send(t, "GET", pc.portPath(49983, "/health"), nil, key...).wantError(t, "envd's port", http.StatusForbidden, "forbidden")
		pc.send(t, "GET", "/health", nil, append(key, "Host", pc.hostOf(49983))...).wantError(t, "envd's port (host)", http.StatusForbidden, "forbidden")
		pc.send(t, "GET", pc.portPath(0, "/"), nil, key...).wantError(t, "port 0", http.StatusBadRequest, "invalid_request")
		pc.send(t, "GET", pc.portPath(65536, "/"), nil, key...).wantError(t, "port 65536", http.StatusBadRequest, "invalid_request")
		t0 := time.Now()
		pc.send(t, "GET", pc.portPath(9999, "/"), nil, key...).wantError(t, "nothing listening", http.StatusBadGateway, "port_not_listening")
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("a port nobody listens on took %s to answer", d)
		}
		// The agent refuses envd's port itself, whatever the control
		// plane asks.
		path := hostauth.PortProxyPath(pc.id, "49983") + "/health"
		agentTLS := hosttls.Transport(st.AgentPin, nil, hosttls.HTTP1Only)
		tr := st.Signer.Transport(st.HostID, hostauth.PortProcedure(pc.id), agentTLS)
		req, _ := http.NewRequest("GET", "https://"+st.AgentAddr+path, nil)
		res, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("the agent answered %d to a signed request for port 49983, want 403", res.StatusCode)
		}
		// And unsigned requests.
		res, err = (&http.Client{Transport: agentTLS}).Get("https://" + st.AgentAddr + hostauth.PortProxyPath(pc.id, "8080") + "/")
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("the agent answered %d to an unsigned request, want 401", res.StatusCode)
		}
	})

	t.Run("activity", func(t *testing.T) {
		lastActive := func() time.Time {
			var c struct {
				LastActiveAt time.Time `json:"last_active_at"`
			}
			st.Team.JSON(t, st, "GET", "/v1/capsules/"+pc.id, nil, http.StatusOK, &c)
			return c.LastActiveAt
		}
		before := lastActive()
		// Past the store's and the proxy's throttles (a second).
		time.Sleep(1100 * time.Millisecond)
		pc.send(t, "GET", pc.portPath(8080, "/"), nil, key...).want(t, "request", http.StatusOK)
		deadline := time.Now().Add(5 * time.Second)
		for !lastActive().After(before) {
			if time.Now().After(deadline) {
				t.Fatalf("last_active_at stayed %s after a proxied request", before)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("paused", func(t *testing.T) {
		pc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)
		t0 := time.Now()
		a := pc.send(t, "GET", pc.portPath(8080, "/"), nil, key...)
		a.wantError(t, "paused capsule's port", http.StatusConflict, "capsule_not_running")
		if !strings.Contains(string(a.raw), "paused") || time.Since(t0) > 2*time.Second {
			t.Errorf("paused answer %s after %s", a.raw, time.Since(t0))
		}
		pc.call("POST", "/resume", nil).want(t, "resume", http.StatusOK)
		pc.send(t, "GET", pc.portPath(8080, "/"), nil, key...).want(t, "after resume", http.StatusOK)
	})
}

// TestPortProxyAutoResume: a request to a port of a paused capsule created
// with auto_resume resumes it and is answered.
func TestPortProxyAutoResume(t *testing.T) {
	st := stacktest.Start(t)
	var c struct {
		ID         string `json:"id"`
		AutoResume bool   `json:"auto_resume"`
		PublicPort []int  `json:"public_ports"`
	}
	st.Team.JSON(t, st, "POST", "/v1/capsules", map[string]any{
		"template": "minimal", "auto_resume": true, "ports": []map[string]any{{"port": 8080, "public": true}, {"port": 8081}},
	}, http.StatusCreated, &c)
	if !c.AutoResume || len(c.PublicPort) != 1 || c.PublicPort[0] != 8080 {
		t.Fatalf("created %+v, want auto_resume and public_ports [8080]", c)
	}
	cc := &capsuleClient{t: t, st: st, tm: st.Team, id: c.ID}
	pc := startPortServers(t, cc)
	cc.call("POST", "/pause", nil).want(t, "pause", http.StatusOK)
	// A public port: no credentials, and the capsule resumes.
	a := pc.send(t, "GET", pc.portPath(8080, "/"), nil).want(t, "port of a paused auto_resume capsule", http.StatusOK)
	if string(a.raw) != pc.index {
		t.Errorf("got %q", a.raw)
	}
	cc.call("GET", "", nil).want(t, "get", http.StatusOK)
	if s := cc.call("GET", "", nil).str("status"); s != "running" {
		t.Errorf("capsule is %s after the request, want running", s)
	}
	for _, bad := range []map[string]any{
		{"template": "minimal", "ports": []map[string]any{{"port": 49983, "public": true}}},
		{"template": "minimal", "ports": []map[string]any{{"port": 0}}},
		{"template": "minimal", "ports": "8080"},
	} {
		st.Team.JSON(t, st, "POST", "/v1/capsules", bad, http.StatusBadRequest, nil)
	}
}
