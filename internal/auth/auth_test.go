package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestSessions(t *testing.T) {
	s := NewSessions(secret, time.Hour)
	tok, sess, err := s.Issue("user-1")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(sess.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("got expiry in %s, want about 1h", d)
	}
	if len(sess.ID) != 32 {
		t.Errorf("got session id %q, want 32 hex digits", sess.ID)
	}
	if got, err := s.Parse(tok); err != nil || got != sess {
		t.Fatalf("Parse: got %+v, %v; want %+v", got, err, sess)
	}
	if _, other, _ := s.Issue("user-1"); other.ID == sess.ID {
		t.Errorf("two sessions share id %s", sess.ID)
	}

	sign := func(method jwt.SigningMethod, key any, claims jwt.RegisteredClaims) string {
		t.Helper()
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	valid := jwt.RegisteredClaims{Issuer: sessionIssuer, Subject: "user-1", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	expired := valid
	expired.IssuedAt, expired.ExpiresAt = jwt.NewNumericDate(now.Add(-2*time.Hour)), jwt.NewNumericDate(now.Add(-time.Hour))
	tooLong := valid
	tooLong.ExpiresAt = jwt.NewNumericDate(now.Add(1000 * time.Hour))
	foreign := valid
	foreign.Issuer = "someone-else"
	noSubject := valid
	noSubject.Subject = ""
	noExpiry := valid
	noExpiry.ExpiresAt = nil

	tests := []struct {
		name  string
		token string
	}{
		{"garbage", "not-a-token"},
		{"wrong secret", sign(jwt.SigningMethodHS256, []byte("another secret another secret 00"), valid)},
		{"other algorithm", sign(jwt.SigningMethodHS512, secret, valid)},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)},
		{"expired", sign(jwt.SigningMethodHS256, secret, expired)},
		{"lifetime too long", sign(jwt.SigningMethodHS256, secret, tooLong)},
		{"other issuer", sign(jwt.SigningMethodHS256, secret, foreign)},
		{"no subject", sign(jwt.SigningMethodHS256, secret, noSubject)},
		{"no expiry", sign(jwt.SigningMethodHS256, secret, noExpiry)},
	}
	for _, tt := range tests {
		if _, err := s.Parse(tt.token); !errors.Is(err, ErrInvalidSession) {
			t.Errorf("%s: got %v, want ErrInvalidSession", tt.name, err)
		}
	}
}

func TestSessionWithoutID(t *testing.T) {
	// Tokens issued before sessions had ids stay valid.
	s := NewSessions(secret, time.Hour)
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: sessionIssuer, Subject: "user-1", IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Parse(tok); err != nil || got.UserID != "user-1" || got.ID != "" {
		t.Errorf("Parse: got %+v, %v; want user-1 without id", got, err)
	}
}

func TestCSRFToken(t *testing.T) {
	s := NewSessions(secret, time.Hour)
	other := NewSessions([]byte("another secret another secret 00"), time.Hour)
	tok := s.CSRFToken("session-a")
	tests := []struct {
		name    string
		session string
		got     string
		want    bool
	}{
		{"right", "session-a", tok, true},
		{"empty", "session-a", "", false},
		{"other session", "session-b", tok, false},
		{"other secret", "session-a", other.CSRFToken("session-a"), false},
		{"truncated", "session-a", tok[:len(tok)-1], false},
	}
	for _, tt := range tests {
		if got := s.CheckCSRF(tt.session, tt.got); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if strings.ContainsAny(tok, "+/=") {
		t.Errorf("CSRF token %q is not unpadded base64url", tok)
	}
}

func TestPasswords(t *testing.T) {
	p := Passwords{Cost: bcrypt.MinCost}
	h, err := p.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		hash, password string
		want           error
	}{
		{h, "correct horse", nil},
		{h, "wrong horse", ErrWrongPassword},
		{"", "correct horse", ErrWrongPassword}, // unknown user
	}
	for _, tt := range tests {
		if err := p.Check(tt.hash, tt.password); !errors.Is(err, tt.want) {
			t.Errorf("Check(%q): got %v, want %v", tt.password, err, tt.want)
		}
	}
	if cost, _ := bcrypt.Cost([]byte(mustHash(t, Passwords{}))); cost < 10 {
		t.Errorf("default bcrypt cost %d, want at least 10", cost)
	}
}

func mustHash(t *testing.T, p Passwords) string {
	t.Helper()
	h, err := p.Hash("x")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestTokens(t *testing.T) {
	tok, hash, err := NewToken(APIKeyPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if !HasPrefix(tok, APIKeyPrefix) || HasPrefix(tok, HostCredentialPrefix) {
		t.Errorf("HasPrefix(%q) wrong", tok)
	}
	if hash != HashToken(tok) || strings.Contains(hash, tok) {
		t.Errorf("hash %q is not the stable digest of the token", hash)
	}
	other, _, _ := NewToken(APIKeyPrefix)
	if other == tok {
		t.Errorf("two tokens are equal")
	}
	if p := DisplayPrefix(tok); len(p) != 12 || !strings.HasPrefix(tok, p) {
		t.Errorf("DisplayPrefix: got %q", p)
	}
}

func TestRateLimiter(t *testing.T) {
	l := NewRateLimiter(3)
	now := time.Now()
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.Allow("10.0.0.1"); !ok {
			t.Fatalf("request %d within burst refused", i+1)
		}
	}
	ok, wait := l.Allow("10.0.0.1")
	if ok || wait <= 0 || wait > 20*time.Second {
		t.Fatalf("over burst: got ok=%v wait=%s, want refused for up to 20 s", ok, wait)
	}
	if ok, _ := l.Allow("10.0.0.2"); !ok {
		t.Errorf("another IP refused")
	}
	now = now.Add(wait)
	if ok, _ := l.Allow("10.0.0.1"); !ok {
		t.Errorf("refused after waiting Retry-After")
	}
	now = now.Add(10 * time.Minute)
	l.Allow("10.0.0.3")
	if n := len(l.clients); n != 1 {
		t.Errorf("got %d remembered clients after they went idle, want 1", n)
	}
}
