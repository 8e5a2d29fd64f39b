package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// This file is the port proxy: every TCP port a capsule listens on, but
// envd's, is reachable through the control plane, at
// {port}-{capsule id}.{WRENN_PROXY_DOMAIN} (Host-header routing) and at
// /v1/capsules/{id}/ports/{port}/… on the API's own origin. A request goes
// control plane → the capsule's agent (signed per request, like the envd
// proxy; the agent checks again and refuses envd's port) → the capsule's
// address and port, streamed both ways.

// Query parameter and cookie of signed access URLs (see portTokens).
const (
	portTokenParam  = "wrenn_token"
	portTokenCookie = "wrenn_port_token"
)

// autoResumeWait bounds how long a request waits for a capsule that
// another request is resuming.
const autoResumeWait = 2 * time.Minute

// pathFormSandbox is the Content-Security-Policy of every answer of the
// path form. The capsule's pages are served on the API's own origin; the
// sandbox (without allow-same-origin) gives them an opaque origin, so that
// their scripts can neither read the dashboard's cookies nor call the API
// with the visitor's session.
const pathFormSandbox = "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals allow-downloads"

// portForm says how a request named its port.
type portForm int

const (
	pathForm portForm = iota // /v1/capsules/{id}/ports/{port}/…
	hostForm                 // {port}-{id}.{WRENN_PROXY_DOMAIN}
)

// parsePort returns the port of a path value: 1-65535, without sign or
// leading zeros; anything else is a 400.
func parsePort(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != v {
		return 0, errorf(codeInvalid, "port must be a number from 1 to 65535, not %q", v)
	}
	return n, nil
}

// proxiedPort returns the port of {port}, refusing envd's.
func proxiedPort(v string) (int, error) {
	port, err := parsePort(v)
	if err != nil {
		return 0, err
	}
	if port == runtime.EnvdPort {
		return 0, errorf(codeForbidden, "port %d is envd's, the capsule's guest agent, and is never proxied", port)
	}
	return port, nil
}

// proxyHost returns the capsule id and port a Host header names in the
// host form, or ok false when it is not one (or no proxy domain is set).
func (s *server) proxyHost(host string) (id, port string, ok bool) {
	if s.proxyDomain == "" {
		return "", "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	label, ok := strings.CutSuffix(strings.ToLower(host), "."+s.proxyDomain)
	if !ok {
		return "", "", false
	}
	port, id, ok = strings.Cut(label, "-")
	return id, port, ok && !strings.Contains(id, ".")
}

// hostRouting sends the requests whose Host names a capsule's port to the
// port proxy, everything else to next.
func (s *server) hostRouting(next http.Handler) http.Handler {
	if s.proxyDomain == "" {
		return next
	}
	proxy := s.instrument("port proxy (host)", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		id, port, _ := s.proxyHost(r.Host)
		return s.servePort(w, r, id, port, hostForm)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := s.proxyHost(r.Host); ok {
			proxy.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// handlePortProxy serves the path form.
func (s *server) handlePortProxy() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return s.servePort(w, r, r.PathValue("id"), r.PathValue("port"), pathForm)
	})
}

// handlePortRedirect sends GET /v1/capsules/{id}/ports/{port} to the same
// path with a slash, where the capsule's root is, so that the relative
// links of its pages resolve under the prefix.
func (s *server) handlePortRedirect() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := *r.URL
		u.Path += "/"
		u.RawPath = ""
		http.Redirect(w, r, u.RequestURI(), http.StatusPermanentRedirect)
	})
}

