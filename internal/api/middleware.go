package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// handle adapts a handler that returns an error to http.Handler; the error
// is answered by writeError.
func (s *server) handle(fn func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// recorder remembers the status a handler wrote.
type recorder struct {
	http.ResponseWriter
	status int
}

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// instrument gives each request an id, counts and times it under its route
// pattern, logs it at debug level and turns a panic into a 500.
func (s *server) instrument(pattern string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		w.Header().Set("X-Request-ID", hex.EncodeToString(id))
		rec := &recorder{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				s.writeError(rec, r, fmt.Errorf("panic: %v", v))
			}
			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			elapsed := time.Since(start)
			s.metrics.observe(r.Method, pattern, rec.status, elapsed)
			s.log.DebugContext(r.Context(), "request", "method", r.Method, "route", pattern,
				"status", rec.status, "duration_ms", elapsed.Milliseconds(), "request_id", w.Header().Get("X-Request-ID"))
		}()
		next.ServeHTTP(rec, r)
	})
}

// rateLimit refuses callers over the per-IP signup/login budget with 429
// and Retry-After.
func (s *server) rateLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, wait := s.limiter.Allow(ipBucket(s.clientIP(r)))
		if !ok {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			s.writeError(w, r, errorf(codeRateLimited, "too many attempts from this address; retry in %d s", secs))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// principal is who makes a request and for which team.
type principal struct {
	UserID        string // the session's user, or the API key's creator ("" if gone)
	APIKeyID      string // set when authenticated by API key
	TeamID        string
	Role          string
	PlatformAdmin bool
	// Scopes are the API key's; a session holds every scope (see has).
	Scopes []string
}

// actor returns the audit actor of the principal.
func (p principal) actor() (typ, id string) {
	if p.APIKeyID != "" {
		return store.ActorAPIKey, p.APIKeyID
	}
	return store.ActorUser, p.UserID
}

// event returns an audit event by p for action, with the caller's IP.
func (s *server) event(r *http.Request, p principal, action string, meta map[string]any) store.Event {
	typ, id := p.actor()
	return store.Event{TeamID: p.TeamID, ActorType: typ, ActorID: id, Action: action, Metadata: meta, IP: s.clientIP(r)}
}

type principalKey struct{}

// caller returns the principal authenticate stored in the request.
func caller(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// authenticate accepts `Authorization: Bearer <session JWT>` or an API key
// (`X-API-Key: wrn_…`, or `Authorization: Bearer wrn_…`) and stores the
// principal in the request context. Without either header it accepts the
// dashboard's session cookie, under the CSRF rules of cookieSession.
func (s *server) authenticate(next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, _, err := s.requestPrincipal(r)
		if err != nil {
			return err
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
		return nil
	})
}

// How a request proved who makes it (requestPrincipal).
const (
	byAPIKeyHeader = "X-API-Key"
	byBearer       = "Authorization"
	byCookie       = "cookie"
)

// requestPrincipal is authenticate's check: it returns the principal and
// which of byAPIKeyHeader, byBearer and byCookie carried the credential.
func (s *server) requestPrincipal(r *http.Request) (principal, string, error) {
	tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case r.Header.Get("X-API-Key") != "":
		p, err := s.apiKeyPrincipal(r, r.Header.Get("X-API-Key"))
		return p, byAPIKeyHeader, err
	case bearer && strings.HasPrefix(tok, auth.APIKeyPrefix):
		// SDKs that only know bearer tokens can send the key that way.
		p, err := s.apiKeyPrincipal(r, tok)
		return p, byBearer, err
	case bearer && tok != "":
		p, err := s.sessionPrincipal(r, tok)
		return p, byBearer, err
	case r.Header.Get("Authorization") == "" && hasCookie(r, sessionCookie):
		sess, err := s.cookieSession(r)
		if err != nil {
			return principal{}, byCookie, err
		}
		p, err := s.principalOf(r, sess)
		return p, byCookie, err
	}
	return principal{}, "", errorf(codeUnauthenticated, "send `Authorization: Bearer <token>` or `X-API-Key: <key>`")
}

