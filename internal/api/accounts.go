package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"math"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/store"
)

type userJSON struct {
	ID              string    `json:"id"`
	Email           string    `json:"email"`
	Name            string    `json:"name"`
	IsPlatformAdmin bool      `json:"is_platform_admin"`
	CreatedAt       time.Time `json:"created_at"`
}

func toUserJSON(u store.User) userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, IsPlatformAdmin: u.IsPlatformAdmin, CreatedAt: u.CreatedAt}
}

type teamJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Role string `json:"role"`
}

type sessionJSON struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	User      userJSON  `json:"user"`
	Team      *teamJSON `json:"team,omitempty"`
}

const maxNameLen = 100

// normalizeEmail returns the lower-cased address, or an error when email is
// not a bare address.
func normalizeEmail(email string) (string, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" {
		return "", errorf(codeInvalid, "email is required")
	}
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || len(email) > 254 {
		return "", errorf(codeInvalid, "email %q is not a valid address", email)
	}
	return email, nil
}

func (s *server) handleSignup() http.Handler {
	type request struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		Name     string `json:"name"`
		// BootstrapToken makes the new user platform admin, once.
		BootstrapToken string `json:"bootstrap_token"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.refuseCrossOrigin(r); err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		admin := req.BootstrapToken != ""
		switch {
		case admin && !s.isBootstrapToken(req.BootstrapToken):
			return errorf(codeForbidden, "the bootstrap token is not valid; omit it to sign up without platform admin rights")
		case !admin && s.cfg.Signup == config.SignupClosed:
			return errorf(codeForbidden, "signup is closed on this server")
		}
		email, err := normalizeEmail(req.Email)
		if err != nil {
			return err
		}
		switch n := len(req.Password); {
		case n < auth.MinPasswordLen:
			return errorf(codeInvalid, "password must be at least %d characters", auth.MinPasswordLen)
		case n > auth.MaxPasswordLen:
			return errorf(codeInvalid, "password must be at most %d bytes", auth.MaxPasswordLen)
		}
		name := strings.TrimSpace(req.Name)
		if utf8.RuneCountInString(name) > maxNameLen {
			return errorf(codeInvalid, "name must be at most %d characters", maxNameLen)
		}
		hash, err := s.passwords.Hash(req.Password)
		if err != nil {
			return err
		}
		teamName := name
		if teamName == "" {
			teamName, _, _ = strings.Cut(email, "@")
		}
		u, m, err := s.store.CreateUser(r.Context(), store.NewUser{
			Email: email, Name: name, PasswordHash: hash, TeamName: teamName + "'s team", PlatformAdmin: admin,
		}, store.Event{Action: "auth.signup", IP: s.clientIP(r), Metadata: signupMeta(admin)})
		if errors.Is(err, store.ErrConflict) {
			return errorf(codeConflict, "an account with email %s already exists", email)
		}
		if errors.Is(err, store.ErrBootstrapSpent) {
			return errorf(codeForbidden, "the bootstrap token was spent already: a platform admin exists; omit it to sign up without platform admin rights")
		}
		if err != nil {
			return err
		}
		tok, sess, err := s.sessions.Issue(u.ID)
		if err != nil {
			return err
		}
		s.log.InfoContext(r.Context(), "user signed up", "user_id", u.ID, "team_id", m.TeamID, "platform_admin", u.IsPlatformAdmin)
		s.setSessionCookies(w, r, tok, sess.ExpiresAt)
		encode(w, http.StatusCreated, sessionJSON{
			Token: tok, ExpiresAt: sess.ExpiresAt, User: toUserJSON(u),
			Team: &teamJSON{ID: m.TeamID, Name: m.TeamName, Role: m.Role},
		})
		return nil
	})
}

// isBootstrapToken reports whether tok is this server's bootstrap token.
func (s *server) isBootstrapToken(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], s.bootstrapHash[:]) == 1
}

// signupMeta is the audit metadata of a signup.
func signupMeta(admin bool) map[string]any {
	if !admin {
		return nil
	}
	return map[string]any{"platform_admin": true, "bootstrap": true}
}

func (s *server) handleLogin() http.Handler {
	type request struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.refuseCrossOrigin(r); err != nil {
			return err
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if strings.TrimSpace(req.Email) == "" || req.Password == "" {
			return errorf(codeInvalid, "email and password are required")
		}
		wrong := errorf(codeInvalidCredentials, "wrong email or password")
		email := strings.ToLower(strings.TrimSpace(req.Email))
		// Failed logins are counted per email, whether an account has it or
		// not, so that a lockout reveals nothing about which accounts exist.
		account := auth.HashToken(email)
		if wait, err := s.store.LoginLockedFor(r.Context(), account); err != nil {
			return err
		} else if wait > 0 {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			return errorf(codeRateLimited, "too many failed logins for this account; retry in %d s", secs)
		}
		u, err := s.store.UserByEmail(r.Context(), email)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// An unknown email is checked against a dummy hash (u.PasswordHash
		// is empty) so that it costs the same time as a wrong password.
		if err := s.passwords.Check(u.PasswordHash, req.Password); errors.Is(err, auth.ErrWrongPassword) {
			if _, err := s.store.RecordLoginFailure(r.Context(), account, s.lockout); err != nil {
				return err
			}
			return wrong
		} else if err != nil {
			return err
		}
		if err := s.store.ClearLoginFailures(r.Context(), account); err != nil {
			return err
		}
		ms, err := s.store.Memberships(r.Context(), u.ID)
		if err != nil {
			return err
		}
		var team *teamJSON
		ev := store.Event{ActorType: store.ActorUser, ActorID: u.ID, Action: "auth.login", ResourceID: u.ID, IP: s.clientIP(r)}
		if len(ms) > 0 {
			team = &teamJSON{ID: ms[0].TeamID, Name: ms[0].TeamName, Role: ms[0].Role}
			ev.TeamID = ms[0].TeamID
		}
		tok, sess, err := s.sessions.Issue(u.ID)
		if err != nil {
			return err
		}
		if err := s.store.Audit(r.Context(), ev); err != nil {
			return err
		}
		s.setSessionCookies(w, r, tok, sess.ExpiresAt)
		encode(w, http.StatusOK, sessionJSON{Token: tok, ExpiresAt: sess.ExpiresAt, User: toUserJSON(u), Team: team})
		return nil
	})
}

func (s *server) handleMe() http.Handler {
	type response struct {
		User            *userJSON  `json:"user"`
		Team            teamJSON   `json:"team"`
		Teams           []teamJSON `json:"teams"`
		IsPlatformAdmin bool       `json:"is_platform_admin"`
		// AuthMethod is "session" or "api_key".
		AuthMethod string `json:"auth_method"`
		APIKeyID   string `json:"api_key_id,omitempty"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		resp := response{IsPlatformAdmin: p.PlatformAdmin, AuthMethod: "session", Teams: []teamJSON{}}
		if p.UserID != "" {
			u, err := s.store.UserByID(r.Context(), p.UserID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err == nil {
				uj := toUserJSON(u)
				resp.User = &uj
			}
		}
		// p.Role is the session user's role, or member for an API key,
		// whatever its creator's role.
		if p.APIKeyID != "" {
			resp.AuthMethod, resp.APIKeyID = "api_key", p.APIKeyID
			// A key is bound to its one team.
			name, err := s.store.TeamName(r.Context(), p.TeamID)
			if err != nil {
				return err
			}
			resp.Team = teamJSON{ID: p.TeamID, Name: name, Role: p.Role}
			resp.Teams = append(resp.Teams, resp.Team)
		} else {
			// A session may switch teams (X-Team-ID), so it lists them all.
			ms, err := s.store.Memberships(r.Context(), p.UserID)
			if err != nil {
				return err
			}
			for _, m := range ms {
				t := teamJSON{ID: m.TeamID, Name: m.TeamName, Role: m.Role}
				if m.TeamID == p.TeamID {
					resp.Team = t
				}
				resp.Teams = append(resp.Teams, t)
			}
		}
		encode(w, http.StatusOK, resp)
		return nil
	})
}
