// Package api is the control plane's REST API: NewServer returns the whole
// HTTP surface as one http.Handler. Every route is listed in routes.go; each
// resource has its own file; errors leave through one table (errors.go) and
// bodies through one encode/decode pair (encode.go). GET and HEAD requests
// outside /v1/ that no route takes are the web dashboard's (internal/web).
package api

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/wrenn-dev/wrenn/internal/agentaddr"
	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/builds"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/imagepull"
	"github.com/wrenn-dev/wrenn/internal/lifecycle"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/web"
)

// Deps is what the API needs from the rest of the control plane.
type Deps struct {
	Store  *store.Store
	Logger *slog.Logger
	// Config supplies the token lifetimes, the JWT secret, the rate limit
	// and whether to trust X-Forwarded-For.
	Config config.ControlPlane
	// Signer authenticates calls to agents; its public key is handed to
	// agents at registration.
	Signer *hostauth.Signer
	// Passwords hashes passwords; tests lower its cost.
	Passwords auth.Passwords
	// Registry receives the API's metrics and is served on /metrics; nil
	// means a fresh registry.
	Registry *prometheus.Registry
	// AgentClient supplies the timeout of calls to agents; nil means none
	// of its own (each call has one). Its transport and redirect policy
	// are not used: calls to agents go over a transport of the API's own
	// (see newAgentHTTPClient).
	AgentClient *http.Client
	// BuildReapEvery and BuildStaleAfter tune the build reaper (see
	// internal/builds; zero takes its defaults, 5 s and 30 s): tests
	// shorten them.
	BuildReapEvery, BuildStaleAfter time.Duration
}

// server holds the dependencies shared by the handlers.
type server struct {
	// pull fetches images for builds by reference (WRENN_IMAGE_REGISTRIES).
	pull      *imagepull.Policy
	store     *store.Store
	log       *slog.Logger
	cfg       config.ControlPlane
	signer    *hostauth.Signer
	passwords auth.Passwords
	sessions  *auth.Sessions
	limiter   *auth.RateLimiter
	// lockout is the per-account policy for failed logins.
	lockout store.LoginLockout
	// bootstrapHash is the SHA-256 of the bootstrap token (see
	// handleSignup); bootstrapToken is the token itself when the server
	// made it up, to be logged by Bootstrap, else "".
	bootstrapHash  [32]byte
	bootstrapToken string
	registry       *prometheus.Registry
	metrics        *metrics
	// agents holds the clients of calls to agents, one per pinned key.
	agents *agentLinks
	// agentAddrs says which addresses agents may be reached at; every
	// dial to an agent is checked against it.
	agentAddrs *agentaddr.Policy
	envds      *envdClients
	// capsules is the capsule service the capsule routes call.
	capsules *lifecycle.Service
	// builds runs template builds (POST /v1/templates).
	builds *builds.Service
	// dashboard serves the web dashboard (internal/web).
	dashboard http.Handler

	// The port proxy (ports.go): the host name of WRENN_PROXY_DOMAIN
	// ("" when unset), the signer of access URLs, hosts read recently,
	// the transport to agents and the throttle of activity records.
	proxyDomain    string
	portTokens     *portTokens
	portHosts      hostCache
	portTransports *portTransports
	portActive     portActivity
}

// refreshTokenTTL is the lifetime of a host refresh token (host protocol).
const refreshTokenTTL = 90 * 24 * time.Hour

// maxLoginLockout is the longest an account is locked out after failed
// logins (unless WRENN_LOGIN_LOCKOUT is longer), and loginFailuresForget
// how long failures count.
const (
	maxLoginLockout     = 15 * time.Minute
	loginFailuresForget = time.Hour
)

// agentCallTimeout bounds a call to an agent made while answering a request.
const agentCallTimeout = 2 * time.Second

// NewServer returns the control plane's HTTP handler, without its
// background jobs (see New).
func NewServer(d Deps) http.Handler { return New(d) }

// Server is the control plane's HTTP handler together with the background
// jobs that act through the same code: the TTL reaper.
type Server struct {
	http.Handler
	s *server
}