func (s *server) apiKeyPrincipal(r *http.Request, key string) (principal, error) {
	ctx := r.Context()
	if !auth.HasPrefix(key, auth.APIKeyPrefix) {
		return principal{}, errorf(codeUnauthenticated, "invalid API key")
	}
	// The key acts with its creator's standing, read now, so that revoking
	// someone's admin rights also takes them from their keys; and only
	// when the key is scoped for it.
	k, creatorIsAdmin, err := s.store.APIKeyByHash(ctx, auth.HashToken(key))
	if errors.Is(err, store.ErrNotFound) {
		return principal{}, errorf(codeUnauthenticated, "invalid API key")
	}
	if err != nil {
		return principal{}, err
	}
	if want, err := teamHeader(r); err != nil {
		return principal{}, err
	} else if want != "" && want != k.TeamID {
		return principal{}, errorf(codeForbidden, "this API key belongs to another team than X-Team-ID")
	}
	if err := s.store.TouchAPIKey(ctx, k); err != nil {
		return principal{}, err
	}
	return principal{
		UserID: k.CreatedBy, APIKeyID: k.ID, TeamID: k.TeamID, Role: store.RoleMember, Scopes: k.Scopes,
		PlatformAdmin: creatorIsAdmin && slices.Contains(k.Scopes, auth.ScopePlatformAdmin),
	}, nil
}

// errBadSession is the answer to a session token that is not (or no
// longer) valid.
func errBadSession() *Error {
	return errorf(codeUnauthenticated, "invalid or expired session token; log in again")
}

func (s *server) sessionPrincipal(r *http.Request, tok string) (principal, error) {
	sess, err := s.sessions.Parse(tok)
	if err != nil {
		return principal{}, errBadSession()
	}
	return s.principalOf(r, sess)
}

// principalOf returns the principal of a parsed session, in the team of
// X-Team-ID or the user's default team.
func (s *server) principalOf(r *http.Request, sess auth.Session) (principal, error) {
	want, err := teamHeader(r)
	if err != nil {
		return principal{}, err
	}
	u, m, err := s.store.UserInTeam(r.Context(), sess.UserID, want, sess.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return principal{}, errorf(codeUnauthenticated, "the account of this session no longer exists")
	case errors.Is(err, store.ErrRevoked):
		return principal{}, errorf(codeUnauthenticated, "this session was logged out; log in again")
	case err != nil:
		return principal{}, err
	}
	switch {
	case m.TeamID == "" && want != "":
		return principal{}, errorf(codeForbidden, "you are not a member of team %s", want)
	case m.TeamID == "":
		return principal{}, errorf(codeForbidden, "your account belongs to no team")
	}
	return principal{UserID: u.ID, TeamID: m.TeamID, Role: m.Role, PlatformAdmin: u.IsPlatformAdmin}, nil
}

// teamHeader returns the team a request asks to act for, as a canonical
// UUID, or "" when it names none: the X-Team-ID header, or else the
// team_id query parameter, for what cannot send headers (a browser's
// WebSocket, a download link). Both must agree when both are given.
func teamHeader(r *http.Request) (string, error) {
	v, name := r.Header.Get("X-Team-ID"), "X-Team-ID"
	if q := r.URL.Query(); q.Has("team_id") {
		if v != "" && v != q.Get("team_id") {
			return "", errorf(codeInvalid, "X-Team-ID and the team_id parameter name different teams")
		}
		v, name = q.Get("team_id"), "team_id"
	}
	if v == "" {
		return "", nil
	}
	id, err := uuid.Parse(v)
	if err != nil {
		return "", errorf(codeInvalid, "%s is not a team id", name)
	}
	return id.String(), nil
}

// pathID returns the {id} path value as a canonical UUID; anything else is
// an unknown resource.
func pathID(r *http.Request, what string) (string, error) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return "", errorf(codeNotFound, "no %s with id %q", what, r.PathValue("id"))
	}
	return id.String(), nil
}
