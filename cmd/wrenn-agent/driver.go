package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/wrenn-dev/wrenn/internal/agent"
	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/firecracker"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
)

// openDriver builds the runtime driver cfg.Runtime names (WRENN_RUNTIME,
// "auto" already resolved by config.LoadAgent). This is the one place that
// knows the drivers: the agent library works on runtime.Driver only.
func openDriver(cfg config.Agent, log *slog.Logger) (runtime.Driver, error) {
	switch cfg.Runtime {
	case config.RuntimeGVisor:
		return gvisor.New(gvisor.Config{
			Runsc:        cfg.Runsc,
			StateDir:     filepath.Join(cfg.Dir, "runsc"),
			ConsoleBytes: cfg.CapsuleConsoleBytes,
			PidsLimit:    cfg.CapsulePids,
			NoFile:       cfg.CapsuleNoFile,
			HostFDs:      cfg.CapsuleHostFDs,
			Logger:       log,
		})
	case config.RuntimeFirecracker:
		return firecracker.New(firecracker.Config{
			Firecracker:   cfg.FirecrackerBin,
			Jailer:        cfg.FirecrackerJailer,
			UIDBase:       cfg.FirecrackerUIDBase,
			UIDCount:      config.FirecrackerUIDCount,
			GID:           cfg.FirecrackerGID,
			Kernel:        filepath.Join(cfg.Dir, "kernels", "vmlinux"),
			StateDir:      filepath.Join(cfg.Dir, "firecracker"),
			DiffSnapshots: cfg.FirecrackerDiffSnapshots,
			Logger:        log,
		})
	}
	return nil, fmt.Errorf("unknown runtime %q", cfg.Runtime)
}

// openCapsules opens the host's capsules on the driver cfg names.
func openCapsules(ctx context.Context, cfg config.Agent, log *slog.Logger) (*agent.Capsules, error) {
	driver, err := openDriver(cfg, log)
	if err != nil {
		return nil, err
	}
	return agent.OpenCapsulesFromConfig(ctx, cfg, driver, log)
}
