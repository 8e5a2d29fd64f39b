package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/wrenn-dev/wrenn/internal/config"
)

// removeCapsules destroys every capsule of this host and removes the agent's
// network. It is for taking a host out of service (and for `make dev`, which
// leaves nothing behind); an ordinary stop keeps capsules running.
func removeCapsules(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.LoadAgent(getenv)
	if err != nil {
		return err
	}
	log := config.NewLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	cfg.WarmPool = 0 // nothing is to start
	caps, err := openCapsules(ctx, cfg, log)
	if err != nil {
		return err
	}
	infos, err := caps.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range infos {
		if err := caps.Destroy(ctx, c.Spec.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing capsules: %w", err)
	}
	if err := caps.Uninstall(ctx); err != nil {
		return err
	}
	log.Info("removed every capsule and the capsule network", "capsules", len(infos))
	return nil
}
