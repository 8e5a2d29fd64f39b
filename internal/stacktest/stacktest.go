// Package stacktest starts the whole of Wrenn inside a test process: a
// control plane on a fresh PostgreSQL database and a registered agent that
// runs real gVisor capsules in real network namespaces. Tests then talk to
// the control plane's REST API like a user would.
//
// It needs root, runsc and the minimal template (base for the tests that
// ask for it); `make test` provides them
// through WRENN_TEST_RUNSC and WRENN_TEST_IMAGES.
package stacktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/agent"
	"github.com/wrenn-dev/wrenn/internal/api"
	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosts"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/testdb"
)

// Stack is a running control plane and agent.
type Stack struct {
	// URL is the control plane's base URL, "http://127.0.0.1:PORT".
	URL   string
	Store *store.Store
	// HostID is the agent's host.
	HostID string
	// AgentAddr is the agent's listen address, "127.0.0.1:PORT"; it
	// speaks TLS only, with the key pinned as AgentPin.
	AgentAddr string
	// AgentPin is the pin of the agent's TLS key (internal/hosttls).
	AgentPin string
	// Team is the first user's team; the user is platform admin and owner.
	Team Team
	// Capsules is the agent's capsule manager.
	Capsules *agent.Capsules
	// AgentConfig is the agent's configuration (its Dir, network prefix…).
	AgentConfig config.Agent
	// Signer signs control-plane calls to the agent, as the control plane
	// does.
	Signer *hostauth.Signer

	users int
	// cpReachable is the relay's switch (Options.HeartbeatSwitch).
	cpReachable *atomic.Bool
	// agentCalls is the agent relay's mode (Options.AgentSwitch).
	agentCalls *atomic.Int32
}

// SetAgentCalls sets what happens to the control plane's calls to the
// agent. It needs Options.AgentSwitch.
func (s *Stack) SetAgentCalls(t testing.TB, mode AgentCalls) {
	t.Helper()
	if s.agentCalls == nil {
		t.Fatal("SetAgentCalls needs stacktest.Options{AgentSwitch: true}")
	}
	s.agentCalls.Store(int32(mode))
}

// SetHeartbeats lets the agent reach the control plane (on) or not (off).
// It needs Options.HeartbeatSwitch.
func (s *Stack) SetHeartbeats(t testing.TB, on bool) {
	t.Helper()
	if s.cpReachable == nil {
		t.Fatal("SetHeartbeats needs stacktest.Options{HeartbeatSwitch: true}")
	}
	s.cpReachable.Store(on)
}

// Team is a team with an API key.
type Team struct {
	ID     string
	APIKey string
}

// Options adjust a stack.
type Options struct {
	// Logger receives the control plane's and agent's logs (default: none).
	Logger *slog.Logger
	// ColdStarts turns the agent's warm pool off, so that every capsule
	// boots when it is created (the pool is on by default, as in
	// production, with 2 capsules per profile).
	ColdStarts bool
	// HostTimeout, when set, runs the control plane's host monitor with
	// this timeout (and a tenth of it as interval, at least 100 ms), so
	// that a test can see a silent host marked unreachable. Without it
	// the monitor does not run.
	HostTimeout time.Duration
	// ReaperInterval, when set, runs the control plane's TTL reaper at
	// this interval. Without it idle capsules are never paused.
	ReaperInterval time.Duration
	// HeartbeatSwitch routes the agent's calls to the control plane
	// through a relay that Stack.SetHeartbeats turns off and on, so that
	// a test can make the host go silent while its capsules keep running.
	HeartbeatSwitch bool
	// AgentSwitch routes the control plane's calls to the agent through a
	// relay that Stack.SetAgentCalls controls, so that a test can make
	// the agent unreachable, or lose its answers, while it runs on.
	AgentSwitch bool
	// ControlPlane, when set, adjusts the control plane's configuration
	// (quotas, say) before it starts; teams have no quota otherwise.
	ControlPlane func(*config.ControlPlane)
	// BuildStaleAfter, when set, is how old a running template build's
	// heartbeat may get before the build reaper (run with the TTL reaper,
	// see ReaperInterval) fails it; the reaper then looks every
	// ReaperInterval.
	BuildStaleAfter time.Duration
	// CapsulePids is the agent's per-capsule pids limit
	// (WRENN_CAPSULE_PIDS; 0 leaves the driver's default).
	CapsulePids int64
	// Agent, when set, adjusts the agent's configuration (its capsules'
	// DNS upstreams, say) before it starts.
	Agent func(*config.Agent)
	// Templates are the templates of WRENN_TEST_IMAGES the agent has
	// (default: minimal only, so that its warm pool boots nothing else).
	Templates []string
}

