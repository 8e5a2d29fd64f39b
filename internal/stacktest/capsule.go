package stacktest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// CapsuleService returns a client for the agent's CapsuleService that signs
// its calls like the control plane does.
func (s *Stack) CapsuleService() hostagentv1connect.CapsuleServiceClient {
	return hostagentv1connect.NewCapsuleServiceClient(s.AgentHTTP(hosttls.AnyHTTP), "https://"+s.AgentAddr,
		connect.WithInterceptors(s.Signer.ClientInterceptor(s.HostID)))
}

// AgentHTTP returns an HTTP client to the agent that accepts only the
// agent's own TLS key, as the control plane's do, speaking p.
func (s *Stack) AgentHTTP(p hosttls.Protocols) *http.Client {
	return &http.Client{Transport: hosttls.Transport(s.AgentPin, nil, p)}
}

// CreateCapsule starts a minimal capsule directly on the agent (not through
// the control plane) and returns it; it is destroyed when the test ends.
func (s *Stack) CreateCapsule(t testing.TB) *hostagentv1.Capsule {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := s.CapsuleService().CreateCapsule(ctx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{
		Spec: &hostagentv1.CapsuleSpec{
			CapsuleId: uuid.NewString(), Template: "minimal", Vcpus: 1, MemoryMb: 256, DiskMb: 256,
		},
	}))
	if err != nil {
		t.Fatalf("CreateCapsule: %v", err)
	}
	c := res.Msg.GetCapsule()
	t.Cleanup(func() {
		_, _ = s.CapsuleService().DestroyCapsule(context.Background(),
			connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: c.GetSpec().GetCapsuleId()}))
	})
	return c
}

// Envd returns a client for a capsule's envd through the agent's envd
// proxy, as the control plane reaches it.
func (s *Stack) Envd(t testing.TB, capsuleID string) *envdclient.Client {
	t.Helper()
	wrap := func(next http.RoundTripper) http.RoundTripper {
		return s.Signer.Transport(s.HostID, hostauth.EnvdProcedure(capsuleID), next)
	}
	c := envdclient.New("https://"+s.AgentAddr+hostauth.EnvdProxyPath(capsuleID), "", envdclient.WithTransportWrapper(wrap),
		envdclient.WithTLS(hosttls.ClientConfig(s.AgentPin)))
	t.Cleanup(c.Close)
	return c
}

// EnvdToken returns the access token the agent gave a capsule's envd, read
// from the agent's record of it (for tests of envd's own checks).
func (s *Stack) EnvdToken(t testing.TB, capsuleID string) string {
	t.Helper()
	rec, ok := FindRecord(t, s.AgentConfig.Dir, capsuleID)
	if !ok || rec.Token == "" {
		t.Fatalf("the agent has no record of capsule %s", capsuleID)
	}
	return rec.Token
}

// Record is the part of the agent's record of a capsule that tests read.
type Record struct {
	RuntimeID string `json:"runtime_id"`
	Token     string `json:"token"`
	Spec      struct {
		ID string `json:"id"`
	} `json:"spec"`
}

// FindRecord finds the agent's record of a capsule under agentDir
// ($WRENN_DIR/sandboxes/<runtime id>/capsule.json; the runtime id differs
// from the capsule id when the capsule came from the warm pool).
func FindRecord(t testing.TB, agentDir, capsuleID string) (Record, bool) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(agentDir, "sandboxes", "*", "capsule.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // removed meanwhile
		}
		var rec Record
		if json.Unmarshal(b, &rec) == nil && rec.Spec.ID == capsuleID {
			return rec, true
		}
	}
	return Record{}, false
}

// Result is what a finished process produced.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Run runs a shell line in a capsule through client and waits for it.
func Run(t testing.TB, client *envdclient.Client, shell string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := client.Process.Start(ctx, connect.NewRequest(&envdv1.StartRequest{
		Process: &envdv1.ProcessConfig{Shell: shell},
	}))
	if err != nil {
		t.Fatalf("starting %q: %v", shell, err)
	}
	defer func() { _ = stream.Close() }()
	var r Result
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			r.Stdout += string(d.GetStdout())
			r.Stderr += string(d.GetStderr())
		}
		if end := ev.GetEnd(); end != nil {
			r.ExitCode = int(end.GetExitCode())
			return r
		}
	}
	t.Fatalf("running %q: stream ended without an exit: %v", shell, stream.Err())
	return r
}

// ProcessesNaming lists the host pids whose command line contains s; a
// capsule's runsc processes all carry its runtime id.
func ProcessesNaming(t testing.TB, s string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
