package agent

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// envdProxy forwards /capsules/{id}/envd/... to that capsule's envd. The
// control plane proves each request with a token bound to this host and to
// the capsule (hostauth.EnvdProcedure); the proxy swaps it for the capsule's
// envd access token, which thus never leaves the host. Connect RPCs arrive
// over h2c and go on over h2c (client streaming needs HTTP/2); file transfers
// arrive and go on over HTTP/1.1, which moves large bodies faster.
type envdProxy struct {
	caps     *Capsules
	verifier *hostauth.Verifier
	h1, h2   *http.Transport
}

func newEnvdProxy(caps *Capsules, verifier *hostauth.Verifier) *envdProxy {
	conns := &envdConns{
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		byHost: map[string]map[*envdConn]struct{}{},
	}
	h2 := &http.Transport{DialContext: conns.DialContext, Protocols: new(http.Protocols), IdleConnTimeout: 90 * time.Second,
		// A paused capsule's connections end without a word from its
		// side; pings find them dead instead of waiting on them.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second},
		// Answers pass through as envd sent them: the transport must not
		// ask for gzip and inflate a capsule's answer on the host.
		DisableCompression: true}
	h2.Protocols.SetUnencryptedHTTP2(true)
	h1 := &http.Transport{
		DialContext:         conns.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
		DisableCompression:  true,
	}
	p := &envdProxy{caps: caps, verifier: verifier, h1: h1, h2: h2}
	if caps != nil {
		// Connections kept open to a sandbox that a pause stopped would
		// fail the first calls after the resume, which comes back at the
		// same address. CloseIdleConnections is not enough: an HTTP/2
		// connection that still carries a stream (a terminal left open
		// across the pause) is not idle, and new calls would share it.
		caps.onSandboxStop(conns.closeHost)
	}
	return p
}

// envdConns dials envds and remembers the open connections to each
// address, so that those of a sandbox that stopped can all be closed.
type envdConns struct {
	dialer net.Dialer
	mu     sync.Mutex
	byHost map[string]map[*envdConn]struct{}
}

// envdConn is a connection that leaves its envdConns when closed.
type envdConn struct {
	net.Conn
	owner *envdConns
	host  string
	once  sync.Once
}

func (c *envdConn) Close() error {
	c.once.Do(func() { c.owner.forget(c) })
	return c.Conn.Close()
}

func (e *envdConns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := e.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	c := &envdConn{Conn: conn, owner: e, host: host}
	e.mu.Lock()
	if e.byHost[host] == nil {
		e.byHost[host] = map[*envdConn]struct{}{}
	}
	e.byHost[host][c] = struct{}{}
	e.mu.Unlock()
	return c, nil
}

func (e *envdConns) forget(c *envdConn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.byHost[c.host], c)
	if len(e.byHost[c.host]) == 0 {
		delete(e.byHost, c.host)
	}
}

// closeHost closes every connection to the envd at address host, busy or
// idle; the transports drop them from their pools when they see them fail.
func (e *envdConns) closeHost(host string) {
	e.mu.Lock()
	open := make([]*envdConn, 0, len(e.byHost[host]))
	for c := range e.byHost[host] {
		open = append(open, c)
	}
	e.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// proxyError answers in the shape Connect clients read ({"code","message"}),
// which plain HTTP callers can read too.
func proxyError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set(hostauth.ProxyErrorHeader, "1")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": msg})
}

// runningTarget returns the address and envd token of running capsule id
// for the proxies; otherwise it answers with fail (404 for a capsule this
// agent does not have, 409 for one that is not running) and reports false.
func runningTarget(w http.ResponseWriter, caps *Capsules, id string, fail func(http.ResponseWriter, int, string, string)) (addr, token string, ok bool) {
	addr, token, err := caps.envdTarget(id)
	switch {
	case errors.Is(err, errCapsuleNotFound):
		fail(w, http.StatusNotFound, "not_found", err.Error())
		return "", "", false
	case err != nil:
		fail(w, http.StatusConflict, "failed_precondition", err.Error())
		return "", "", false
	}
	return addr, token, true
}

func (p *envdProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if p.caps == nil {
		proxyError(w, http.StatusServiceUnavailable, "unavailable", "this agent runs no capsules")
		return
	}
	// The token names the capsule and is bound to this request line.
	if err := p.verifier.Verify(r.Header, hostauth.EnvdProcedure(id), hostauth.RequestDigest(r.Method, r.RequestURI)); err != nil {
		proxyError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
		return
	}
	addr, token, ok := runningTarget(w, p.caps, id, proxyError)
	if !ok {
		return
	}
	transport := p.h1
	if r.ProtoMajor == 2 {
		transport = p.h2
	}
	prefix := hostauth.EnvdProxyPath(id)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = net.JoinHostPort(addr, strconv.Itoa(runtime.EnvdPort))
			pr.Out.URL.Path = strings.TrimPrefix(pr.In.URL.Path, prefix)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = ""
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Set(envdclient.TokenHeader, token)
		},
		Transport: transport,
		// Process output and watch events are streams: pass every write
		// on at once.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			proxyError(w, http.StatusBadGateway, "unavailable", "capsule's envd did not answer: "+err.Error())
		},
	}
	rp.ServeHTTP(w, r)
}