// AgentCalls says what the relay of Options.AgentSwitch does with the
// control plane's calls to the agent.
type AgentCalls int32

const (
	// AgentCallsPass forwards calls and answers.
	AgentCallsPass AgentCalls = iota
	// AgentCallsRefused answers 503 without forwarding: the agent cannot
	// be reached.
	AgentCallsRefused
	// AgentCallsLost forwards each call, lets the agent act on it, and
	// answers 503 instead of the agent's answer. Only for unary calls.
	AgentCallsLost
)

// Env returns runsc and the images directory that `make test` prepares,
// failing the test with instructions when they are missing.
func Env(t testing.TB) (runsc, images string) {
	t.Helper()
	runsc, images = os.Getenv("WRENN_TEST_RUNSC"), os.Getenv("WRENN_TEST_IMAGES")
	if runsc == "" || images == "" {
		t.Fatal("WRENN_TEST_RUNSC and WRENN_TEST_IMAGES are not set: run the tests with `make test`, which builds runsc and the minimal and base templates")
	}
	if os.Geteuid() != 0 {
		t.Fatal("capsule tests need root (network namespaces, nftables, runsc)")
	}
	return runsc, images
}

// ScratchDir returns a new directory outside /tmp (runsc mounts its own /tmp
// in the sandbox), removed when the test ends.
func ScratchDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "wrenn-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// runsc bind-mounts an empty network namespace at
		// <root>/null-netns for its own use and leaves it mounted, once
		// per sandbox started with --network=none: unmount them all.
		for range 1000 {
			if unix.Unmount(filepath.Join(dir, "runsc", "null-netns"), unix.MNT_DETACH) != nil {
				break
			}
		}
		// The agent's capsule namespace directory is a bind mount of
		// itself, released by Uninstall; a test that ends without one
		// (or fails before) leaves it, and whatever is mounted in it.
		if entries, err := os.ReadDir(filepath.Join(dir, "netns")); err == nil {
			for _, e := range entries {
				_ = unix.Unmount(filepath.Join(dir, "netns", e.Name()), unix.MNT_DETACH)
			}
			_ = unix.Unmount(filepath.Join(dir, "netns"), unix.MNT_DETACH)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing test directory: %v", err)
		}
	})
	return dir
}

// poolLockDir holds one lock file per /22 of NetworkPool. A lock is held
// with flock by the test that uses the /22, so that the stacks of tests
// and packages running at the same time never share addresses (a picked
// /22 that another stack holds gave a capsule's route to the other stack's
// envd); the kernel drops the lock when the process ends, so a crashed
// run leaves no claim behind.
const poolLockDir = "/run/lock/wrenn-test-pools"

// NetworkPool returns a random network prefix and a /22 inside
// 10.208.0.0/12 that no other test on this machine holds until t ends, so
// that stacks in parallel tests and packages keep apart.
func NetworkPool(t testing.TB) (prefix string, cidr netip.Prefix) {
	t.Helper()
	if err := os.MkdirAll(poolLockDir, 0o755); err != nil {
		t.Fatal(err)
	}
	i := -1
	for range 4096 {
		n, err := rand.Int(rand.Reader, big.NewInt(1<<10))
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(filepath.Join(poolLockDir, strconv.FormatInt(n.Int64(), 10)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = f.Close()
			continue
		}
		t.Cleanup(func() { _ = f.Close() })
		i = int(n.Int64())
		break
	}
	if i < 0 {
		t.Fatal("every test address pool is held by another test")
	}
	cidr = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(208 + i>>6), byte((i & 63) << 2), 0}), 22)
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte{'t', 0, 0, 0, 0}
	for j := 1; j < len(b); j++ {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(letters))))
		if err != nil {
			t.Fatal(err)
		}
		b[j] = letters[k.Int64()]
	}
	return string(b), cidr
}

