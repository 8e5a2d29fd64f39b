package hostauth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// streamProc is a client-streaming procedure served only by this test:
// the agent's services have no streams today, but the binding must hold
// for the first one added.
const streamProc = "/wrenn.test.v1.TestService/Stream"

// TestStreamTokensBoundToCapsule opens client streams whose tokens are bound
// to one capsule: messages about that capsule pass, a message naming another
// capsule (at the top or inside a nested message) ends the stream as
// unauthenticated, and so does a stream bound to none that names one.
func TestStreamTokensBoundToCapsule(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const hostID = "host-1"
	signer := hostauth.NewSigner(key)
	mux := http.NewServeMux()
	mux.Handle(streamProc, connect.NewClientStreamHandler(streamProc,
		func(_ context.Context, s *connect.ClientStream[hostagentv1.CreateCapsuleRequest]) (*connect.Response[hostagentv1.GetCapsuleResponse], error) {
			for s.Receive() {
			}
			if err := s.Err(); err != nil {
				return nil, err
			}
			return connect.NewResponse(&hostagentv1.GetCapsuleResponse{}), nil
		}, connect.WithInterceptors(hostauth.NewVerifier(pub, hostID).Interceptor())))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	const a, b = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	msg := func(id string) *hostagentv1.CreateCapsuleRequest {
		return &hostagentv1.CreateCapsuleRequest{Spec: &hostagentv1.CapsuleSpec{CapsuleId: id, Template: "minimal"}}
	}
	for _, tc := range []struct {
		name  string
		bound string // the capsule the token is bound to; "-" for none
		sent  []string
		ok    bool
	}{
		{"messages about the bound capsule", a, []string{a, a}, true},
		{"a message about another capsule", a, []string{a, b}, false},
		{"stream bound to no capsule naming one", "-", []string{a}, false},
		{"stream bound to no capsule naming none", "-", []string{""}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := connect.NewClient[hostagentv1.CreateCapsuleRequest, hostagentv1.GetCapsuleResponse](
				srv.Client(), srv.URL+streamProc, connect.WithInterceptors(signer.ClientInterceptor(hostID)))
			ctx := context.Background()
			if tc.bound != "-" {
				ctx = hostauth.WithCapsule(ctx, tc.bound)
			}
			stream := client.CallClientStream(ctx)
			for _, id := range tc.sent {
				if err := stream.Send(msg(id)); err != nil {
					break
				}
			}
			_, err := stream.CloseAndReceive()
			if tc.ok && err != nil {
				t.Errorf("stream refused: %v", err)
			}
			if !tc.ok && connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("got %v, want unauthenticated", err)
			}
		})
	}

	// A stream token captured on the wire is single use: the same header
	// on a second stream is refused before any message.
	captured, err := signer.BoundToken(hostID, streamProc, hostauth.StreamDigest(a))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []connect.Code{0, connect.CodeUnauthenticated} {
		client := connect.NewClient[hostagentv1.CreateCapsuleRequest, hostagentv1.GetCapsuleResponse](srv.Client(), srv.URL+streamProc)
		stream := client.CallClientStream(context.Background())
		stream.RequestHeader().Set("Authorization", "Bearer "+captured)
		_ = stream.Send(msg(a))
		_, err := stream.CloseAndReceive()
		if ok := (want == 0 && err == nil) || (want != 0 && connect.CodeOf(err) == want); !ok {
			t.Errorf("use %d of a captured stream token: %v, want code %v", i+1, err, want)
		}
	}
}