// servePort checks who may reach port portArg of capsule rawID, makes sure
// the capsule runs (resuming it when it asked for that) and proxies the
// request to it through its agent.
func (s *server) servePort(w http.ResponseWriter, r *http.Request, rawID, portArg string, form portForm) error {
	notFound := errorf(codeCapsuleNotFound, "no capsule with id %q", rawID)
	uid, err := uuid.Parse(rawID)
	if err != nil {
		return notFound
	}
	port, err := proxiedPort(portArg)
	if err != nil {
		return err
	}
	id := uid.String()
	c, err := s.store.CapsuleByID(r.Context(), id)
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	// Who may: anyone on a public port, the holder of an access token for
	// this port, or a member of the capsule's team (with the exec scope
	// for an API key). Before the caller is known, an unknown capsule and
	// a foreign one look alike.
	strip := ""
	var grant *portGrant
	switch {
	case found && slices.Contains(c.PublicPorts, port):
	default:
		grant, err = s.portTokens.fromRequest(r, id, port)
		if err != nil {
			return err
		}
		if grant != nil {
			break
		}
		p, by, err := s.requestPrincipal(r)
		if err != nil {
			return err
		}
		if !found || p.TeamID != c.TeamID {
			return notFound
		}
		if !p.has(auth.ScopeExec) {
			return errorf(codeForbidden, "this API key lacks the %s scope, which reaching a capsule's ports needs", auth.ScopeExec)
		}
		strip = by
	}
	if !found {
		return notFound
	}
	c, err = s.portCapsuleRunning(r, c)
	if err != nil {
		return err
	}
	h, err := s.portHost(r.Context(), c)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(r.Context())
	defer stop()
	go s.keepPortActive(ctx, c)
	s.proxyToPort(w, r.WithContext(ctx), c, h, port, form, strip, grant)
	return nil
}

// portCapsuleRunning returns c once it runs: at once when it does, after a
// resume when it is paused and was created with auto_resume, or a clear
// error (never a wait on a capsule nobody resumes).
func (s *server) portCapsuleRunning(r *http.Request, c store.Capsule) (store.Capsule, error) {
	deadline := time.Now().Add(autoResumeWait)
	for {
		switch {
		case c.Status == store.CapsuleRunning:
			return c, nil
		case c.Status == store.CapsulePaused && c.AutoResume:
			ev := store.Event{TeamID: c.TeamID, ActorType: store.ActorSystem, Action: "capsule.resume",
				Metadata: map[string]any{"reason": "auto_resume", "via": "port_proxy"}, IP: s.clientIP(r)}
			rc, err := s.capsules.Resume(r.Context(), c, ev)
			if err == nil {
				return rc, nil
			}
			c = rc // another request resumes it: wait below
			if c.Status == store.CapsulePaused {
				return c, err
			}
		case c.Status == store.CapsuleResuming && c.AutoResume:
		case c.Status == store.CapsulePaused:
			return c, &Error{Code: codeCapsuleNotRunning, Status: c.Status,
				Message: fmt.Sprintf("capsule %s is paused: resume it (POST /v1/capsules/%s/resume) to reach its ports, or create it with auto_resume: true", c.ID, c.ID)}
		case c.Status == store.CapsuleStarting || c.Status == store.CapsulePausing || c.Status == store.CapsuleResuming:
			return c, &Error{Code: codeUnavailable, Status: c.Status,
				Message: fmt.Sprintf("capsule %s is %s; try again in a moment", c.ID, c.Status)}
		default:
			return c, &Error{Code: codeCapsuleNotRunning, Status: c.Status,
				Message: fmt.Sprintf("capsule %s is %s, not running", c.ID, c.Status)}
		}
		if time.Now().After(deadline) {
			return c, &Error{Code: codeUnavailable, Status: c.Status,
				Message: fmt.Sprintf("capsule %s is still %s; try again in a moment", c.ID, c.Status)}
		}
		select {
		case <-r.Context().Done():
			return c, r.Context().Err()
		case <-time.After(100 * time.Millisecond):
		}
		var err error
		if c, err = s.store.CapsuleByID(r.Context(), c.ID); err != nil {
			return c, err
		}
	}
}

// portHost returns capsule c's host, from a short-lived cache: every
// proxied request needs it, and it changes only when an agent registers
// anew.
func (s *server) portHost(ctx context.Context, c store.Capsule) (store.Host, error) {
	if c.HostID == "" {
		return store.Host{}, errorf(codeCapsuleUnreachable, "capsule %s has no host any more", c.ID)
	}
	if h, ok := s.portHosts.get(c.HostID, time.Now()); ok {
		return h, nil
	}
	h, err := s.store.Host(ctx, c.HostID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Host{}, errorf(codeCapsuleUnreachable, "capsule %s has no host any more", c.ID)
	}
	if err != nil {
		return store.Host{}, err
	}
	s.portHosts.put(h, time.Now())
	return h, nil
}

// hostCache keeps hosts for hostAddressTTL. It is safe for concurrent use.
type hostCache struct {
	mu sync.Mutex
	m  map[string]hostEntry
}

type hostEntry struct {
	host store.Host
	read time.Time
}