// Bootstrap says in the log how to become the first platform admin, while
// there is none: with the token the server made up (printed here, the one
// secret ever logged, because the operator has no other way to learn it)
// or with WRENN_BOOTSTRAP_TOKEN. Call it once at start.
func (sv *Server) Bootstrap(ctx context.Context) error {
	s := sv.s
	open, err := s.store.BootstrapOpen(ctx)
	if err != nil {
		return err
	}
	switch {
	case !open && s.bootstrapToken == "":
		s.log.InfoContext(ctx, "WRENN_BOOTSTRAP_TOKEN is set but a platform admin exists already; it is ignored and may be removed")
	case !open:
	case s.bootstrapToken != "":
		s.log.WarnContext(ctx, "no platform admin yet: sign up with this bootstrap token to become one (it works once; a restart makes a new one)",
			"bootstrap_token", s.bootstrapToken)
	default:
		s.log.WarnContext(ctx, "no platform admin yet: sign up with the WRENN_BOOTSTRAP_TOKEN to become one")
	}
	return nil
}

// RunReaper pauses capsules idle for longer than their timeout_sec, every
// Config.ReaperInterval, until ctx ends; it returns nil then. Every replica
// runs one; a PostgreSQL advisory lock lets one act per round.
//
// It also runs the build reaper, which fails the template builds a control
// plane that died left running (internal/builds).
func (sv *Server) RunReaper(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sv.s.capsules.RunReaper(ctx) })
	g.Go(func() error { return sv.s.builds.RunReaper(ctx) })
	return g.Wait()
}

// Close stops the template builds this control plane runs (they are
// recorded failed: the control plane shut down) and waits for them.
func (sv *Server) Close() { sv.s.builds.Close() }

// New returns the control plane's API server.
func New(d Deps) *Server {
	s := &server{
		store:     d.Store,
		log:       d.Logger,
		cfg:       d.Config,
		signer:    d.Signer,
		passwords: d.Passwords,
		sessions:  auth.NewSessions(d.Config.JWTSecret, d.Config.JWTTTL),
		limiter:   auth.NewRateLimiter(d.Config.AuthRateLimit),
		registry:  d.Registry,
		envds:     newEnvdClients(),
		dashboard: web.Handler(d.Config.DashboardDir),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.lockout = store.LoginLockout{
		MaxFailures: d.Config.LoginMaxFailures, Base: d.Config.LoginLockout,
		Max: max(d.Config.LoginLockout, maxLoginLockout), Forget: loginFailuresForget,
	}
	if s.lockout.MaxFailures < 1 {
		s.lockout.MaxFailures = 5
	}
	if s.lockout.Base <= 0 {
		s.lockout.Base = time.Minute
	}
	tok := d.Config.BootstrapToken
	if tok == "" {
		// rand.Read does not fail on the platforms Go supports.
		tok, _, _ = auth.NewToken(auth.BootstrapTokenPrefix)
		s.bootstrapToken = tok
	}
	s.bootstrapHash = sha256.Sum256([]byte(tok))
	if s.registry == nil {
		s.registry = prometheus.NewRegistry()
	}
	s.agentAddrs = agentaddr.New(d.Config.AgentAllowedCIDRs)
	// LoadControlPlane has checked the registries: an error here is a
	// configuration made by hand (tests), which then pulls nothing.
	if p, err := imagepull.New(d.Config.ImageRegistries, d.Config.ImageRegistryCIDRs, maxImageUpload); err == nil {
		s.pull = p
	} else {
		s.log.Error("image pulls are off", "err", err)
	}
	s.agents = newAgentLinks(d.AgentClient, s.agentAddrs.Dialer())
	s.metrics = newMetrics(s.registry, s.store, s.log)
	s.proxyDomain = d.Config.ProxyDomain
	if h, _, err := net.SplitHostPort(s.proxyDomain); err == nil {
		s.proxyDomain = h
	}
	s.portTokens = newPortTokens(d.Config.JWTSecret)
	s.portTransports = newPortTransports(s.agentAddrs.Dialer())
	s.capsules = lifecycle.New(lifecycle.Deps{
		Store: s.store, Logger: s.log, Agent: s.capsuleService, ReaperInterval: s.cfg.ReaperInterval, Quota: s.defaultQuota(),
		CopyTemplate: s.copyTemplate,
		Metrics:      lifecycle.Metrics{Pause: s.metrics.pause, Resume: s.metrics.resume, Snapshot: s.metrics.snapshot},
	})
	s.builds = s.newBuilds(d.BuildReapEvery, d.BuildStaleAfter)
	return &Server{Handler: s.hostRouting(s.routes()), s: s}
}

// noRedirects makes an http.Client return a redirect as the answer instead
// of following it.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
