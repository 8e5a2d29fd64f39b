package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn/internal/agentaddr"
	"github.com/wrenn-dev/wrenn/internal/imagepull"
)

// ControlPlane holds the settings of wrenn-cp. Every field names its
// environment variable and default in its tag, so that .env.example and the
// README can be written from this one place.
type ControlPlane struct {
	// DatabaseURL is the PostgreSQL connection URL. Never log it: it may
	// carry a password.
	DatabaseURL string `env:"DATABASE_URL" default:"(required)"`
	// ListenAddr is where the REST API listens; "127.0.0.1:0" picks a free
	// port, reported in the "listening" log line.
	ListenAddr string `env:"WRENN_CP_LISTEN_ADDR" default:":8000"`
	// JWTSecret signs user sessions (HS256); at least 32 bytes.
	JWTSecret []byte `env:"WRENN_JWT_SECRET" default:"(required)"`
	// JWTTTL is how long a login session lasts; at most 30 days.
	JWTTTL time.Duration `env:"WRENN_JWT_TTL" default:"24h"`
	// HostTimeout is how long a host may stay silent before it is marked
	// unreachable.
	HostTimeout time.Duration `env:"WRENN_HOST_TIMEOUT" default:"90s"`
	// HostMonitorInterval is how often the host monitor looks for silent
	// hosts; at most HostTimeout.
	HostMonitorInterval time.Duration `env:"WRENN_HOST_MONITOR_INTERVAL" default:"10s"`
	// ReaperInterval is how often the TTL reaper looks for capsules idle
	// for longer than their timeout_sec, and pauses them; at most 1m.
	ReaperInterval time.Duration `env:"WRENN_REAPER_INTERVAL" default:"1s"`
	// RegistrationTokenTTL is how long a host registration token is valid.
	RegistrationTokenTTL time.Duration `env:"WRENN_REGISTRATION_TOKEN_TTL" default:"1h"`
	// HostCredentialTTL is how long a host credential is valid before the
	// agent must refresh it.
	HostCredentialTTL time.Duration `env:"WRENN_HOST_CREDENTIAL_TTL" default:"24h"`
	// AuthRateLimit is how many signup and login requests one client IP may
	// make per minute (also the burst).
	AuthRateLimit int `env:"WRENN_AUTH_RATE_LIMIT" default:"10"`
	// TrustedProxies are the networks of the reverse proxies in front of
	// the control plane (comma-separated CIDRs or addresses). Only a
	// request whose peer is in one of them has its X-Forwarded-For,
	// X-Forwarded-Proto and X-Forwarded-Host believed; the client IP is
	// then the last X-Forwarded-For entry that is not a trusted proxy.
	// Empty: forwarding headers are ignored.
	TrustedProxies []netip.Prefix `env:"WRENN_TRUSTED_PROXIES" default:"(unset)"`
	// LoginMaxFailures is how many failed logins in a row one account
	// (email) may have before it is locked out for LoginLockout.
	LoginMaxFailures int `env:"WRENN_LOGIN_MAX_FAILURES" default:"5"`
	// LoginLockout is the first lockout of an account; each further
	// failure doubles it, up to 15 minutes (or LoginLockout if longer).
	LoginLockout time.Duration `env:"WRENN_LOGIN_LOCKOUT" default:"1m"`
	// BootstrapToken makes the signup that presents it platform admin, as
	// long as no platform admin exists; unset, the control plane makes one
	// up at start and logs it while no platform admin exists. At least 32
	// bytes.
	BootstrapToken string `env:"WRENN_BOOTSTRAP_TOKEN" default:"(unset)"`
	// Signup is open (anyone may create an account) or closed (only the
	// signup that presents the bootstrap token is accepted: set it once the
	// accounts you want exist).
	Signup string `env:"WRENN_SIGNUP" default:"open"`
	// CookieSecure marks the dashboard's cookies Secure on every answer;
	// when false they are Secure only on requests that came over TLS
	// (directly, or per X-Forwarded-Proto from a trusted proxy).
	CookieSecure bool `env:"WRENN_COOKIE_SECURE" default:"false"`
	// DashboardDir serves the dashboard from this directory instead of the
	// copy built into the binary (for frontend development); "" uses the
	// built-in copy.
	DashboardDir string `env:"WRENN_DASHBOARD_DIR" default:"(unset)"`
	// ProxyDomain, when set, makes every port of every capsule reachable
	// at {port}-{capsule id}.{ProxyDomain} (Host-header routing, for a
	// wildcard DNS record and certificate): a host name, optionally with
	// the :port clients reach the control plane at, which goes into the
	// URLs the API hands out. Unset: only the path form
	// /v1/capsules/{id}/ports/{port}/ serves ports.
	ProxyDomain string `env:"WRENN_PROXY_DOMAIN" default:"(unset)"`
	// AutoMigrate makes serve apply pending migrations at start-up; when
	// false, serve refuses to start while migrations are pending.
	AutoMigrate bool `env:"WRENN_AUTO_MIGRATE" default:"true"`
	// AgentAllowedCIDRs, when set, are the only ranges agents may
	// register or heartbeat an address in (comma-separated CIDRs or
	// addresses). Unset, any address is allowed except loopback,
	// link-local, unspecified, multicast, reserved and cloud metadata
	// ones; those are allowed only by an entry no wider than their range
	// (127.0.0.0/8 for an agent on the control plane's machine, in
	// development). Every dial to an agent is checked too.
	AgentAllowedCIDRs []netip.Prefix `env:"WRENN_AGENT_ALLOWED_CIDRS" default:"(unset)"`
	// ImageRegistries are the registries templates may be built from by
	// image reference (comma-separated host[:port]; "http://host[:port]"
	// for one served over plain http; "none" turns pulls off). Pulls are
	// anonymous.
	ImageRegistries []string `env:"WRENN_IMAGE_REGISTRIES" default:"docker.io,ghcr.io,quay.io,gcr.io,mcr.microsoft.com,public.ecr.aws,registry.k8s.io"`
	// ImageRegistryCIDRs, when set, are the only ranges a pull may
	// connect to, as WRENN_AGENT_ALLOWED_CIDRS for agents: unset, any
	// address but loopback, link-local, metadata and other special ones.
	ImageRegistryCIDRs []netip.Prefix `env:"WRENN_IMAGE_REGISTRY_CIDRS" default:"(unset)"`
	// Quota* are every team's default quota (a platform admin may set
	// other limits for one team); 0 means no limit. Running capsules are
	// those that take CPU and memory (starting, running, pausing,
	// resuming); disk counts paused capsules too, whose saved state stays
	// on their host.
	QuotaRunningCapsules   int `env:"WRENN_QUOTA_RUNNING_CAPSULES" default:"20"`
	QuotaVCPUs             int `env:"WRENN_QUOTA_VCPUS" default:"40"`
	QuotaMemoryMB          int `env:"WRENN_QUOTA_MEMORY_MB" default:"81920"`
	QuotaDiskMB            int `env:"WRENN_QUOTA_DISK_MB" default:"512000"`
	QuotaPausedCapsules    int `env:"WRENN_QUOTA_PAUSED_CAPSULES" default:"100"`
	QuotaSnapshots         int `env:"WRENN_QUOTA_SNAPSHOTS" default:"200"`
	QuotaConcurrentCreates int `env:"WRENN_QUOTA_CONCURRENT_CREATES" default:"10"`
	// LogLevel is debug, info, warn or error.
	LogLevel slog.Level `env:"WRENN_LOG_LEVEL" default:"info"`
	// LogFormat is text or json.
	LogFormat string `env:"WRENN_LOG_FORMAT" default:"text"`
}

