package store

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
)

// hostauthKey names the key that signs control-plane → agent calls.
const hostauthKey = "hostauth"

// SigningKey returns the control plane's Ed25519 key, creating it on first
// use. The first replica's insert wins and every replica reads the winner,
// so all of them sign with the same key.
func (s *Store) SigningKey(ctx context.Context) (ed25519.PrivateKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("generating signing key: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `
		INSERT INTO cp_signing_keys (name, seed) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`,
		hostauthKey, seed); err != nil {
		return nil, fmt.Errorf("storing signing key: %w", err)
	}
	var stored []byte
	if err := s.pool.QueryRow(ctx, `SELECT seed FROM cp_signing_keys WHERE name = $1`, hostauthKey).Scan(&stored); err != nil {
		return nil, fmt.Errorf("loading signing key: %w", err)
	}
	if len(stored) != ed25519.SeedSize {
		return nil, fmt.Errorf("loading signing key: got %d bytes, want %d", len(stored), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(stored), nil
}
