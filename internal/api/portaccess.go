package api

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// Lifetimes of signed access URLs.
const (
	defaultPortTokenTTL = time.Hour
	maxPortTokenTTL     = 7 * 24 * time.Hour
)

// portTokenAudience keeps access tokens apart from every other token signed
// with a key derived from the JWT secret.
const portTokenAudience = "wrenn-port"

// portTokens mints and checks the tokens of signed access URLs: HS256 JWTs
// naming one capsule and one port, with an expiry, under a key derived
// from WRENN_JWT_SECRET (so every replica checks alike and a session token
// is never an access token). They cannot be revoked one by one: they end
// with their expiry, with the capsule, or when the secret changes.
type portTokens struct {
	key    []byte
	parser *jwt.Parser
}

func newPortTokens(secret []byte) *portTokens {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("wrenn port access token v1"))
	return &portTokens{
		key: mac.Sum(nil),
		parser: jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithAudience(portTokenAudience), jwt.WithExpirationRequired()),
	}
}

type portClaims struct {
	jwt.RegisteredClaims
	Port int `json:"port"`
}

// mint returns a token for port of capsule id valid until expires.
func (pt *portTokens) mint(id string, port int, expires time.Time) (string, error) {
	c := portClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: id, Audience: jwt.ClaimStrings{portTokenAudience},
			IssuedAt: jwt.NewNumericDate(time.Now()), ExpiresAt: jwt.NewNumericDate(expires),
		},
		Port: port,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(pt.key)
}

// portGrant is an access token a request carried, checked.
type portGrant struct {
	token     string
	expires   time.Time
	fromQuery bool // in the URL (else in the cookie)
}

// fromRequest returns the grant of the access token r carries for port of
// capsule id: in the wrenn_token parameter, else in the wrenn_port_token
// cookie; nil when it carries none that fits. A token in the URL that is
// expired or not valid is a 401 that says so; a cookie that is (an old
// one, or one of another port on the same host) is ignored.
func (pt *portTokens) fromRequest(r *http.Request, id string, port int) (*portGrant, error) {
	if tok := r.URL.Query().Get(portTokenParam); tok != "" {
		exp, err := pt.check(tok, id, port)
		if err != nil {
			return nil, err
		}
		return &portGrant{token: tok, expires: exp, fromQuery: true}, nil
	}
	for _, ck := range r.Cookies() {
		if ck.Name != portTokenCookie {
			continue
		}
		if exp, err := pt.check(ck.Value, id, port); err == nil {
			return &portGrant{token: ck.Value, expires: exp}, nil
		}
	}
	return nil, nil
}

// check returns the expiry of tok when it is valid for port of capsule id.
func (pt *portTokens) check(tok, id string, port int) (time.Time, error) {
	var c portClaims
	_, err := pt.parser.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return pt.key, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return time.Time{}, errorf(codeUnauthenticated, "this access URL has expired; ask for a new one (POST /v1/capsules/{id}/ports/{port}/url)")
	case err != nil, c.Subject != id, c.Port != port:
		return time.Time{}, errorf(codeUnauthenticated, "the %s parameter is not an access token for this port", portTokenParam)
	}
	return c.ExpiresAt.Time, nil
}

// portActivity throttles the activity a port's traffic records: a busy
// web server would otherwise write a row per request. It is safe for
// concurrent use.
type portActivity struct {
	mu   sync.Mutex
	last map[string]time.Time // by capsule id
}

// due reports whether capsule id should be touched now, given how often
// (every): and if so, counts it as touched.
func (pa *portActivity) due(id string, every time.Duration, now time.Time) bool {
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if pa.last == nil || len(pa.last) > 65536 {
		pa.last = map[string]time.Time{}
	}
	if now.Sub(pa.last[id]) < every {
		return false
	}
	pa.last[id] = now
	return true
}

