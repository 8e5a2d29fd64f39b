// Package auth holds the control plane's credentials machinery: password
// hashing, user session tokens (HS256 JWTs), random bearer tokens stored as
// SHA-256 digests (API keys, host tokens), and per-IP rate limiting of the
// login and signup endpoints. It knows nothing about HTTP routes or storage.
package auth