func (hc *hostCache) get(id string, now time.Time) (store.Host, bool) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	e, ok := hc.m[id]
	if !ok || now.Sub(e.read) > hostAddressTTL {
		return store.Host{}, false
	}
	return e.host, true
}

func (hc *hostCache) put(h store.Host, now time.Time) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.m == nil || len(hc.m) > 4096 {
		hc.m = map[string]hostEntry{}
	}
	hc.m[h.ID] = hostEntry{host: h, read: now}
}

// forget drops host id, whose address has just changed.
func (hc *hostCache) forget(id string) {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	delete(hc.m, id)
}

// portProxyError is the agent's own answer about a port, carried from
// ModifyResponse to the ErrorHandler.
type portProxyError struct {
	status int
	code   string
}

func (e *portProxyError) Error() string { return "agent's port proxy answered " + e.code }

// wrennCookies are the cookies of the control plane: they never go on to a
// capsule, and a capsule's answer may not set them.
func isWrennCookie(name string) bool {
	return strings.HasPrefix(strings.ToLower(name), "wrenn_")
}

// proxyToPort forwards r to port of capsule c on host h. strip names the
// credential the caller proved itself with (requestPrincipal), which is
// removed; grant is the access token it used, if any.
func (s *server) proxyToPort(w http.ResponseWriter, r *http.Request, c store.Capsule, h store.Host, port int, form portForm, strip string, grant *portGrant) {
	portStr := strconv.Itoa(port)
	agentPrefix := hostauth.PortProxyPath(c.ID, portStr)
	apiPrefix := "/v1/capsules/" + r.PathValue("id") + "/ports/" + r.PathValue("port")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			in := pr.In
			rest, rawRest := in.URL.Path, in.URL.RawPath
			if form == pathForm {
				rest = strings.TrimPrefix(rest, apiPrefix)
				rawRest = strings.TrimPrefix(rawRest, apiPrefix)
			}
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = h.Address
			pr.Out.URL.Path = agentPrefix + ensureSlash(rest)
			pr.Out.URL.RawPath = ""
			if in.URL.RawPath != "" {
				pr.Out.URL.RawPath = agentPrefix + ensureSlash(rawRest)
			}
			if grant != nil && grant.fromQuery {
				q := pr.Out.URL.Query()
				q.Del(portTokenParam)
				pr.Out.URL.RawQuery = q.Encode()
			}
			// The Host the client used goes on (the agent keeps it), so
			// that the capsule's server can build its own links.
			pr.Out.Host = in.Host
			pr.SetXForwarded()
			if s.secureRequest(in) {
				pr.Out.Header.Set("X-Forwarded-Proto", "https")
			}
			if form == pathForm {
				pr.Out.Header.Set("X-Forwarded-Prefix", apiPrefix)
			}
			switch strip {
			case byAPIKeyHeader:
				pr.Out.Header.Del("X-API-Key")
			case byBearer:
				pr.Out.Header.Del("Authorization")
			}
			pr.Out.Header.Del(csrfHeader)
			dropWrennCookies(pr.Out)
		},
		Transport: s.signer.Transport(h.ID, hostauth.PortProcedure(c.ID), s.portTransports.forHost(h)),
		// Server-sent events, long downloads: every write goes on at once.
		FlushInterval: -1,
		ModifyResponse: func(res *http.Response) error {
			if code := res.Header.Get(hostauth.PortProxyErrorHeader); code != "" {
				return &portProxyError{status: res.StatusCode, code: code}
			}
			// A capsule's answer may not set (or clear) the control
			// plane's cookies.
			if cookies := res.Header.Values("Set-Cookie"); len(cookies) > 0 {
				res.Header.Del("Set-Cookie")
				for _, sc := range cookies {
					if ck, err := http.ParseSetCookie(sc); err == nil && isWrennCookie(ck.Name) {
						continue
					}
					res.Header.Add("Set-Cookie", sc)
				}
			}
			if form == pathForm {
				res.Header.Set("Content-Security-Policy", pathFormSandbox)
			}
			if grant != nil && grant.fromQuery {
				// The page's own links and assets carry no token: the
				// cookie does, for this port only.
				cookiePath := "/"
				if form == pathForm {
					cookiePath = apiPrefix + "/"
				}
				// Over TLS the cookie is SameSite=None, so that the
				// requests of a path-form page (whose sandbox makes them
				// cross-site) carry it too; without TLS browsers take no
				// such cookie, and Lax serves the host form.
				secure, sameSite := s.secureRequest(r), http.SameSiteLaxMode
				if secure {
					sameSite = http.SameSiteNoneMode
				}
				res.Header.Add("Set-Cookie", (&http.Cookie{
					Name: portTokenCookie, Value: grant.token, Path: cookiePath, Expires: grant.expires,
					HttpOnly: true, Secure: secure, SameSite: sameSite,
				}).String())
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if req.Context().Err() != nil {
				return // the caller went away
			}
			var pe *portProxyError
			switch {
			case errors.As(err, &pe) && pe.code == "unavailable" && pe.status == http.StatusBadGateway:
				s.writeError(w, req, errorf(codePortNotListening, "nothing in capsule %s answers on port %d: start a server listening on it (on 0.0.0.0 or the capsule's address)", c.ID, port))
			case errors.As(err, &pe) && pe.code == "failed_precondition":
				s.writeError(w, req, &Error{Code: codeCapsuleNotRunning, Status: c.Status, Message: fmt.Sprintf("capsule %s is not running on its host", c.ID)})
			case errors.As(err, &pe) && pe.code == "not_found":
				s.writeError(w, req, errorf(codeCapsuleUnreachable, "capsule %s is not on its host", c.ID))
			default:
				s.log.WarnContext(req.Context(), "proxying to a capsule's port", "capsule_id", c.ID, "host_id", h.ID, "port", port, "err", err)
				s.writeError(w, req, errorf(codeCapsuleUnreachable, "capsule %s's host did not answer; try again, or check its host", c.ID))
			}
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

// dropWrennCookies removes the control plane's cookies from r's Cookie
// header: a capsule never sees a session or access token.
func dropWrennCookies(r *http.Request) {
	cookies := r.Cookies()
	if len(cookies) == 0 {
		return
	}
	r.Header.Del("Cookie")
	for _, ck := range cookies {
		if !isWrennCookie(ck.Name) {
			r.AddCookie(ck)
		}
	}
}

// portTransports keeps the transports of proxied requests to agents, one
// per pinned agent key (internal/hosttls), as agentLinks does for RPCs:
// HTTP/1.1 over TLS to that key only (Upgrade needs HTTP/1.1; HTTP/2
// clients are served by the control plane and carried on over HTTP/1.1),
// connections kept for reuse, every dial checked against the agent address
// policy, bodies as they are. It is safe for concurrent use.
type portTransports struct {
	dialer *net.Dialer
	mu     sync.Mutex
	m      map[string]*http.Transport // by pin
}

func newPortTransports(d *net.Dialer) *portTransports {
	return &portTransports{dialer: d, m: map[string]*http.Transport{}}
}

// forHost returns the transport to host h's agent.
func (p *portTransports) forHost(h store.Host) http.RoundTripper {
	if h.TLSPin == "" {
		return failingTransport{errNoPin}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.m[h.TLSPin]; t != nil {
		return t
	}
	t := hosttls.Transport(h.TLSPin, p.dialer.DialContext, hosttls.HTTP1Only)
	t.MaxIdleConnsPerHost = 64
	t.WriteBufferSize = 64 << 10
	t.ReadBufferSize = 64 << 10
	p.m[h.TLSPin] = t
	return t
}

// portURLs returns the URLs of port of capsule id in the host form (""
// without a proxy domain) and in the path form, as a client that sent r
// reaches them.
func (s *server) portURLs(r *http.Request, id string, port int) (hostURL, pathURL string) {
	scheme := "http"
	if s.secureRequest(r) {
		scheme = "https"
	}
	host := r.Host
	if s.fromTrustedProxy(r) {
		if fh := lastForwarded(r, "X-Forwarded-Host"); fh != "" {
			host = fh
		}
	}
	pathURL = (&url.URL{Scheme: scheme, Host: host, Path: fmt.Sprintf("/v1/capsules/%s/ports/%d/", id, port)}).String()
	if s.cfg.ProxyDomain != "" {
		hostURL = (&url.URL{Scheme: scheme, Host: fmt.Sprintf("%d-%s.%s", port, id, s.cfg.ProxyDomain), Path: "/"}).String()
	}
	return hostURL, pathURL
}
