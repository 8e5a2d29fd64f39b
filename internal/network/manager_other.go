//go:build !linux

package network

import (
	"context"
	"errors"
	"net/netip"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

// errUnsupported is returned everywhere but Linux: capsules need Linux
// network namespaces and nftables.
var errUnsupported = errors.New("capsule networking requires Linux")

// Manager sets up and tears down capsule networks; on this platform every
// method fails.
type Manager struct{}

// New validates cfg and fails: capsule networking requires Linux.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return nil, errUnsupported
}

// Setup fails: capsule networking requires Linux.
func (m *Manager) Setup(ctx context.Context, capsuleID string) (Slot, error) {
	return Slot{}, errUnsupported
}

// Renew is not supported off Linux.
func (m *Manager) Renew(ctx context.Context, capsuleID string) (Slot, error) {
	return Slot{}, errUnsupported
}

// Device is PeerIface: there are no namespaces here.
func (m *Manager) Device() string { return PeerIface }

// Sandbox is the capsule's address and gateway: there are no taps here.
func (m *Manager) Sandbox(slot Slot) (netip.Prefix, netip.Addr) { return slot.Address, slot.HostAddr }

// FreeSlots is 0: there are no addresses here.
func (m *Manager) FreeSlots() int { return 0 }

// Lookup finds nothing.
func (m *Manager) Lookup(capsuleID string) (Slot, bool) { return Slot{}, false }

// Teardown fails: capsule networking requires Linux.
func (m *Manager) Teardown(ctx context.Context, capsuleID string) error { return errUnsupported }

// Cleanup fails: capsule networking requires Linux.
func (m *Manager) Cleanup(ctx context.Context, keep func(capsuleID string) bool) error {
	return errUnsupported
}

// Close does nothing.
func (m *Manager) Close() error { return nil }

// Uninstall is unsupported outside Linux.
func (m *Manager) Uninstall(ctx context.Context) error { return errUnsupported }

// SetPolicy fails: capsule networking requires Linux.
func (m *Manager) SetPolicy(ctx context.Context, capsuleID string, p egress.Policy) error {
	return errUnsupported
}
