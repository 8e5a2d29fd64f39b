package api

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// The dashboard's cookies. The session cookie holds the session token and
// is out of reach of scripts; the CSRF cookie holds the token a page must
// echo in csrfHeader on every unsafe request it makes with the session
// cookie, which a page of another origin cannot read.
const (
	sessionCookie = "wrenn_session"
	csrfCookie    = "wrenn_csrf"
	csrfHeader    = "X-CSRF-Token"
)

// hasCookie reports whether the request carries a non-empty cookie name.
func hasCookie(r *http.Request, name string) bool {
	c, err := r.Cookie(name)
	return err == nil && c.Value != ""
}

// secureRequest reports whether the client reached us over TLS: directly,
// or through a trusted proxy that says so in X-Forwarded-Proto.
func (s *server) secureRequest(r *http.Request) bool {
	if s.cfg.CookieSecure || r.TLS != nil {
		return true
	}
	return s.fromTrustedProxy(r) && strings.EqualFold(lastForwarded(r, "X-Forwarded-Proto"), "https")
}

// lastForwarded returns the last entry of a comma-separated forwarding
// header: the one the proxy in front of us set.
func lastForwarded(r *http.Request, header string) string {
	vs := r.Header.Values(header)
	if len(vs) == 0 {
		return ""
	}
	entries := strings.Split(vs[len(vs)-1], ",")
	return strings.TrimSpace(entries[len(entries)-1])
}

// setSessionCookies gives the client the session and CSRF cookies of tok,
// which expire with the session.
func (s *server) setSessionCookies(w http.ResponseWriter, r *http.Request, tok string, exp time.Time) {
	secure := s.secureRequest(r)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: tok, Path: "/", Expires: exp,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode,
	})
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: s.sessions.CSRFToken(tok), Path: "/", Expires: exp,
		Secure: secure, SameSite: http.SameSiteStrictMode,
	})
}

// clearSessionCookies tells the client to drop both cookies.
func (s *server) clearSessionCookies(w http.ResponseWriter, r *http.Request) {
	secure := s.secureRequest(r)
	for _, name := range []string{sessionCookie, csrfCookie} {
		http.SetCookie(w, &http.Cookie{
			Name: name, Path: "/", MaxAge: -1,
			HttpOnly: name == sessionCookie, Secure: secure, SameSite: http.SameSiteStrictMode,
		})
	}
}

// safeMethod reports whether method changes nothing, so that it needs no
// CSRF token.
func safeMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// cookieSession returns the session of the request's session cookie. A
// request authenticated by cookie must come from our own origin: an Origin
// header, when present (always on WebSocket upgrades and on unsafe
// requests from browsers), must name the host the request was sent to, and
// an unsafe request must carry the CSRF token of the session in
// X-CSRF-Token.
func (s *server) cookieSession(r *http.Request) (auth.Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return auth.Session{}, errorf(codeUnauthenticated, "no session cookie; log in")
	}
	sess, err := s.sessions.Parse(c.Value)
	if err != nil {
		return auth.Session{}, errBadSession()
	}
	if err := s.refuseCrossOrigin(r); err != nil {
		return auth.Session{}, err
	}
	if !safeMethod(r.Method) && !s.sessions.CheckCSRF(c.Value, r.Header.Get(csrfHeader)) {
		return auth.Session{}, errorf(codeForbidden, "missing or wrong %s header: a request authenticated by the %s cookie must echo the value of the %s cookie in it", csrfHeader, sessionCookie, csrfCookie)
	}
	return sess, nil
}

// refuseCrossOrigin refuses a request whose Origin header names another
// origin (or is "null"). Requests using the session cookie check it, and so
// do signup and login: they set the cookies, and a page of another site
// posting the attacker's credentials would otherwise sign the victim's
// browser into the attacker's account (login CSRF). Clients that send no
// Origin (SDKs, curl) are unaffected.
func (s *server) refuseCrossOrigin(r *http.Request) error {
	if origin := r.Header.Get("Origin"); origin != "" && !s.sameOrigin(r, origin) {
		return errorf(codeForbidden, "cross-origin request from %s refused: sessions work only from this server's own pages", origin)
	}
	return nil
}

// sameOrigin reports whether origin (an Origin header) names the host the
// request was sent to (Host, or with a trusted proxy X-Forwarded-Host).
func (s *server) sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	want := []string{r.Host}
	if s.fromTrustedProxy(r) {
		if fh := lastForwarded(r, "X-Forwarded-Host"); fh != "" {
			want = append(want, fh)
		}
	}
	// Both name the same server, so the Origin's scheme gives Host's
	// default port too.
	got := hostWithPort(u.Host, u.Scheme)
	for _, h := range want {
		if strings.EqualFold(got, hostWithPort(h, u.Scheme)) {
			return true
		}
	}
	return false
}

// hostWithPort returns host with its port, the scheme's default port when
// it has none.
func hostWithPort(host, scheme string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	port := "80"
	if scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// handleLogout revokes the caller's session and clears the dashboard's
// cookies. It takes the session from `Authorization: Bearer` or from the
// cookie (with the CSRF rules of cookieSession). A session that is already
// invalid, revoked or absent is not an error: the cookies are cleared all
// the same.
func (s *server) handleLogout() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		var (
			sess auth.Session
			err  error
		)
		tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case bearer && strings.HasPrefix(tok, auth.APIKeyPrefix), r.Header.Get("X-API-Key") != "":
			return errorf(codeInvalid, "an API key has no session to log out of; delete the key instead")
		case bearer && tok != "":
			sess, err = s.sessions.Parse(tok)
			if err != nil {
				sess = auth.Session{}
			}
		case hasCookie(r, sessionCookie):
			sess, err = s.cookieSession(r)
			var e *Error
			if errors.As(err, &e) && e.Code == codeForbidden {
				return err
			}
		}
		if sess.ID != "" {
			ev := store.Event{ActorType: store.ActorUser, ActorID: sess.UserID, Action: "auth.logout", ResourceID: sess.UserID, IP: s.clientIP(r)}
			ms, err := s.store.Memberships(r.Context(), sess.UserID)
			if err != nil {
				return err
			}
			if len(ms) > 0 {
				ev.TeamID = ms[0].TeamID
			}
			if err := s.store.RevokeSession(r.Context(), sess.ID, sess.ExpiresAt, ev); err != nil {
				return err
			}
		}
		s.clearSessionCookies(w, r)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
