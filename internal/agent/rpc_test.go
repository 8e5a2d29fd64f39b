package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

const testHostID = "7d0c5f0e-host-under-test"

// startRPC runs the agent's RPC server on a loopback port for the test's
// duration, trusting the control-plane key of cp, and returns its base URL
// and the pin of its TLS key.
func startRPC(t *testing.T, cp *hostauth.Signer) (base, pin string) {
	t.Helper()
	cfg := config.Agent{
		CPURL:             "http://127.0.0.1:1",
		Dir:               t.TempDir(),
		ListenAddr:        "127.0.0.1:0",
		HeartbeatInterval: time.Minute,
		Runtime:           config.RuntimeGVisor,
		LogFormat:         "text",
	}
	cred := Credential{
		HostID:      testHostID,
		CPURL:       cfg.CPURL,
		Credential:  "wrnh_unused",
		CPPublicKey: hostauth.EncodePublicKey(cp.PublicKey()),
	}
	srv, err := NewServer(cfg, cred, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + ln.Addr().String(), srv.TLSPin()
}

func newSigner(t *testing.T) *hostauth.Signer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return hostauth.NewSigner(key)
}

// pinnedClient speaks p over TLS to the agent whose key is pinned as pin,
// as the control plane does.
func pinnedClient(pin string, p hosttls.Protocols) *http.Client {
	return &http.Client{Transport: hosttls.Transport(pin, nil, p)}
}

// bearer is a client interceptor attaching a fixed Authorization header.
func bearer(tok string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
}

