package agent

import (
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// portProxy forwards /capsules/{id}/ports/{port}/... to that port at the
// capsule's address: the last hop of the control plane's port proxy. The
// control plane proves each request with a token bound to this host, the
// capsule and the request line (hostauth.PortProcedure); the proxy checks
// again that the capsule runs here and refuses envd's port, whatever the
// control plane asked. Bodies stream both ways without buffering, and
// Upgrade requests (WebSockets) become a relayed connection.
type portProxy struct {
	caps      *Capsules
	verifier  *hostauth.Verifier
	transport *http.Transport
}

func newPortProxy(caps *Capsules, verifier *hostauth.Verifier) *portProxy {
	conns := &envdConns{
		// A port nobody listens on refuses at once; a capsule that does
		// not answer at all is given a few seconds.
		dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		byHost: map[string]map[*envdConn]struct{}{},
	}
	t := &http.Transport{
		DialContext:         conns.DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
		// Answers pass through as the capsule's server sent them.
		DisableCompression: true,
	}
	if caps != nil {
		// A paused or destroyed capsule's connections end without a word
		// from its side: close them, so that no request waits on them.
		caps.onSandboxStop(conns.closeHost)
	}
	return &portProxy{caps: caps, verifier: verifier, transport: t}
}

// portError answers in the JSON shape of proxyError and names the code in
// PortProxyErrorHeader.
func portError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set(hostauth.PortProxyErrorHeader, code)
	proxyError(w, status, code, msg)
}

// parsePort returns the port of a path value: 1-65535, without sign or
// leading zeros.
func parsePort(v string) (int, bool) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != v {
		return 0, false
	}
	return n, true
}

func (p *portProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, rawPort := r.PathValue("id"), r.PathValue("port")
	if p.caps == nil {
		portError(w, http.StatusServiceUnavailable, "unavailable", "this agent runs no capsules")
		return
	}
	if err := p.verifier.Verify(r.Header, hostauth.PortProcedure(id), hostauth.RequestDigest(r.Method, r.RequestURI)); err != nil {
		portError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
		return
	}
	port, ok := parsePort(rawPort)
	switch {
	case !ok:
		portError(w, http.StatusBadRequest, "invalid_argument", "port must be a number from 1 to 65535")
		return
	case port == runtime.EnvdPort:
		portError(w, http.StatusForbidden, "permission_denied", "port 49983 is envd's and is never proxied")
		return
	}
	addr, _, ok := runningTarget(w, p.caps, id, portError)
	if !ok {
		return
	}
	prefix := hostauth.PortProxyPath(id, rawPort)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = net.JoinHostPort(addr, strconv.Itoa(port))
			pr.Out.URL.Path = ensureSlash(strings.TrimPrefix(pr.In.URL.Path, prefix))
			if pr.In.URL.RawPath != "" {
				pr.Out.URL.RawPath = ensureSlash(strings.TrimPrefix(pr.In.URL.RawPath, prefix))
			}
			// The Host the client used (the control plane passes it on)
			// stays, so that the capsule's server can build its own URLs;
			// the control plane's token goes no further.
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Del("Authorization")
			// ReverseProxy drops forwarding headers before Rewrite; those
			// of the control plane, which signed this request, describe
			// the client and go on.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v := pr.In.Header.Values(h); len(v) > 0 {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport: p.transport,
		// Server-sent events and long downloads: every write goes on at
		// once.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the caller went away; nobody reads an answer
			}
			portError(w, http.StatusBadGateway, "unavailable",
				"nothing answered on port "+rawPort+" in the capsule: "+err.Error())
		},
	}
	rp.ServeHTTP(w, r)
}

// ensureSlash makes p absolute ("" is "/").
func ensureSlash(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}