// Start runs a control plane and one registered agent and returns once the
// host is online and reports its templates. Everything, capsules included,
// is torn down when the test ends.
func Start(t testing.TB, opts ...Options) *Stack {
	t.Helper()
	runsc, images := Env(t)
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	log := o.Logger
	switch {
	case log != nil:
	case os.Getenv("WRENN_TEST_LOG") != "":
		// For debugging a test: WRENN_TEST_LOG=1 prints both servers' logs.
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	default:
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// Control plane.
	st, dbURL := testdb.Store(t)
	key, err := st.SigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer := hostauth.NewSigner(key)
	cpCfg := config.ControlPlane{
		DatabaseURL:          dbURL,
		JWTSecret:            []byte("0123456789abcdef0123456789abcdef"),
		JWTTTL:               time.Hour,
		HostTimeout:          90 * time.Second,
		HostMonitorInterval:  10 * time.Second,
		RegistrationTokenTTL: time.Hour,
		HostCredentialTTL:    24 * time.Hour,
		// Agents run on this machine, reached over loopback.
		AgentAllowedCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		AuthRateLimit:     100000,
		LoginMaxFailures:  5,
		LoginLockout:      time.Minute,
		BootstrapToken:    BootstrapToken,
		Signup:            config.SignupOpen,
	}
	if o.ControlPlane != nil {
		o.ControlPlane(&cpCfg)
	}
	// Both servers listen on every address, as in production, so that the
	// isolation tests show the firewall (not the bind address) keeps
	// capsules out.
	cpLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.HostTimeout > 0 {
		cpCfg.HostTimeout = o.HostTimeout
		cpCfg.HostMonitorInterval = max(100*time.Millisecond, o.HostTimeout/10)
	}
	if o.ReaperInterval > 0 {
		cpCfg.ReaperInterval = o.ReaperInterval
	}
	apiSrv := api.New(api.Deps{
		Store: st, Config: cpCfg, Signer: signer, Logger: log.With("component", "cp"),
		Passwords:       auth.Passwords{Cost: bcrypt.MinCost},
		BuildStaleAfter: o.BuildStaleAfter, BuildReapEvery: o.ReaperInterval,
	})
	// As cmd/wrenn-cp serves: HTTP/1.1 and h2c.
	cpSrv := &http.Server{Handler: apiSrv, Protocols: new(http.Protocols)}
	cpSrv.Protocols.SetHTTP1(true)
	cpSrv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = cpSrv.Serve(cpLn) }()
	t.Cleanup(func() { _ = cpSrv.Close(); apiSrv.Close() })
	s := &Stack{URL: "http://" + loopback(cpLn), Store: st, Signer: signer}
	jobs := make(chan struct{}, 2)
	if o.HostTimeout > 0 {
		monitor := &hosts.Monitor{Store: st, Log: log.With("component", "cp"), Interval: cpCfg.HostMonitorInterval, Timeout: cpCfg.HostTimeout}
		go func() { _ = monitor.Run(ctx); jobs <- struct{}{} }()
		t.Cleanup(func() { cancel(); <-jobs })
	}
	if o.ReaperInterval > 0 {
		go func() { _ = apiSrv.RunReaper(ctx); jobs <- struct{}{} }()
		t.Cleanup(func() { cancel(); <-jobs })
	}
	cpURL := s.URL
	if o.HeartbeatSwitch {
		s.cpReachable = &atomic.Bool{}
		s.cpReachable.Store(true)
		cpURL = relay(t, s.URL, s.cpReachable)
	}

	// The first user is platform admin and may add hosts.
	s.Team = s.NewTeam(t)
	var host struct {
		ID                string `json:"id"`
		RegistrationToken string `json:"registration_token"`
	}
	s.Team.JSON(t, s, "POST", "/v1/hosts", map[string]string{"type": "regular"}, http.StatusCreated, &host)

	// Agent, in a directory of its own with the test images linked in.
	dir := ScratchDir(t)
	LinkImages(t, images, filepath.Join(dir, "images"), o.Templates...)
	prefix, cidr := NetworkPool(t)
	agLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	agCfg := config.Agent{
		CPURL: cpURL, Dir: dir, ListenAddr: loopback(agLn), HeartbeatInterval: 500 * time.Millisecond,
		Runtime: config.RuntimeGVisor, Runsc: runsc, CapsuleCIDR: cidr, NetworkPrefix: prefix,
		WarmPool: 2, CapsulePids: o.CapsulePids,
	}
	if o.ColdStarts {
		agCfg.WarmPool = 0
	}
	if o.Agent != nil {
		o.Agent(&agCfg)
	}
	agLog := log.With("component", "agent")
	// The address the control plane calls the agent at.
	agentAddr := loopback(agLn)
	// The agent's key pair, made now so that the relay below can present
	// it too; the agent finds it in its directory.
	agID, err := hosttls.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.AgentPin = agID.Pin
	if o.AgentSwitch {
		s.agentCalls = &atomic.Int32{}
		agentAddr = strings.TrimPrefix(agentRelay(t, "https://"+agentAddr, agID, s.agentCalls), "https://")
	}
	cred, err := agent.Register(ctx, agCfg, host.RegistrationToken, agentAddr, agLog)
	if err != nil {
		t.Fatal(err)
	}
	caps, err := OpenCapsules(ctx, agCfg, agLog)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := agent.NewServer(agCfg, cred, caps, agLog)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Run(ctx, agLn)
	}()
	t.Cleanup(func() {
		// Capsules first, while the agent still runs; then the agent.
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if infos, err := caps.List(cctx); err == nil {
			for _, c := range infos {
				if err := caps.Destroy(cctx, c.Spec.ID); err != nil {
					t.Errorf("destroying capsule %s at the end of the test: %v", c.Spec.ID, err)
				}
			}
		}
		cancel()
		<-done
		// A create or resume the control plane still had under way when
		// the capsules were listed above (a create with wait:false, say)
		// has finished now: the agent's server waits for its calls. A
		// manager opened afresh finds every capsule left, as a restarted
		// agent would, and nothing of the test outlives it.
		sweepCfg := agCfg
		sweepCfg.WarmPool = 0
		if left, err := OpenCapsules(cctx, sweepCfg, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("reopening the agent's capsules to remove what is left: %v", err)
		} else {
			infos, _ := left.List(cctx)
			for _, c := range infos {
				if err := left.Destroy(cctx, c.Spec.ID); err != nil {
					t.Errorf("destroying capsule %s left at the end of the test: %v", c.Spec.ID, err)
				}
			}
			_ = left.Close()
		}
		if err := caps.Uninstall(cctx); err != nil {
			t.Errorf("removing the agent's network: %v", err)
		}
	})
	s.HostID, s.AgentAddr, s.Capsules, s.AgentConfig = host.ID, loopback(agLn), caps, agCfg

	// Wait until the control plane has the host online with its templates.
	deadline := time.Now().Add(15 * time.Second)
	for {
		h, err := st.Host(ctx, host.ID)
		if err == nil && h.Status == store.HostOnline && len(h.Templates) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host %s not online with templates after 15 s (last: %+v, %v)", host.ID, h, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// relay serves a reverse proxy to target, which answers 503 while on is
// false, and returns its URL.
func relay(t testing.TB, target string, on *atomic.Bool) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !on.Load() {
			http.Error(w, "control plane switched off by the test", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// agentRelay serves a reverse proxy to target that does what mode says
// (AgentCalls) and returns its URL. It presents the agent's own key id, so
// that the control plane, which pinned that key, accepts it, and reaches
// the agent over TLS pinned to it.
func agentRelay(t testing.TB, target string, id hosttls.Identity, mode *atomic.Int32) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	// Calls go on in the protocol they came in: envd's streams need
	// HTTP/2 end to end, file transfers use HTTP/1.1.
	h1 := httputil.NewSingleHostReverseProxy(u)
	h2 := httputil.NewSingleHostReverseProxy(u)
	h1t := hosttls.Transport(id.Pin, nil, hosttls.HTTP1Only)
	h2t := hosttls.Transport(id.Pin, nil, hosttls.HTTP2Only)
	h1.Transport, h2.Transport = h1t, h2t
	// Streams (envd's process output) pass as they come.
	h1.FlushInterval, h2.FlushInterval = -1, -1
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxy := h1
		if r.ProtoMajor == 2 {
			proxy = h2
		}
		switch AgentCalls(mode.Load()) {
		case AgentCallsRefused:
			http.Error(w, "agent switched off by the test", http.StatusServiceUnavailable)
			return
		case AgentCallsLost:
			proxy.ServeHTTP(httptest.NewRecorder(), r)
			http.Error(w, "agent's answer lost by the test", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.TLS = hosttls.ServerConfig(id)
	srv.TLS.NextProtos = []string{"h2", "http/1.1"}
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		h1t.CloseIdleConnections()
		h2t.CloseIdleConnections()
	})
	return srv.URL
}

// loopback is ln's port on 127.0.0.1.
func loopback(ln net.Listener) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
}

// BootstrapToken is the bootstrap token of every stack; the stack's first
// user presents it and becomes platform admin.
const BootstrapToken = "stacktest-bootstrap-token-0123456789abcdef"

// NewTeam signs up a new user, who gets a team of their own, and returns
// that team with a fresh API key holding every scope the user may grant
// (platform:admin too for the stack's first user).
func (s *Stack) NewTeam(t testing.TB) Team {
	t.Helper()
	s.users++
	var session struct {
		Token string `json:"token"`
		Team  struct {
			ID string `json:"id"`
		} `json:"team"`
	}
	signup := map[string]string{
		"email": fmt.Sprintf("user%d@example.com", s.users), "password": "correct horse battery staple",
		"name": fmt.Sprintf("User %d", s.users),
	}
	scopes := slices.Clone(auth.AllScopes)
	if s.users == 1 {
		signup["bootstrap_token"] = BootstrapToken
	} else {
		scopes = slices.DeleteFunc(scopes, func(sc string) bool { return sc == auth.ScopePlatformAdmin })
	}
	anon := Team{}
	anon.JSON(t, s, "POST", "/v1/auth/signup", signup, http.StatusCreated, &session)
	var key struct {
		Key string `json:"key"`
	}
	user := Team{APIKey: session.Token}
	user.JSON(t, s, "POST", "/v1/api-keys", map[string]any{"name": "tests", "scopes": scopes}, http.StatusCreated, &key)
	return Team{ID: session.Team.ID, APIKey: key.Key}
}

// Do sends method+path with the team's API key and body JSON-encoded (nil:
// no body) and returns the response; the caller closes it.
func (tm Team) Do(t testing.TB, s *Stack, method, path string, body any) *http.Response {
	t.Helper()
	if body == nil {
		return tm.DoRaw(t, s, method, path, "", nil)
	}
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return tm.DoRaw(t, s, method, path, "application/json", bytes.NewReader(b))
}

// DoRaw sends body as is with the given Content-Type.
func (tm Team) DoRaw(t testing.TB, s *Stack, method, path, contentType string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if tm.APIKey != "" {
		// Session tokens and API keys are both accepted as Bearer.
		req.Header.Set("Authorization", "Bearer "+tm.APIKey)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return res
}

// JSON sends body like Do, fails the test unless the status is want, and
// decodes the answer into out (unless out is nil).
func (tm Team) JSON(t testing.TB, s *Stack, method, path string, body any, want int, out any) {
	t.Helper()
	res := tm.Do(t, s, method, path, body)
	defer func() { _ = res.Body.Close() }()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, res.StatusCode, strings.TrimSpace(string(raw)), want)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decoding %s: %v", method, path, raw, err)
		}
	}
}

