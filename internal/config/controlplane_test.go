package config

import (
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadControlPlane(t *testing.T) {
	base := map[string]string{
		"DATABASE_URL":     "postgres://localhost/wrenn",
		"WRENN_JWT_SECRET": strings.Repeat("s", 32),
	}
	c, err := LoadControlPlane(envOf(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListenAddr != ":8000" || c.JWTTTL != 24*time.Hour || c.HostTimeout != 90*time.Second ||
		c.HostMonitorInterval != 10*time.Second || c.RegistrationTokenTTL != time.Hour ||
		c.HostCredentialTTL != 24*time.Hour || c.AuthRateLimit != 10 || !c.AutoMigrate || c.TrustedProxies != nil ||
		c.LoginMaxFailures != 5 || c.LoginLockout != time.Minute || c.BootstrapToken != "" || c.Signup != "open" ||
		c.ReaperInterval != time.Second {
		t.Errorf("defaults: got %+v", c)
	}

	tests := []struct {
		name    string
		set     map[string]string
		wantErr string // "" means valid
	}{
		{"no database", map[string]string{"DATABASE_URL": ""}, "DATABASE_URL is required"},
		{"no secret", map[string]string{"WRENN_JWT_SECRET": ""}, "WRENN_JWT_SECRET is required"},
		{"short secret", map[string]string{"WRENN_JWT_SECRET": "short"}, "WRENN_JWT_SECRET must be at least 32 bytes"},
		{"long jwt ttl", map[string]string{"WRENN_JWT_TTL": "800h"}, "WRENN_JWT_TTL"},
		{"bad duration", map[string]string{"WRENN_HOST_TIMEOUT": "soon"}, "WRENN_HOST_TIMEOUT"},
		{"interval above timeout", map[string]string{"WRENN_HOST_TIMEOUT": "2s", "WRENN_HOST_MONITOR_INTERVAL": "5s"}, "WRENN_HOST_MONITOR_INTERVAL"},
		{"short timeout for tests", map[string]string{"WRENN_HOST_TIMEOUT": "2s", "WRENN_HOST_MONITOR_INTERVAL": "500ms"}, ""},
		{"reaper interval too short", map[string]string{"WRENN_REAPER_INTERVAL": "10ms"}, "WRENN_REAPER_INTERVAL"},
		{"reaper interval too long", map[string]string{"WRENN_REAPER_INTERVAL": "2m"}, "WRENN_REAPER_INTERVAL"},
		{"reaper interval not a duration", map[string]string{"WRENN_REAPER_INTERVAL": "often"}, "WRENN_REAPER_INTERVAL"},
		{"fast reaper", map[string]string{"WRENN_REAPER_INTERVAL": "250ms"}, ""},
		{"zero rate limit", map[string]string{"WRENN_AUTH_RATE_LIMIT": "0"}, "WRENN_AUTH_RATE_LIMIT"},
		{"bad log level", map[string]string{"WRENN_LOG_LEVEL": "loud"}, "WRENN_LOG_LEVEL"},
		{"bad log format", map[string]string{"WRENN_LOG_FORMAT": "xml"}, "WRENN_LOG_FORMAT"},
		{"json debug", map[string]string{"WRENN_LOG_FORMAT": "JSON", "WRENN_LOG_LEVEL": "debug"}, ""},
		{"bad bool", map[string]string{"WRENN_AUTO_MIGRATE": "maybe"}, "WRENN_AUTO_MIGRATE"},
		{"secure cookies", map[string]string{"WRENN_COOKIE_SECURE": "true"}, ""},
		{"old trust proxy", map[string]string{"WRENN_TRUST_PROXY": "true"}, "WRENN_TRUSTED_PROXIES"},
		{"trusted proxies", map[string]string{"WRENN_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,2001:db8::/32"}, ""},
		{"bad trusted proxy", map[string]string{"WRENN_TRUSTED_PROXIES": "10.0.0.0/8,proxy.local"}, "WRENN_TRUSTED_PROXIES"},
		{"zero login failures", map[string]string{"WRENN_LOGIN_MAX_FAILURES": "0"}, "WRENN_LOGIN_MAX_FAILURES"},
		{"long lockout", map[string]string{"WRENN_LOGIN_LOCKOUT": "48h"}, "WRENN_LOGIN_LOCKOUT"},
		{"short bootstrap token", map[string]string{"WRENN_BOOTSTRAP_TOKEN": "hunter2"}, "WRENN_BOOTSTRAP_TOKEN must be at least 32 bytes"},
		{"bootstrap token", map[string]string{"WRENN_BOOTSTRAP_TOKEN": strings.Repeat("b", 32)}, ""},
		{"signup closed", map[string]string{"WRENN_SIGNUP": "Closed"}, ""},
		{"signup invite", map[string]string{"WRENN_SIGNUP": "invite"}, "WRENN_SIGNUP"},
		{"proxy domain", map[string]string{"WRENN_PROXY_DOMAIN": "Ports.Example.com"}, ""},
		{"proxy domain with port", map[string]string{"WRENN_PROXY_DOMAIN": "localhost:8000"}, ""},
		{"proxy domain with scheme", map[string]string{"WRENN_PROXY_DOMAIN": "https://ports.example.com"}, "WRENN_PROXY_DOMAIN"},
		{"proxy domain wildcard", map[string]string{"WRENN_PROXY_DOMAIN": "*.example.com"}, "WRENN_PROXY_DOMAIN"},
		{"proxy domain bad port", map[string]string{"WRENN_PROXY_DOMAIN": "example.com:0"}, "WRENN_PROXY_DOMAIN"},
		{"proxy domain empty label", map[string]string{"WRENN_PROXY_DOMAIN": "example..com"}, "WRENN_PROXY_DOMAIN"},
		{"proxy domain underscore", map[string]string{"WRENN_PROXY_DOMAIN": "my_ports.example.com"}, "WRENN_PROXY_DOMAIN"},
		{"dashboard dir", map[string]string{"WRENN_DASHBOARD_DIR": "."}, ""},
		{"agent cidrs", map[string]string{"WRENN_AGENT_ALLOWED_CIDRS": "10.0.0.0/8, 127.0.0.1"}, ""},
		{"bad agent cidrs", map[string]string{"WRENN_AGENT_ALLOWED_CIDRS": "10.0.0.0/33"}, "WRENN_AGENT_ALLOWED_CIDRS"},
		{"missing dashboard dir", map[string]string{"WRENN_DASHBOARD_DIR": "/nonexistent/dist"}, "WRENN_DASHBOARD_DIR"},
		{"dashboard dir is a file", map[string]string{"WRENN_DASHBOARD_DIR": "controlplane_test.go"}, "WRENN_DASHBOARD_DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			for k, v := range tt.set {
				m[k] = v
			}
			_, err := LoadControlPlane(envOf(m))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got error %v, want none", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got error %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadTrustedProxies(t *testing.T) {
	c, err := LoadControlPlane(envOf(map[string]string{
		"DATABASE_URL": "x", "WRENN_JWT_SECRET": strings.Repeat("s", 32),
		"WRENN_TRUSTED_PROXIES": "10.1.2.3/8, 192.0.2.7 ,::ffff:198.51.100.0/120,2001:db8::1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::1/128"),
	}
	if !reflect.DeepEqual(c.TrustedProxies, want) {
		t.Errorf("got %v, want %v", c.TrustedProxies, want)
	}
}

func TestLoadControlPlaneHidesSecret(t *testing.T) {
	_, err := LoadControlPlane(envOf(map[string]string{"DATABASE_URL": "x", "WRENN_JWT_SECRET": "hunter2"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("got %v, want an error that does not quote the secret", err)
	}
}

// TestControlPlaneTagsMatchDefaults keeps the env/default tags, which
// .env.example and the docs are written from, true to LoadControlPlane:
// setting every variable to its tagged default changes nothing.
func TestControlPlaneTagsMatchDefaults(t *testing.T) {
	base := map[string]string{"DATABASE_URL": "postgres://localhost/wrenn", "WRENN_JWT_SECRET": strings.Repeat("s", 32)}
	want, err := LoadControlPlane(envOf(base))
	if err != nil {
		t.Fatal(err)
	}
	explicit := maps.Clone(base)
	typ := reflect.TypeFor[ControlPlane]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, def := f.Tag.Get("env"), f.Tag.Get("default")
		if name == "" || def == "" {
			t.Errorf("field %s lacks an env or default tag", f.Name)
			continue
		}
		if def != "(required)" && def != "(unset)" {
			explicit[name] = def
		}
	}
	got, err := LoadControlPlane(envOf(explicit))
	if err != nil {
		t.Fatalf("every variable at its tagged default: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tagged defaults load as %+v, want the built-in defaults %+v", got, want)
	}
}
