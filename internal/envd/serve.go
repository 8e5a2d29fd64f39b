package envd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/envd/process"
	"github.com/wrenn-dev/wrenn/internal/envd/sysinit"
	"github.com/wrenn-dev/wrenn/internal/version"
)

// Serve runs envd until ctx ends or it receives SIGTERM or SIGINT, then stops
// its processes (SIGTERM, then SIGKILL after cfg.ShutdownGrace) and returns
// nil. As init (PID 1, or cfg.Init) it first mounts the userland filesystems
// and sets the hostname; as PID 1 it also signals every process in the
// capsule at shutdown, not only its own.
func Serve(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("checking configuration: %w", err)
	}
	isInit := cfg.Init || os.Getpid() == 1
	// Register for the signals before anything else: as PID 1 a signal
	// without a handler is ignored.
	sigCtx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	// The processes envd starts inherit the signals it ignores, and exec
	// keeps them ignored. Started with SIGHUP ignored (under nohup, say),
	// envd would give its terminals shells that a hangup cannot end.
	// Catching SIGHUP itself, and doing nothing with it, makes them start
	// with the default instead. Nobody reads the channel: a signal that
	// finds it full is dropped, never blocked on.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	defer stop()
	if isInit {
		if err := sysinit.Mount(logger); err != nil {
			logger.Warn("some mounts failed", "err", err)
		}
		if cfg.Hostname != "" {
			if err := sysinit.SetHostname(cfg.Hostname); err != nil {
				logger.Warn("setting hostname failed", "err", err)
			}
		}
	}

	var limit process.Cgroup
	if isInit && cfg.MaxProcs > 0 {
		in, own, err := sysinit.ProcessCgroup(cfg.MaxProcs)
		if err != nil {
			logger.Warn("no process limit inside the capsule", "err", err)
		} else {
			limit = process.Cgroup{Tasks: in, Own: own}
			logger.Info("process limit", "max", cfg.MaxProcs)
		}
	}
	s := newServer(cfg, logger, isInit, limit)
	reapCtx, stopReaping := context.WithCancel(context.Background())
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		s.table.Run(reapCtx)
	}()
	defer func() {
		stopReaping()
		<-reaped
	}()

	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Addr(), err)
	}
	// Streams end when the server stops: handlers' contexts derive from this.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		Protocols:         new(http.Protocols),
		// One agent connection may carry many process streams at once.
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: 1000},
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	logger.Info("envd listening", "addr", ln.Addr().String(), "init", isInit, "pid", os.Getpid(), "version", version.Version)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serving: %w", err)
	case <-sigCtx.Done():
	}
	logger.Info("shutting down")
	s.stopProcesses()
	cancelBase()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		logger.Warn("stopping the server", "err", err)
	}
	_ = srv.Close()
	logger.Info("stopped")
	return nil
}

// stopProcesses sends SIGTERM to envd's processes (as PID 1: to every
// process), waits up to the shutdown grace for them to end, then kills what
// is left.
func (s *Server) stopProcesses() {
	pid1 := os.Getpid() == 1
	signalAll := func(sig syscall.Signal) {
		if pid1 {
			_ = unix.Kill(-1, sig) // every process in the namespace but init
			return
		}
		for _, p := range s.table.Running() {
			_ = p.Signal(sig)
		}
	}
	if !pid1 && len(s.table.Running()) == 0 {
		return
	}
	signalAll(syscall.SIGTERM)
	deadline := time.Now().Add(s.cfg.ShutdownGrace)
	for time.Now().Before(deadline) {
		if len(s.table.Running()) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.log.Warn("processes still running after the grace period: killing them", "count", len(s.table.Running()))
	signalAll(syscall.SIGKILL)
	time.Sleep(50 * time.Millisecond)
}
