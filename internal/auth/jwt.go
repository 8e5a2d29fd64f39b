package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const sessionIssuer = "wrenn-cp"

// ErrInvalidSession is returned by Sessions.Parse for any token it does not
// accept.
var ErrInvalidSession = errors.New("invalid or expired session token")

// Sessions issues and checks user session tokens: HS256 JWTs whose subject
// is the user id and whose jti names the session, so that it can be
// revoked. It is safe for concurrent use.
type Sessions struct {
	secret []byte
	ttl    time.Duration
	parser *jwt.Parser
	now    func() time.Time
}

// Session is what a valid session token says.
type Session struct {
	UserID string
	// ID is the token's jti: 128 random bits, hex. Tokens issued before
	// sessions could be revoked have none ("") and cannot be revoked.
	ID        string
	ExpiresAt time.Time
}

// NewSessions returns Sessions signing with secret; tokens live for ttl.
func NewSessions(secret []byte, ttl time.Duration) *Sessions {
	return &Sessions{
		secret: secret,
		ttl:    ttl,
		now:    time.Now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithIssuer(sessionIssuer),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(5*time.Second),
		),
	}
}

// Issue returns a new session of userID and its token.
func (s *Sessions) Issue(userID string) (string, Session, error) {
	now := s.now()
	exp := now.Add(s.ttl).Truncate(time.Second)
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", Session{}, fmt.Errorf("generating session id: %w", err)
	}
	claims := jwt.RegisteredClaims{
		Issuer:    sessionIssuer,
		Subject:   userID,
		ID:        fmt.Sprintf("%x", id),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
	if err != nil {
		return "", Session{}, fmt.Errorf("signing session token: %w", err)
	}
	return tok, Session{UserID: userID, ID: claims.ID, ExpiresAt: exp}, nil
}

// Parse returns the session of a valid token, or an error wrapping
// ErrInvalidSession. It does not know about revocation: the caller checks
// the session's ID against the revoked ones.
func (s *Sessions) Parse(token string) (Session, error) {
	var claims jwt.RegisteredClaims
	_, err := s.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return s.secret, nil })
	if err != nil {
		return Session{}, fmt.Errorf("%w: %w", ErrInvalidSession, err)
	}
	if claims.Subject == "" {
		return Session{}, fmt.Errorf("%w: no subject", ErrInvalidSession)
	}
	// Bounded lifetime even if the secret leaked into a token minted
	// elsewhere with a far expiry.
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > s.ttl+time.Minute {
		return Session{}, fmt.Errorf("%w: lifetime too long", ErrInvalidSession)
	}
	return Session{UserID: claims.Subject, ID: claims.ID, ExpiresAt: claims.ExpiresAt.Time}, nil
}

// csrfDomain separates CSRF tokens from any other use of the JWT secret.
const csrfDomain = "csrf\x00"

// CSRFToken returns the anti-CSRF token that goes with a session token: an
// HMAC-SHA256 of it under the session secret, base64url without padding.
// A page can read it (from a cookie the server sets) and echo it in a
// header; another site can neither read nor compute it.
func (s *Sessions) CSRFToken(sessionToken string) string {
	mac := hmac.New(sha256.New, s.secret)
	mac.Write([]byte(csrfDomain + sessionToken))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// CheckCSRF reports whether got is the CSRF token of sessionToken, in
// constant time.
func (s *Sessions) CheckCSRF(sessionToken, got string) bool {
	return got != "" && hmac.Equal([]byte(s.CSRFToken(sessionToken)), []byte(got))
}
