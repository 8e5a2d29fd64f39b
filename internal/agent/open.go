package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	goruntime "runtime"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/network"
	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
)

// OpenCapsulesFromConfig builds the runtime driver and the network manager
// that cfg names and opens the capsule manager on them. The caller closes
// the returned manager's network with (*Capsules).Close.
func OpenCapsulesFromConfig(ctx context.Context, cfg config.Agent, log *slog.Logger) (*Capsules, error) {
	var driver runtime.Driver
	switch cfg.Runtime {
	case config.RuntimeGVisor:
		d, err := gvisor.New(gvisor.Config{
			Runsc:    cfg.Runsc,
			StateDir: filepath.Join(cfg.Dir, "runsc"),
			Logger:   log,
		})
		if err != nil {
			return nil, err
		}
		driver = d
	case config.RuntimeFirecracker:
		return nil, errors.New("the Firecracker driver is not part of this build yet; set WRENN_RUNTIME=gvisor")
	default:
		return nil, fmt.Errorf("unknown runtime %q", cfg.Runtime)
	}
	nm, err := network.New(ctx, network.Config{
		CIDR:     cfg.CapsuleCIDR,
		StateDir: filepath.Join(cfg.Dir, "network"),
		NetnsDir: filepath.Join(cfg.Dir, "netns"),
		Prefix:   cfg.NetworkPrefix,
		Logger:   log,
	})
	if err != nil {
		return nil, fmt.Errorf("opening capsule network: %w", err)
	}
	caps, err := OpenCapsules(ctx, CapsulesConfig{
		Dir:      cfg.Dir,
		Driver:   driver,
		Network:  nm,
		MaxVCPUs: goruntime.NumCPU(),
		WarmPool: cfg.WarmPool,
		Logger:   log,
	})
	if err != nil {
		_ = nm.Close()
		return nil, err
	}
	return caps, nil
}

// Close destroys the warm pool's waiting capsules and releases the
// manager's handles. Capsules keep running.
func (c *Capsules) Close() error {
	c.pool.close()
	return c.cfg.Network.Close()
}

// Uninstall removes the warm pool, every capsule's network and the agent's
// firewall table. Capsules must have been destroyed first.
func (c *Capsules) Uninstall(ctx context.Context) error {
	c.pool.close()
	return c.cfg.Network.Uninstall(ctx)
}
