package envd

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/envd/account"
	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/envd/files"
	"github.com/wrenn-dev/wrenn/internal/envd/process"
	"github.com/wrenn-dev/wrenn/internal/envd/sysinit"
)

// Server holds envd's state: the /init settings and the services. It is safe
// for concurrent use.
type Server struct {
	log     *slog.Logger
	cfg     Config
	isInit  bool
	table   *process.Table
	files   *files.Service
	metrics *metricsSampler

	mu       sync.RWMutex
	token    []byte // nil until /init
	defaults process.Defaults
}

// NewServer returns a server; isInit says whether envd is the capsule's init.
func NewServer(cfg Config, logger *slog.Logger, isInit bool) *Server {
	return newServer(cfg, logger, isInit, process.Cgroup{})
}

// newServer is NewServer whose processes start in the pids cgroup limit
// (none when zero).
func newServer(cfg Config, logger *slog.Logger, isInit bool, limit process.Cgroup) *Server {
	s := &Server{log: logger, cfg: cfg, isInit: isInit, metrics: &metricsSampler{}}
	s.table = process.NewTable(process.Options{
		Logger:     logger,
		BufferSize: cfg.BufferSize,
		Defaults:   s.processDefaults,
		Cgroup:     limit,
	})
	s.files = files.NewService(logger, cfg.Keepalive, func() string { return s.processDefaults().User })
	return s
}

func (s *Server) processDefaults() process.Defaults {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.defaults
}

// authorized reports whether r carries the current token.
func (s *Server) authorized(r *http.Request) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tokenIn(r)
}

// tokenIn reports whether r carries the current token, compared in constant
// time; s.mu must be held. Before /init no token is valid.
func (s *Server) tokenIn(r *http.Request) bool {
	got := r.Header.Get(envdclient.TokenHeader)
	if s.token == nil || got == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), s.token) == 1
}

// requireToken answers 401 to calls without the current token. RPC paths get
// Connect's error body, the rest envd's JSON error shape.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		const msg = "missing or invalid access token (" + envdclient.TokenHeader + ")"
		if strings.HasPrefix(r.URL.Path, "/wrenn.envd.") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]string{"code": "unauthenticated", "message": msg})
			return
		}
		files.WriteError(w, http.StatusUnauthorized, "unauthenticated", msg)
	})
}

// maxInitBody bounds the /init body.
const maxInitBody = 1 << 20

// handleInit serves POST /init: the first call needs no token; later calls
// need the current one and may rotate it.
func (s *Server) handleInit() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in envdclient.InitRequest
		// Unknown fields are ignored: a template's older envd must still
		// accept a newer agent's /init.
		decodeErr := json.NewDecoder(io.LimitReader(r.Body, maxInitBody)).Decode(&in)

		s.mu.Lock()
		defer s.mu.Unlock()
		if s.token != nil && !s.tokenIn(r) {
			files.WriteError(w, http.StatusUnauthorized, "unauthenticated", "envd is already initialized: the current access token is required")
			return
		}
		if decodeErr != nil {
			files.WriteError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("decoding init request: %v", decodeErr))
			return
		}
		if err := s.validateInit(in); err != nil {
			files.WriteError(w, http.StatusBadRequest, "invalid_argument", err.Error())
			return
		}
		if in.Hostname != "" && s.isInit {
			if err := sysinit.SetHostname(in.Hostname); err != nil {
				files.WriteError(w, http.StatusInternalServerError, "internal", err.Error())
				return
			}
		}
		first := s.token == nil
		s.token = []byte(in.AccessToken)
		// in is this request's own: its map needs no copy.
		s.defaults = process.Defaults{User: in.DefaultUser, Workdir: in.DefaultWorkdir, Env: in.EnvVars}
		// Never log the token or the variables' values.
		s.log.Info("initialized", "first", first, "default_user", in.DefaultUser, "default_workdir", in.DefaultWorkdir, "env_vars", len(in.EnvVars))
		w.WriteHeader(http.StatusNoContent)
	})
}

func (s *Server) validateInit(in envdclient.InitRequest) error {
	if in.AccessToken == "" {
		return errors.New("access_token is required")
	}
	if len(in.AccessToken) > 1024 {
		return errors.New("access_token is longer than 1024 bytes")
	}
	if err := process.CheckEnv(in.EnvVars); err != nil {
		return fmt.Errorf("env_vars: %w", err)
	}
	if in.DefaultUser != "" {
		if _, err := account.Lookup(in.DefaultUser); err != nil {
			return fmt.Errorf("default_user: %w", err)
		}
	}
	if in.DefaultWorkdir != "" && !filepath.IsAbs(in.DefaultWorkdir) {
		return fmt.Errorf("default_workdir %q is not absolute", in.DefaultWorkdir)
	}
	if len(in.Hostname) > 64 || strings.ContainsAny(in.Hostname, " /\x00") {
		return fmt.Errorf("hostname %q is not a valid hostname", in.Hostname)
	}
	return nil
}

func handleHealth() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
}

// handlePreparePause serves POST /prepare-pause: it flushes all filesystems
// so that a snapshot taken next holds every write.
func (s *Server) handlePreparePause() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		unix.Sync()
		s.log.Info("prepared for pause")
		w.WriteHeader(http.StatusNoContent)
	})
}

func (s *Server) handleMetrics() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.metrics.sample()
		if err != nil {
			s.log.Error("reading metrics", "err", err)
			files.WriteError(w, http.StatusInternalServerError, "internal", "reading metrics failed")
			return
		}
		m.Processes = len(s.table.Running())
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(m)
	})
}