// Values of WRENN_SIGNUP.
const (
	SignupOpen   = "open"
	SignupClosed = "closed"
)

// maxJWTTTL bounds sessions so that a stolen token cannot live for ever.
const maxJWTTTL = 30 * 24 * time.Hour

// maxReaperInterval bounds how late an idle capsule may be paused beyond
// its timeout.
const maxReaperInterval = time.Minute

// LoadControlPlane reads and validates the control plane's settings.
func LoadControlPlane(getenv func(string) string) (ControlPlane, error) {
	r := &reader{getenv: getenv}
	c := ControlPlane{
		DatabaseURL:          r.required("DATABASE_URL"),
		ListenAddr:           r.string("WRENN_CP_LISTEN_ADDR", ":8000"),
		JWTSecret:            []byte(r.required("WRENN_JWT_SECRET")),
		JWTTTL:               r.duration("WRENN_JWT_TTL", 24*time.Hour),
		HostTimeout:          r.duration("WRENN_HOST_TIMEOUT", 90*time.Second),
		HostMonitorInterval:  r.duration("WRENN_HOST_MONITOR_INTERVAL", 10*time.Second),
		ReaperInterval:       r.duration("WRENN_REAPER_INTERVAL", time.Second),
		RegistrationTokenTTL: r.duration("WRENN_REGISTRATION_TOKEN_TTL", time.Hour),
		HostCredentialTTL:    r.duration("WRENN_HOST_CREDENTIAL_TTL", 24*time.Hour),
		AuthRateLimit:        r.int("WRENN_AUTH_RATE_LIMIT", 10),
		TrustedProxies:       r.prefixes("WRENN_TRUSTED_PROXIES"),
		LoginMaxFailures:     r.int("WRENN_LOGIN_MAX_FAILURES", 5),
		LoginLockout:         r.duration("WRENN_LOGIN_LOCKOUT", time.Minute),
		BootstrapToken:       r.string("WRENN_BOOTSTRAP_TOKEN", ""),
		Signup:               strings.ToLower(r.string("WRENN_SIGNUP", SignupOpen)),
		CookieSecure:         r.bool("WRENN_COOKIE_SECURE", false),
		DashboardDir:         r.string("WRENN_DASHBOARD_DIR", ""),
		AutoMigrate:          r.bool("WRENN_AUTO_MIGRATE", true),
		ProxyDomain:          strings.ToLower(strings.TrimSpace(r.string("WRENN_PROXY_DOMAIN", ""))),
		AgentAllowedCIDRs:    r.prefixList(agentaddr.EnvVar),
		ImageRegistries:      registryList(r.string("WRENN_IMAGE_REGISTRIES", strings.Join(imagepull.DefaultRegistries, ","))),
		ImageRegistryCIDRs:   r.prefixList("WRENN_IMAGE_REGISTRY_CIDRS"),

		QuotaRunningCapsules:   r.intIn("WRENN_QUOTA_RUNNING_CAPSULES", 20, 0, 1<<30),
		QuotaVCPUs:             r.intIn("WRENN_QUOTA_VCPUS", 40, 0, 1<<30),
		QuotaMemoryMB:          r.intIn("WRENN_QUOTA_MEMORY_MB", 81920, 0, 1<<40),
		QuotaDiskMB:            r.intIn("WRENN_QUOTA_DISK_MB", 512000, 0, 1<<40),
		QuotaPausedCapsules:    r.intIn("WRENN_QUOTA_PAUSED_CAPSULES", 100, 0, 1<<30),
		QuotaSnapshots:         r.intIn("WRENN_QUOTA_SNAPSHOTS", 200, 0, 1<<30),
		QuotaConcurrentCreates: r.intIn("WRENN_QUOTA_CONCURRENT_CREATES", 10, 0, 1<<30),
		LogLevel:               r.logLevel("WRENN_LOG_LEVEL"),
		LogFormat:              r.logFormat("WRENN_LOG_FORMAT"),
	}
	if r.err != nil {
		return ControlPlane{}, r.err
	}
	switch {
	case getenv("WRENN_TRUST_PROXY") != "":
		return ControlPlane{}, fmt.Errorf("config: WRENN_TRUST_PROXY is gone: unset it and list your proxies' networks in WRENN_TRUSTED_PROXIES (e.g. WRENN_TRUSTED_PROXIES=10.0.0.0/8)")
	case len(c.JWTSecret) < 32:
		return ControlPlane{}, fmt.Errorf("config: WRENN_JWT_SECRET must be at least 32 bytes (got %d); generate one with `openssl rand -hex 32`", len(c.JWTSecret))
	case c.JWTTTL > maxJWTTTL:
		return ControlPlane{}, fmt.Errorf("config: WRENN_JWT_TTL=%s: at most %s", c.JWTTTL, maxJWTTTL)
	case c.HostMonitorInterval > c.HostTimeout:
		return ControlPlane{}, fmt.Errorf("config: WRENN_HOST_MONITOR_INTERVAL=%s must not exceed WRENN_HOST_TIMEOUT=%s", c.HostMonitorInterval, c.HostTimeout)
	case c.ReaperInterval < 100*time.Millisecond || c.ReaperInterval > maxReaperInterval:
		return ControlPlane{}, fmt.Errorf("config: WRENN_REAPER_INTERVAL=%s: must be from 100ms to %s", c.ReaperInterval, maxReaperInterval)
	case c.AuthRateLimit < 1:
		return ControlPlane{}, fmt.Errorf("config: WRENN_AUTH_RATE_LIMIT=%d: must be at least 1", c.AuthRateLimit)
	case c.LoginMaxFailures < 1:
		return ControlPlane{}, fmt.Errorf("config: WRENN_LOGIN_MAX_FAILURES=%d: must be at least 1", c.LoginMaxFailures)
	case c.LoginLockout > 24*time.Hour:
		return ControlPlane{}, fmt.Errorf("config: WRENN_LOGIN_LOCKOUT=%s: at most 24h", c.LoginLockout)
	case c.BootstrapToken != "" && len(c.BootstrapToken) < 32:
		// The length only: the error must not quote a secret.
		return ControlPlane{}, fmt.Errorf("config: WRENN_BOOTSTRAP_TOKEN must be at least 32 bytes (got %d); generate one with `openssl rand -hex 32`", len(c.BootstrapToken))
	case c.Signup != SignupOpen && c.Signup != SignupClosed:
		return ControlPlane{}, fmt.Errorf("config: WRENN_SIGNUP=%q: must be open or closed", c.Signup)
	}
	if _, err := imagepull.New(c.ImageRegistries, nil, 1); err != nil {
		return ControlPlane{}, fmt.Errorf("config: WRENN_IMAGE_REGISTRIES: %w", err)
	}
	if err := checkProxyDomain(c.ProxyDomain); err != nil {
		return ControlPlane{}, fmt.Errorf("config: WRENN_PROXY_DOMAIN=%q: %w", c.ProxyDomain, err)
	}
	if c.DashboardDir != "" {
		if fi, err := os.Stat(c.DashboardDir); err != nil || !fi.IsDir() {
			return ControlPlane{}, fmt.Errorf("config: WRENN_DASHBOARD_DIR=%s: not a directory; unset it to serve the built-in dashboard", c.DashboardDir)
		}
	}
	return c, nil
}