// Percentile returns the p-th percentile (0–100) of ds, for benchmarks'
// reports.
func Percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// Millis is d in milliseconds, for benchmarks' reports.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// LinkImages makes dir an agent's images directory holding a link to the
// templates names of images (what `make test` built; default: minimal).
// The directory itself is the agent's own, so that snapshot templates it
// writes there stay its own and are not seen by the agents of other tests.
// A template that `make test` did not build fails the test.
func LinkImages(t testing.TB, images, dir string, names ...string) {
	t.Helper()
	if len(names) == 0 {
		names = []string{"minimal"}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		src := filepath.Join(images, name)
		if _, err := os.Stat(filepath.Join(src, "template.json")); err != nil {
			t.Fatalf("template %s is not in WRENN_TEST_IMAGES (%v): run the tests with `make test`, which builds minimal and base", name, err)
		}
		if err := os.Symlink(src, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// OpenCapsules opens the capsule manager of agent configuration cfg on the
// gVisor driver, as wrenn-agent does on a gVisor host.
func OpenCapsules(ctx context.Context, cfg config.Agent, log *slog.Logger) (*agent.Capsules, error) {
	driver, err := gvisor.New(gvisor.Config{
		Runsc: cfg.Runsc, StateDir: filepath.Join(cfg.Dir, "runsc"), Logger: log,
		ConsoleBytes: cfg.CapsuleConsoleBytes, PidsLimit: cfg.CapsulePids, NoFile: cfg.CapsuleNoFile,
		HostFDs: cfg.CapsuleHostFDs,
	})
	if err != nil {
		return nil, err
	}
	return agent.OpenCapsulesFromConfig(ctx, cfg, driver, log)
}
