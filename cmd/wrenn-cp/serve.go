package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wrenn-dev/wrenn/internal/api"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosts"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/version"
)

// shutdownTimeout bounds how long in-flight requests get after SIGTERM.
const shutdownTimeout = 15 * time.Second

// serve runs the control plane until ctx is done.
func serve(ctx context.Context, cfg config.ControlPlane, log *slog.Logger) error {
	if cfg.AutoMigrate {
		if err := store.MigrateUp(ctx, cfg.DatabaseURL); err != nil {
			return err
		}
	} else if err := refuseIfPending(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer st.Close()
	key, err := st.SigningKey(ctx)
	if err != nil {
		return err
	}
	apiSrv := api.New(api.Deps{Store: st, Logger: log, Config: cfg, Signer: hostauth.NewSigner(key)})
	if err := apiSrv.Bootstrap(ctx); err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           apiSrv,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// HTTP/1.1, and HTTP/2 without TLS (h2c, prior knowledge) for
		// clients and TLS-terminating proxies that speak it; the port
		// proxy streams either way.
		Protocols: new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.ListenAddr, err)
	}
	// Tests and scripts that listen on port 0 read the real address here.
	log.Info("listening", "addr", ln.Addr().String(), "version", version.Version)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving HTTP: %w", err)
		}
		return nil
	})
	monitor := &hosts.Monitor{Store: st, Log: log, Interval: cfg.HostMonitorInterval, Timeout: cfg.HostTimeout}
	g.Go(func() error { return monitor.Run(gctx) })
	g.Go(func() error { return apiSrv.RunReaper(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		// Builds under way are recorded failed, with the reason.
		apiSrv.Close()
		if err != nil {
			return fmt.Errorf("shutting down HTTP server: %w", err)
		}
		return nil
	})
	return g.Wait()
}

// refuseIfPending returns an error when the database lacks migrations, so
// that a server never runs against a schema older than its code.
func refuseIfPending(ctx context.Context, url string) error {
	m, err := store.NewMigrator(url)
	if err != nil {
		return err
	}
	defer func() { _ = m.Close() }()
	pending, err := m.HasPending(ctx)
	if err != nil {
		return fmt.Errorf("checking migrations: %w", err)
	}
	if pending {
		return errors.New("database has pending migrations: run `wrenn-cp migrate up` or set WRENN_AUTO_MIGRATE=true")
	}
	return nil
}