// prefixList reads a comma-separated list of CIDRs (agentaddr.ParseList).
func (r *reader) prefixList(name string) []netip.Prefix {
	v := r.getenv(name)
	l, err := agentaddr.ParseList(v)
	if err != nil {
		r.fail(name, v, err.Error())
		return nil
	}
	return l
}

// checkProxyDomain accepts "" or a host name of DNS labels (letters,
// digits, hyphens; at most 63 bytes each, 253 in all), optionally followed
// by :port: what a wildcard record *.{domain} can serve.
func checkProxyDomain(d string) error {
	if d == "" {
		return nil
	}
	host := d
	if h, port, err := net.SplitHostPort(d); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("the port after the host name must be 1-65535")
		}
		host = h
	}
	if strings.Contains(host, "://") || strings.ContainsAny(host, "/*:[]") {
		return fmt.Errorf("give a host name such as wrenn-ports.example.com (no scheme, path or wildcard)")
	}
	if len(host) > 253 {
		return fmt.Errorf("the host name is longer than 253 bytes")
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a DNS label of 1-63 bytes that neither starts nor ends with a hyphen", label)
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return fmt.Errorf("%q holds %q: only letters, digits and hyphens make a host name", label, r)
			}
		}
	}
	return nil
}

// registryList splits WRENN_IMAGE_REGISTRIES; "none" is no registry.
func registryList(v string) []string {
	if strings.EqualFold(strings.TrimSpace(v), "none") {
		return nil
	}
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
