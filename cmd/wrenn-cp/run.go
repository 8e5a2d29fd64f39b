package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/version"
)

const usage = `usage:
  wrenn-cp [serve]                 run the control plane (applies pending migrations unless WRENN_AUTO_MIGRATE=false)
  wrenn-cp migrate up|down|status  apply all, roll back the last, or list migrations (DATABASE_URL)
  wrenn-cp version                 print the version
`

// run is the whole program; main only calls it, so tests can too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		if len(args) > 0 {
			return fmt.Errorf("serve takes no arguments (settings come from the environment)\n%s", usage)
		}
		cfg, err := config.LoadControlPlane(getenv)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, config.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr))
	case "migrate":
		return migrate(ctx, args, getenv, stdout)
	case "version":
		_, err := fmt.Fprintln(stdout, version.Version)
		return err
	case "help", "-h", "-help", "--help":
		_, err := io.WriteString(stdout, usage)
		return err
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}
