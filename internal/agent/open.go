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
)

// OpenCapsulesFromConfig builds the network manager that cfg names and
// opens the capsule manager on it and driver, the runtime driver cfg.Runtime
// names (built by the caller: the agent core knows no driver). The caller
// closes the returned manager's network with (*Capsules).Close.
func OpenCapsulesFromConfig(ctx context.Context, cfg config.Agent, driver runtime.Driver, log *slog.Logger) (*Capsules, error) {
	if driver == nil {
		return nil, errors.New("opening capsules: no runtime driver")
	}
	if driver.Name() != cfg.Runtime {
		return nil, fmt.Errorf("opening capsules: driver %q, but WRENN_RUNTIME resolved to %q", driver.Name(), cfg.Runtime)
	}
	nm, err := network.New(ctx, network.Config{
		CIDR:     cfg.CapsuleCIDR,
		StateDir: filepath.Join(cfg.Dir, "network"),
		NetnsDir: filepath.Join(cfg.Dir, "netns"),
		Prefix:   cfg.NetworkPrefix,
		Peer:     network.Peer(runtime.PeerOf(driver)),
		TapGroup: runtime.TapGroupOf(driver),
		Logger:   log,

		DNSUpstreams: cfg.CapsuleDNSUpstreams,
		OpenRanges:   cfg.CapsuleOpenRanges,
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
