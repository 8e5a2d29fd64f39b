package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/wrenn-dev/wrenn/internal/envd"
	"github.com/wrenn-dev/wrenn/internal/version"
)

// run parses the command line and serves until a signal stops envd.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := envd.DefaultConfig()
	fs := flag.NewFlagSet("envd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Port, "port", cfg.Port, "TCP port to listen on")
	fs.StringVar(&cfg.Host, "addr", cfg.Host, "address to listen on (default: all)")
	fs.BoolVar(&cfg.Debug, "debug", cfg.Debug, "log at debug level")
	fs.StringVar(&cfg.Hostname, "hostname", cfg.Hostname, "hostname to set when running as init")
	fs.BoolVar(&cfg.Init, "init", cfg.Init, "act as init even when not PID 1")
	fs.DurationVar(&cfg.Keepalive, "keepalive", cfg.Keepalive, "interval of keepalive events on idle process and watch streams")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "time processes get between SIGTERM and SIGKILL at shutdown")
	fs.IntVar(&cfg.BufferSize, "buffer-size", cfg.BufferSize, "per-process output replay buffer in bytes (at least 1 MiB)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, version.Version)
		return err
	}
	// An environment variable, not a flag: an envd that does not know it
	// still starts.
	if v := getenv("WRENN_ENVD_MAX_PROCS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("WRENN_ENVD_MAX_PROCS=%q: want a number of processes", v)
		}
		cfg.MaxProcs = n
	}
	if cfg.Debug || getenv("ENVD_DEBUG") == "1" {
		cfg.Debug = true
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	return envd.Serve(ctx, cfg, logger)
}
