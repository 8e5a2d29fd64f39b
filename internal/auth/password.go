package auth

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// Password limits. bcrypt reads at most 72 bytes; a longer password would
// be silently truncated, so it is refused instead.
const (
	MinPasswordLen = 8
	MaxPasswordLen = 72
)

// DefaultBcryptCost is the production work factor.
const DefaultBcryptCost = 12

// ErrWrongPassword is returned by Passwords.Check for a mismatch.
var ErrWrongPassword = errors.New("wrong password")

// Passwords hashes and checks passwords with bcrypt. The zero value uses
// DefaultBcryptCost; tests lower Cost to stay fast. It is safe for
// concurrent use.
type Passwords struct {
	Cost int
}

func (p Passwords) cost() int {
	if p.Cost == 0 {
		return DefaultBcryptCost
	}
	return p.Cost
}

// Hash returns the bcrypt hash of password.
func (p Passwords) Hash(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), p.cost())
	if err != nil {
		return "", fmt.Errorf("hashing password: %w", err)
	}
	return string(h), nil
}

// Check returns ErrWrongPassword unless password matches hash. For an empty
// hash (unknown user) it still does one bcrypt computation of the same cost,
// so that the answer takes as long as for a real user and does not reveal
// which emails exist.
func (p Passwords) Check(hash, password string) error {
	if hash == "" {
		// GenerateFromPassword refuses more than 72 bytes at once, while
		// CompareHashAndPassword hashes them all; cut the password so that
		// a long one costs the same for unknown and known emails.
		_, _ = bcrypt.GenerateFromPassword([]byte(password)[:min(len(password), MaxPasswordLen)], p.cost())
		return ErrWrongPassword
	}
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
	if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
		return ErrWrongPassword
	}
	if err != nil {
		return fmt.Errorf("checking password: %w", err)
	}
	return nil
}