// keepPortActive records the activity of a proxied request to c as long
// as ctx lasts: at the start (unless a request touched it a moment ago) and
// then every activeEveryFor its timeout, as long-lived connections
// (WebSockets, event streams, downloads) are use too.
func (s *server) keepPortActive(ctx context.Context, c store.Capsule) {
	every := activeEveryFor(c.TimeoutSec)
	throttle := min(every, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if s.portActive.due(c.ID, throttle, time.Now()) {
			if err := s.store.TouchCapsule(context.WithoutCancel(ctx), c.ID); err != nil {
				s.log.WarnContext(ctx, "recording capsule activity", "capsule_id", c.ID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// portJSON is one port of a capsule as the API shows it.
type portJSON struct {
	Port      int      `json:"port"`
	Public    bool     `json:"public"`
	Listening bool     `json:"listening"`
	Addresses []string `json:"addresses"`
	// URL is the host form (when WRENN_PROXY_DOMAIN is set), else the path
	// form; PathURL always the path form.
	URL     string `json:"url"`
	PathURL string `json:"path_url"`
}

func (s *server) portJSON(r *http.Request, c store.Capsule, port int, listening bool, addrs []string) portJSON {
	hostURL, pathURL := s.portURLs(r, c.ID, port)
	u := hostURL
	if u == "" {
		u = pathURL
	}
	if addrs == nil {
		addrs = []string{}
	}
	return portJSON{Port: port, Public: slices.Contains(c.PublicPorts, port), Listening: listening,
		Addresses: addrs, URL: u, PathURL: pathURL}
}

// handleListPorts serves GET /v1/capsules/{id}/ports: the ports something
// in the capsule listens on (envd's excluded), and the public ports that
// nothing listens on now. Listing is not activity.
func (s *server) handleListPorts() http.Handler {
	type response struct {
		Ports []portJSON `json:"ports"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		ps, err := ec.Ports(ctx)
		if err != nil {
			return s.envdError(r.Context(), c, processErrors, err)
		}
		out := response{Ports: []portJSON{}}
		seen := map[int]bool{}
		for _, p := range ps.Ports {
			if p.Port == runtime.EnvdPort || p.Port < 1 || p.Port > 65535 || seen[p.Port] {
				continue
			}
			seen[p.Port] = true
			out.Ports = append(out.Ports, s.portJSON(r, c, p.Port, true, p.Addresses))
		}
		for _, p := range c.PublicPorts {
			if !seen[p] {
				out.Ports = append(out.Ports, s.portJSON(r, c, p, false, nil))
			}
		}
		slices.SortFunc(out.Ports, func(a, b portJSON) int { return a.Port - b.Port })
		encode(w, http.StatusOK, out)
		return nil
	})
}

// handleUpdatePort serves PATCH /v1/capsules/{id}/ports/{port}:
// {"public": true|false}.
func (s *server) handleUpdatePort() http.Handler {
	type request struct {
		Public *bool `json:"public"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		port, err := proxiedPort(r.PathValue("port"))
		if err != nil {
			return err
		}
		req, err := decode[request](w, r, 4<<10)
		if err != nil {
			return err
		}
		if req.Public == nil {
			return errorf(codeInvalid, "public is required: true serves the port to anyone without credentials, false only to the team")
		}
		ev := s.event(r, caller(r), "capsule.port.update", map[string]any{"port": port, "public": *req.Public})
		c, err = s.store.SetPortPublic(r.Context(), caller(r).TeamID, c.ID, port, *req.Public, ev)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeCapsuleNotFound, "no capsule with id %q", r.PathValue("id"))
		}
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, s.portJSON(r, c, port, false, nil))
		return nil
	})
}

// handlePortURL serves POST /v1/capsules/{id}/ports/{port}/url: a signed
// URL of the port that anyone holding it may use until it expires
// ({"expires_in_sec": 3600} by default; at most 7 days).
func (s *server) handlePortURL() http.Handler {
	type request struct {
		ExpiresInSec *int `json:"expires_in_sec"`
	}
	type response struct {
		URL       string    `json:"url"`
		PathURL   string    `json:"path_url"`
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		port, err := proxiedPort(r.PathValue("port"))
		if err != nil {
			return err
		}
		var req request
		if r.ContentLength != 0 {
			if req, err = decode[request](w, r, 4<<10); err != nil {
				return err
			}
		}
		ttl := defaultPortTokenTTL
		if req.ExpiresInSec != nil {
			if *req.ExpiresInSec < 1 || time.Duration(*req.ExpiresInSec)*time.Second > maxPortTokenTTL {
				return errorf(codeInvalid, "expires_in_sec must be from 1 to %d (7 days), not %d", int(maxPortTokenTTL.Seconds()), *req.ExpiresInSec)
			}
			ttl = time.Duration(*req.ExpiresInSec) * time.Second
		}
		exp := time.Now().Add(ttl).Truncate(time.Second)
		tok, err := s.portTokens.mint(c.ID, port, exp)
		if err != nil {
			return err
		}
		s.used(r, c, "capsule.port.share", map[string]any{"port": port, "expires_at": exp})
		hostURL, pathURL := s.portURLs(r, c.ID, port)
		q := "?" + portTokenParam + "=" + tok
		out := response{PathURL: pathURL + q, Token: tok, ExpiresAt: exp.UTC()}
		out.URL = out.PathURL
		if hostURL != "" {
			out.URL = hostURL + q
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

// checkPublicPorts checks the ports of a create request and returns them
// as numbers.
func checkPublicPorts(ports []createPort) ([]int, error) {
	if len(ports) > 64 {
		return nil, errorf(codeInvalid, "ports: at most 64 entries, not %d", len(ports))
	}
	var out []int
	for i, p := range ports {
		if p.Port < 1 || p.Port > 65535 {
			return nil, errorf(codeInvalid, "ports[%d].port must be from 1 to 65535, not %d", i, p.Port)
		}
		if p.Port == runtime.EnvdPort {
			return nil, errorf(codeInvalid, "ports[%d].port: %d is envd's and is never proxied", i, p.Port)
		}
		if p.Public {
			out = append(out, p.Port)
		}
	}
	return out, nil
}

// createPort is one entry of a create request's ports.
type createPort struct {
	Port   int  `json:"port"`
	Public bool `json:"public"`
}
