package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// TestRefreshKeyChangeNeedsVerifiedTLS refreshes the credential against a
// control plane that answers with a new control-plane key: over plain
// http (anyone on the path could have answered) the agent keeps the key it
// has, over https with a verified certificate it takes the new one.
func TestRefreshKeyChangeNeedsVerifiedTLS(t *testing.T) {
	for _, tc := range []struct {
		name     string
		tls      bool
		wantSwap bool
	}{{"plain http", false, false}, {"verified https", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			oldKey, newKey := newSigner(t), newSigner(t)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(hostproto.RefreshResponse{HostID: testHostID, Credentials: hostproto.Credentials{
					Credential: "wrnh_new", CredentialExpiresAt: time.Now().Add(time.Hour), RefreshToken: "wrnr_new",
					CPPublicKey: hostauth.EncodePublicKey(newKey.PublicKey()),
				}})
			})
			var cp *httptest.Server
			if tc.tls {
				cp = httptest.NewTLSServer(handler)
			} else {
				cp = httptest.NewServer(handler)
			}
			t.Cleanup(cp.Close)
			dir := t.TempDir()
			old := Credential{HostID: testHostID, CPURL: cp.URL, Credential: "wrnh_old", RefreshToken: "wrnr_old",
				CPPublicKey: hostauth.EncodePublicKey(oldKey.PublicKey())}
			srv, err := NewServer(config.Agent{CPURL: cp.URL, Dir: dir, Runtime: config.RuntimeGVisor}, old, nil,
				slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.tls {
				// The test server's certificate, as a CA the operator trusts.
				srv.cp.http = cp.Client()
			}
			if err := srv.refresh(context.Background(), old); err != nil {
				t.Fatal(err)
			}
			saved, err := LoadCredential(dir)
			if err != nil {
				t.Fatal(err)
			}
			if saved.Credential != "wrnh_new" || saved.RefreshToken != "wrnr_new" {
				t.Errorf("saved credential %q, refresh token %q: want the new ones", saved.Credential, saved.RefreshToken)
			}
			accepts := func(s *hostauth.Signer) bool {
				digest, _ := hostauth.MessageDigest(&hostagentv1.HostInfoRequest{})
				tok, _ := s.BoundToken(testHostID, "/p", digest)
				h := http.Header{}
				h.Set("Authorization", "Bearer "+tok)
				return srv.verifier.Verify(h, "/p", digest) == nil
			}
			wantKey := oldKey
			if tc.wantSwap {
				wantKey = newKey
			}
			if saved.CPPublicKey != hostauth.EncodePublicKey(wantKey.PublicKey()) {
				t.Errorf("saved control-plane key changed = %v, want %v", saved.CPPublicKey != old.CPPublicKey, tc.wantSwap)
			}
			if accepts(newKey) != tc.wantSwap || accepts(oldKey) == tc.wantSwap {
				t.Errorf("verifier accepts new key %v, old key %v; want new %v", accepts(newKey), accepts(oldKey), tc.wantSwap)
			}
		})
	}
}
