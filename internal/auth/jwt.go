package auth

import (
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
// is the user id. It is safe for concurrent use.
type Sessions struct {
	secret []byte
	ttl    time.Duration
	parser *jwt.Parser
	now    func() time.Time
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

// Issue returns a token for userID and when it expires.
func (s *Sessions) Issue(userID string) (string, time.Time, error) {
	now := s.now()
	exp := now.Add(s.ttl).Truncate(time.Second)
	claims := jwt.RegisteredClaims{
		Issuer:    sessionIssuer,
		Subject:   userID,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("signing session token: %w", err)
	}
	return tok, exp, nil
}

// Parse returns the user id of a valid token, or an error wrapping
// ErrInvalidSession.
func (s *Sessions) Parse(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := s.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return s.secret, nil })
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidSession, err)
	}
	if claims.Subject == "" {
		return "", fmt.Errorf("%w: no subject", ErrInvalidSession)
	}
	// Bounded lifetime even if the secret leaked into a token minted
	// elsewhere with a far expiry.
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > s.ttl+time.Minute {
		return "", fmt.Errorf("%w: lifetime too long", ErrInvalidSession)
	}
	return claims.Subject, nil
}
