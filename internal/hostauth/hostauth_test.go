package hostauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"testing"
	"time"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func header(tok string) http.Header {
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	return h
}

func TestVerify(t *testing.T) {
	const proc = "/wrenn.hostagent.v1.HostAgentService/HostInfo"
	key := newKey(t)
	signer := NewSigner(key)
	other := NewSigner(newKey(t))
	v := NewVerifier(signer.PublicKey(), "host-a")

	mint := func(s *Signer, host, procedure string) string {
		tok, err := s.Token(host, procedure)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := NewSigner(key)
	expired.now = func() time.Time { return time.Now().Add(-2 * time.Minute) }

	tests := []struct {
		name   string
		header http.Header
		ok     bool
	}{
		{"valid", header(mint(signer, "host-a", proc)), true},
		{"no header", header(""), false},
		{"not bearer", http.Header{"Authorization": {"Basic abc"}}, false},
		{"garbage", header("not-a-jwt"), false},
		{"other key", header(mint(other, "host-a", proc)), false},
		{"other host", header(mint(signer, "host-b", proc)), false},
		{"other procedure", header(mint(signer, "host-a", "/x/Y")), false},
		{"expired", header(mint(expired, "host-a", proc)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Verify(tt.header, proc, "")
			if tt.ok && err != nil {
				t.Fatalf("Verify: got %v, want nil", err)
			}
			if !tt.ok && !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Verify: got %v, want ErrUnauthenticated", err)
			}
		})
	}
}

func TestPublicKeyRoundTrip(t *testing.T) {
	pub := NewSigner(newKey(t)).PublicKey()
	got, err := DecodePublicKey(EncodePublicKey(pub))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pub) {
		t.Fatal("decoded key differs from the encoded one")
	}
	if _, err := DecodePublicKey("c2hvcnQ="); err == nil {
		t.Fatal("DecodePublicKey accepted a short key")
	}
}

func TestSetPublicKey(t *testing.T) {
	const proc = "/wrenn.hostagent.v1.HostAgentService/HostInfo"
	oldCP, newCP := NewSigner(newKey(t)), NewSigner(newKey(t))
	v := NewVerifier(oldCP.PublicKey(), "host-a")
	mint := func(s *Signer) http.Header {
		tok, err := s.Token("host-a", proc)
		if err != nil {
			t.Fatal(err)
		}
		return header(tok)
	}
	if err := v.Verify(mint(oldCP), proc, ""); err != nil {
		t.Fatalf("old key before the swap: got %v, want nil", err)
	}
	v.SetPublicKey(newCP.PublicKey())
	if err := v.Verify(mint(newCP), proc, ""); err != nil {
		t.Errorf("new key after the swap: got %v, want nil", err)
	}
	if err := v.Verify(mint(oldCP), proc, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("old key after the swap: got %v, want ErrUnauthenticated", err)
	}
}

// TestTokensAreBoundAndSingleUse checks what a captured token is worth: a
// token bound to one request is refused for another request, for an
// unbound (stream) call, and a second time even for its own request.
func TestTokensAreBoundAndSingleUse(t *testing.T) {
	const proc = "envd:capsule-a"
	signer := NewSigner(newKey(t))
	v := NewVerifier(signer.PublicKey(), "host-a")
	get := RequestDigest("GET", "/capsules/capsule-a/envd/metrics")
	post := RequestDigest("POST", "/capsules/capsule-a/envd/envd.v1.Process/Start")
	mint := func(digest string) http.Header {
		tok, err := signer.BoundToken("host-a", proc, digest)
		if err != nil {
			t.Fatal(err)
		}
		return header(tok)
	}
	if err := v.Verify(mint(post), proc, get); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("token for another request: got %v, want ErrUnauthenticated", err)
	}
	if err := v.Verify(mint(post), proc, ""); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("bound token on an unbound call: got %v, want ErrUnauthenticated", err)
	}
	if err := v.Verify(mint(""), proc, get); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("unbound token on a bound call: got %v, want ErrUnauthenticated", err)
	}
	h := mint(get)
	if err := v.Verify(h, proc, get); err != nil {
		t.Fatalf("first use: got %v, want nil", err)
	}
	if err := v.Verify(h, proc, get); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("replayed token: got %v, want ErrUnauthenticated", err)
	}
	// Many tokens: the cache keeps refusing replays across its sweeps.
	first := mint(get)
	if err := v.Verify(first, proc, get); err != nil {
		t.Fatal(err)
	}
	for range 3000 {
		if err := v.Verify(mint(get), proc, get); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Verify(first, proc, get); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("replay after 3000 other tokens: got %v, want ErrUnauthenticated", err)
	}
}

func TestMessageDigest(t *testing.T) {
	if _, err := MessageDigest("not a message"); err == nil {
		t.Error("MessageDigest accepted a string")
	}
}
