// Package agent is wrenn-agent, the program that runs on every sandbox host:
// it registers the host with the control plane, keeps proving it is alive
// with heartbeats (refreshing its credential when the control plane asks),
// and serves the RPC API that only the control plane may call.
//
// A Server holds the agent's configuration and state; Capsules (capsules.go)
// runs the host's capsules through a runtime driver and the network manager,
// and the control plane reaches their envd through the agent's envd proxy.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
)

// shutdownTimeout bounds how long in-flight RPCs may take to finish after
// the agent is asked to stop.
const shutdownTimeout = 10 * time.Second

// Server is a running host agent. It is safe for concurrent use.
type Server struct {
	// snapshotsAfter is where the next heartbeat's page of snapshot
	// directories starts, as the control plane last answered.
	snapshotsAfter atomic.Pointer[string]
	cfg            config.Agent
	log            *slog.Logger
	cp             *cpClient
	hostID         string

	// capsules runs this host's capsules; nil for an agent that runs none.
	capsules *Capsules

	// verifier checks control-plane call tokens. A credential refresh
	// that brings a new control-plane key sets it on this same verifier.
	verifier *hostauth.Verifier

	// tls is the agent's key pair, which the control plane has pinned
	// (internal/hosttls); the agent serves only TLS with it.
	tls hosttls.Identity

	// address, when set, is sent with every heartbeat: where the control
	// plane is to reach this agent from now on (see AnnounceAddress).
	address string

	mu   sync.Mutex
	cred Credential // the latest credential, as saved on disk
}

// AnnounceAddress makes the agent tell the control plane, with each
// heartbeat, that it is reached at addr (ip:port, checked by
// ValidateAddress) instead of the address it registered with. Call it
// before Run.
func (s *Server) AnnounceAddress(addr string) { s.address = addr }

// NewServer returns a Server for the host that cred identifies, running the
// capsules of caps (nil: the agent serves HostInfo only). Its TLS key pair
// is the one in cfg.Dir, made there if there is none (hosttls.LoadOrCreate).
func NewServer(cfg config.Agent, cred Credential, caps *Capsules, log *slog.Logger) (*Server, error) {
	pub, err := hostauth.DecodePublicKey(cred.CPPublicKey)
	if err != nil {
		return nil, fmt.Errorf("creating agent: %w", err)
	}
	id, err := hosttls.LoadOrCreate(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("creating agent: %w", err)
	}
	return &Server{
		tls:      id,
		cfg:      cfg,
		log:      log.With("host_id", cred.HostID),
		cp:       newCPClient(cfg.CPURL),
		hostID:   cred.HostID,
		verifier: hostauth.NewVerifier(pub, cred.HostID),
		cred:     cred,
		capsules: caps,
	}, nil
}

// HostID returns the id the control plane knows this host by.
func (s *Server) HostID() string { return s.hostID }

func (s *Server) credential() Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cred
}

// Run serves RPCs on ln and heartbeats until ctx is done, then shuts the RPC
// server down gracefully. It returns nil after a requested stop.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.Serve(ctx, ln) })
	g.Go(func() error {
		s.heartbeatLoop(ctx)
		return nil
	})
	return g.Wait()
}

// TLSPin is the pin of the agent's TLS key, which it sends the control
// plane at registration and in heartbeats.
func (s *Server) TLSPin() string { return s.tls.Pin }

// Serve answers RPCs from the control plane on ln until ctx is done, over
// TLS only, with the agent's own key (the one the control plane pinned).
// Both HTTP/1.1 and HTTP/2 are spoken: Connect's unary calls work over
// either, streams need HTTP/2.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler:           s.Handler(),
		Protocols:         protocols,
		TLSConfig:         hosttls.ServerConfig(s.tls),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("serving control-plane RPCs over TLS", "tls_spki_sha256", s.tls.Pin, "addr", ln.Addr().String())

	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving RPCs: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Long streams (terminals, exec streams through the envd proxy)
		// may outlast the grace period; a stop was asked for, so they are
		// cut rather than failing the stop.
		s.log.Warn("closing connections still open after the shutdown grace period", "error", err)
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving RPCs: %w", err)
	}
	return nil
}