func TestRPCRefusesAllButTheControlPlane(t *testing.T) {
	cp := newSigner(t)
	impostor := newSigner(t)
	base, pin := startRPC(t, cp)

	mint := func(s *hostauth.Signer, host, procedure string) string {
		tok, err := s.Token(host, procedure)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	const proc = hostagentv1connect.HostAgentServiceHostInfoProcedure
	mintFor := func(s *hostauth.Signer, m any) string {
		digest, err := hostauth.MessageDigest(m)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.BoundToken(testHostID, proc, digest)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// A captured valid token works once, on one transport, and never again.
	replayed := mintFor(cp, &hostagentv1.HostInfoRequest{})
	for i, want := range []connect.Code{0, connect.CodeUnauthenticated, connect.CodeUnauthenticated} {
		client := hostagentv1connect.NewHostAgentServiceClient([]*http.Client{pinnedClient(pin, hosttls.HTTP1Only), pinnedClient(pin, hosttls.HTTP2Only)}[i%2], base,
			connect.WithInterceptors(bearer(replayed)))
		_, err := client.HostInfo(context.Background(), connect.NewRequest(&hostagentv1.HostInfoRequest{}))
		if got := connect.CodeOf(err); (want == 0 && err != nil) || (want != 0 && got != want) {
			t.Errorf("use %d of one captured token: err %v, want code %v", i+1, err, want)
		}
	}
	tests := []struct {
		name string
		opts []connect.ClientOption
		want connect.Code // 0 means success
	}{
		{"no token", nil, connect.CodeUnauthenticated},
		{"token signed by another key", []connect.ClientOption{connect.WithInterceptors(bearer(mint(impostor, testHostID, proc)))}, connect.CodeUnauthenticated},
		{"token for another host", []connect.ClientOption{connect.WithInterceptors(bearer(mint(cp, "some-other-host", proc)))}, connect.CodeUnauthenticated},
		{"token for another procedure", []connect.ClientOption{connect.WithInterceptors(bearer(mint(cp, testHostID, "/wrenn.hostagent.v1.HostAgentService/DestroyEverything")))}, connect.CodeUnauthenticated},
		{"garbage token", []connect.ClientOption{connect.WithInterceptors(bearer("not-a-jwt"))}, connect.CodeUnauthenticated},
		{"token not bound to the request", []connect.ClientOption{connect.WithInterceptors(bearer(mint(cp, testHostID, proc)))}, connect.CodeUnauthenticated},
		{"token bound to another request", []connect.ClientOption{connect.WithInterceptors(bearer(mintFor(cp, &hostagentv1.GetCapsuleRequest{CapsuleId: "x"})))}, connect.CodeUnauthenticated},
		{"valid control-plane token", []connect.ClientOption{connect.WithInterceptors(cp.ClientInterceptor(testHostID))}, 0},
	}
	for _, tt := range tests {
		for _, transport := range []struct {
			name   string
			client *http.Client
		}{{"http1", pinnedClient(pin, hosttls.HTTP1Only)}, {"h2", pinnedClient(pin, hosttls.HTTP2Only)}} {
			t.Run(tt.name+"/"+transport.name, func(t *testing.T) {
				client := hostagentv1connect.NewHostAgentServiceClient(transport.client, base, tt.opts...)
				resp, err := client.HostInfo(context.Background(), connect.NewRequest(&hostagentv1.HostInfoRequest{}))
				if tt.want != 0 {
					if got := connect.CodeOf(err); got != tt.want {
						t.Fatalf("HostInfo error = %v (code %v), want code %v", err, got, tt.want)
					}
					return
				}
				if err != nil {
					t.Fatalf("HostInfo: %v", err)
				}
				got := resp.Msg
				specs, err := ReadSpecs(t.TempDir(), config.RuntimeGVisor)
				if err != nil {
					t.Fatal(err)
				}
				if got.HostId != testHostID || got.Arch != specs.Arch || int(got.Cpus) != specs.CPUs ||
					got.MemoryMb != specs.MemoryMB || got.Hostname != specs.Hostname || got.Runtime != "gvisor" ||
					got.KernelVersion != specs.KernelVersion || got.AgentVersion == "" {
					t.Errorf("HostInfo = %+v, want this machine's specs %+v", got, specs)
				}
				if got.FreeMemoryMb <= 0 || got.FreeMemoryMb > got.MemoryMb || got.DiskMb <= 0 || got.UptimeSec <= 0 {
					t.Errorf("HostInfo capacity = %+v, not plausible", got)
				}
			})
		}
	}
}

// TestRPCOnlyOverPinnedTLS checks that the agent speaks TLS only, and that
// a client pinned to another key refuses it: neither plain http nor a
// wrong key gets a call through, with a valid token or not.
func TestRPCOnlyOverPinnedTLS(t *testing.T) {
	cp := newSigner(t)
	base, _ := startRPC(t, cp)
	other, err := hosttls.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		client *http.Client
		url    string
	}{
		"plain http":    {http.DefaultClient, "http://" + strings.TrimPrefix(base, "https://")},
		"h2c":           {h2cOnly(), "http://" + strings.TrimPrefix(base, "https://")},
		"another's pin": {pinnedClient(other.Pin, hosttls.AnyHTTP), base},
	} {
		client := hostagentv1connect.NewHostAgentServiceClient(c.client, c.url, connect.WithInterceptors(cp.ClientInterceptor(testHostID)))
		_, err := client.HostInfo(context.Background(), connect.NewRequest(&hostagentv1.HostInfoRequest{}))
		if err == nil {
			t.Errorf("%s: HostInfo succeeded, want it refused", name)
		}
		if name == "another's pin" && !errors.Is(err, hosttls.ErrPinMismatch) {
			t.Errorf("%s: got %v, want %v", name, err, hosttls.ErrPinMismatch)
		}
	}
}

// h2cOnly speaks HTTP/2 without TLS only.
func h2cOnly() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

func TestRPCPlainHTTP(t *testing.T) {
	base, pin := startRPC(t, newSigner(t))
	tests := []struct {
		name, method, path, body string
		want                     int
	}{
		{"unknown path", http.MethodGet, "/", "", http.StatusNotFound},
		{"unknown path with post", http.MethodPost, "/v1/hosts", "{}", http.StatusNotFound},
		{"unknown procedure", http.MethodPost, "/wrenn.hostagent.v1.HostAgentService/Nope", "{}", http.StatusNotFound},
		{"HostInfo without token", http.MethodPost, hostagentv1connect.HostAgentServiceHostInfoProcedure, "{}", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := pinnedClient(pin, hosttls.AnyHTTP).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, resp.StatusCode, body, tt.want)
			}
			if strings.Contains(string(body), "host_id") {
				t.Errorf("refused call leaked host data: %s", body)
			}
		})
	}
}

// TestVerifierSwap checks that a refreshed control-plane key takes
// effect for the very next call, and the old key stops working.
func TestVerifierSwap(t *testing.T) {
	oldKey, newKey := newSigner(t), newSigner(t)
	srv, err := NewServer(config.Agent{Dir: t.TempDir(), Runtime: config.RuntimeGVisor},
		Credential{HostID: testHostID, CPPublicKey: hostauth.EncodePublicKey(oldKey.PublicKey())},
		nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx, ln) }()
	call := func(s *hostauth.Signer) error {
		c := hostagentv1connect.NewHostAgentServiceClient(pinnedClient(srv.TLSPin(), hosttls.AnyHTTP), "https://"+ln.Addr().String(),
			connect.WithInterceptors(s.ClientInterceptor(testHostID)))
		_, err := c.HostInfo(context.Background(), connect.NewRequest(&hostagentv1.HostInfoRequest{}))
		return err
	}
	if err := call(oldKey); err != nil {
		t.Fatalf("old key before swap: %v", err)
	}
	srv.verifier.SetPublicKey(newKey.PublicKey())
	if err := call(newKey); err != nil {
		t.Errorf("new key after swap: %v", err)
	}
	var cerr *connect.Error
	if err := call(oldKey); !errors.As(err, &cerr) || cerr.Code() != connect.CodeUnauthenticated {
		t.Errorf("old key after swap = %v, want unauthenticated", err)
	}
}
