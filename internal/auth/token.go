package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Prefixes of the random bearer tokens, so that a leaked token says what it
// is (and secret scanners can find it).
const (
	APIKeyPrefix            = "wrn_"
	RegistrationTokenPrefix = "wrnreg_"
	HostCredentialPrefix    = "wrnh_"
	RefreshTokenPrefix      = "wrnr_"
	BootstrapTokenPrefix    = "wrnboot_"
)

// apiKeyDisplayLen is how much of an API key is kept in clear to tell keys
// apart in listings: the prefix and 8 random characters.
const apiKeyDisplayLen = len(APIKeyPrefix) + 8

// NewToken returns prefix + 32 random bytes (base64url, unpadded) and the
// digest to store. The tokens carry 256 bits of entropy, so an unsalted
// SHA-256 is enough and lets the token be found by its digest.
func NewToken(prefix string) (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generating token: %w", err)
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken returns the stored digest of a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// DisplayPrefix returns the part of an API key shown in listings.
func DisplayPrefix(key string) string {
	if len(key) < apiKeyDisplayLen {
		return key
	}
	return key[:apiKeyDisplayLen]
}

// HasPrefix reports whether token looks like a token of that kind: the
// prefix followed by 43 base64url characters.
func HasPrefix(token, prefix string) bool {
	rest, ok := strings.CutPrefix(token, prefix)
	return ok && len(rest) == 43
}
