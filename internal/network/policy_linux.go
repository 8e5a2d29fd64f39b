package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

// compilePolicy normalizes p and compiles it; the open policy is nil, nil.
func compilePolicy(p egress.Policy) (*egress.Policy, *egress.Rules, error) {
	n, err := p.Normalize()
	if err != nil {
		return nil, nil, err
	}
	if n.IsOpen() {
		return nil, nil, nil
	}
	r, err := egress.Compile(n)
	if err != nil {
		return nil, nil, err
	}
	return &n, &r, nil
}

func samePolicy(a, b *egress.Policy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Internet == b.Internet && slices.Equal(a.Allow, b.Allow) && slices.Equal(a.Deny, b.Deny)
}

// SetPolicy makes p the egress policy of capsuleID, which must have a
// slot: it is recorded with the allocation (so that an agent restart
// installs it again before anything else) and takes effect for the next
// connection and lookup the capsule makes. Connections already open stay
// open. Setting the policy a capsule already has changes nothing; a
// changed one forgets what earlier lookups let through.
func (m *Manager) SetPolicy(ctx context.Context, capsuleID string, p egress.Policy) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	policy, rules, err := compilePolicy(p)
	if err != nil {
		return fmt.Errorf("setting egress policy of %s: %w", capsuleID, err)
	}
	defer m.lockID(capsuleID)()
	m.mu.Lock()
	e, ok := m.slots[capsuleID]
	var slot Slot
	var same bool
	if ok {
		slot, same = e.slot, samePolicy(e.policy, policy)
	}
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("setting egress policy of %s: no address allocated", capsuleID)
	}
	if same {
		return nil
	}
	if err := writeRecord(m.cfg.StateDir, recordOf(slot, policy)); err != nil {
		return fmt.Errorf("setting egress policy of %s: %w", capsuleID, err)
	}
	m.mu.Lock()
	e.policy, e.rules = policy, rules
	m.mu.Unlock()
	if err := m.fw.setPolicy(slot, rules); err != nil {
		return err
	}
	m.log.Info("capsule egress policy set", "capsule_id", capsuleID, "open", policy == nil,
		"default_deny", rules != nil && rules.DefaultDeny())
	return nil
}

// Policy returns capsuleID's egress policy, normalized (egress.Open for a
// capsule with none), and whether it has a slot.
func (m *Manager) Policy(capsuleID string) (egress.Policy, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.slots[capsuleID]
	if !ok {
		return egress.Policy{}, false
	}
	if e.policy == nil {
		return egress.Open(), true
	}
	return *e.policy, true
}

// policyOf finds the capsule whose address is addr: its slot and its
// policy's rules (nil for the open policy). ok is false for an address
// that is no capsule's.
func (m *Manager) policyOf(addr netip.Addr) (slot Slot, rules *egress.Rules, ok bool) {
	idx, ok := slotIndex(m.cfg.CIDR, addr.Unmap())
	if !ok {
		return Slot{}, nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.slots[m.used[idx]]
	if !ok || !e.ready {
		return Slot{}, nil, false
	}
	return e.slot, e.rules, true
}
