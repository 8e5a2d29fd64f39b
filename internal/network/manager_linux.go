package network

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/egress"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Manager sets up and tears down capsule networks. It is safe for concurrent
// use; calls for the same capsule id are serialized, calls for different
// ids run in parallel. Cleanup is meant for agent start, before capsules are
// created, but is safe alongside Setup: it never removes a slot that is
// being set up.
type Manager struct {
	cfg Config
	log *slog.Logger
	fw  *firewall
	dns *forwarder

	// idLocks serialize Setup and Teardown per capsule id (striped, so the
	// set of locks stays fixed).
	idLocks [64]sync.Mutex

	mu sync.Mutex
	// slots holds every allocation, including those still being set up.
	slots map[string]*entry
	// used maps a slot index to the capsule holding it.
	used map[int]string
	// next is where the search for a free index starts: handing out
	// addresses round-robin keeps a freed address unused for as long as
	// possible, so stale conntrack entries and neighbour caches of a
	// destroyed capsule never meet its successor.
	next int
}

type entry struct {
	slot Slot
	// ready reports whether Setup finished; Lookup shows only ready slots.
	ready bool
	// policy is the capsule's egress policy, normalized, and rules its
	// compiled form; both nil for the open policy.
	policy *egress.Policy
	rules  *egress.Rules
}

// New validates cfg, loads the allocations persisted in cfg.StateDir,
// enables IPv4 forwarding and (re)installs the firewall table with the
// entries of those allocations. Calling it again on the same state, as an
// agent restart does, gives the same result.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating network state directory: %w", err)
	}
	if err := prepareNetnsDir(cfg.NetnsDir); err != nil {
		return nil, err
	}
	recs, err := readRecords(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("loading network allocations: %w", err)
	}
	m := &Manager{
		cfg:   cfg,
		log:   cfg.Logger,
		slots: make(map[string]*entry, len(recs)),
		used:  make(map[int]string, len(recs)),
	}
	for _, r := range recs {
		if !validID(r.CapsuleID) {
			return nil, fmt.Errorf("loading network allocations: invalid capsule id %q", r.CapsuleID)
		}
		idx, ok := slotIndex(cfg.CIDR, r.Address)
		if !ok {
			// Moving a live capsule to another address would cut it off;
			// the operator has to decide.
			return nil, fmt.Errorf("loading network allocations: capsule %s has address %s, not a capsule address in %s (was the CIDR changed?)",
				r.CapsuleID, r.Address, cfg.CIDR)
		}
		if other, dup := m.used[idx]; dup {
			return nil, fmt.Errorf("loading network allocations: capsules %s and %s both hold %s", other, r.CapsuleID, r.Address)
		}
		nsDir := cfg.legacyDir
		if r.Netns != "" {
			nsDir = filepath.Dir(r.Netns)
		}
		slot := newSlot(cfg.CIDR, cfg.Prefix, nsDir, r.CapsuleID, idx)
		if r.Netns != "" && r.Netns != slot.NetnsPath {
			return nil, fmt.Errorf("loading network allocations: capsule %s has namespace %s, want one named %s", r.CapsuleID, r.Netns, slot.NetnsName)
		}
		e := &entry{slot: slot, ready: true}
		if r.Policy != nil {
			if e.policy, e.rules, err = compilePolicy(*r.Policy); err != nil {
				return nil, fmt.Errorf("loading network allocations: capsule %s: %w", r.CapsuleID, err)
			}
		}
		m.used[idx] = r.CapsuleID
		m.slots[r.CapsuleID] = e
		m.next = max(m.next, idx+1)
	}
	// An upgraded agent finds the namespaces of the capsules it re-adopts
	// where the older one mounted them; they move, the capsules keep running.
	for _, e := range m.slots {
		if filepath.Dir(e.slot.NetnsPath) == cfg.NetnsDir {
			continue
		}
		moved, err := m.moveNetns(e.slot)
		if err != nil {
			return nil, fmt.Errorf("moving the namespace of capsule %s into %s: %w", e.slot.CapsuleID, cfg.NetnsDir, err)
		}
		e.slot = moved
	}
	if err := enableForwarding(); err != nil {
		return nil, err
	}
	fw, err := newFirewall(cfg.Prefix, cfg.CIDR, cfg.OpenRanges)
	if err != nil {
		return nil, err
	}
	dns, err := startForwarder(m, fw, cfg.DNSPort, cfg.DNSUpstreams)
	if err != nil {
		return nil, err
	}
	fw.dnsPort = dns.port
	if err := fw.install(m.policedSlots); err != nil {
		dns.close()
		return nil, err
	}
	m.fw = fw
	m.dns = dns
	m.log.Info("capsule network ready", "cidr", cfg.CIDR, "prefix", cfg.Prefix,
		"table", tableName(cfg.Prefix), "allocations", len(recs),
		"dns_port", dns.port, "dns_upstreams", dns.upstreamList())
	return m, nil
}

// moveNetns mounts the namespace of slot, mounted somewhere other than
// Config.NetnsDir by an older agent, in Config.NetnsDir instead, records
// the new place and removes the old one. The namespace is the same, so the
// capsule using it notices nothing. A slot whose namespace is gone only gets
// the new place recorded: it is rebuilt there when it is next set up.
func (m *Manager) moveNetns(slot Slot) (Slot, error) {
	moved := slot
	moved.NetnsPath = filepath.Join(m.cfg.NetnsDir, slot.NetnsName)
	fd, found, err := openNetns(slot.NetnsPath)
	if err != nil {
		return slot, err
	}
	if found {
		defer unix.Close(fd)
		// What an earlier, interrupted move may have left.
		if err := deleteNetns(moved.NetnsPath); err != nil {
			return slot, err
		}
		if err := attachNetns(fd, moved.NetnsPath); err != nil {
			return slot, err
		}
	}
	var policy *egress.Policy
	m.mu.Lock()
	if e, ok := m.slots[slot.CapsuleID]; ok {
		policy = e.policy
	}
	m.mu.Unlock()
	if err := writeRecord(m.cfg.StateDir, recordOf(moved, policy)); err != nil {
		return slot, err
	}
	if err := deleteNetns(slot.NetnsPath); err != nil {
		// The capsule is already on its new file; Cleanup tries again.
		m.log.Warn("removing a capsule namespace's old file", "capsule_id", slot.CapsuleID, "netns", slot.NetnsPath, "error", err)
	}
	m.log.Info("moved capsule namespace", "capsule_id", slot.CapsuleID, "from", slot.NetnsPath, "to", moved.NetnsPath, "found", found)
	return moved, nil
}

// recordOf is what persists of slot with policy (nil: the open one).
func recordOf(slot Slot, policy *egress.Policy) record {
	return record{CapsuleID: slot.CapsuleID, Address: slot.Address.Addr(), Netns: slot.NetnsPath, Policy: policy}
}

func enableForwarding() error {
	cur, err := os.ReadFile(ipForwardPath)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("enabling IPv4 forwarding: %w", err)
	}
	return nil
}

// policedSlots returns every allocation with its policy's rules.
func (m *Manager) policedSlots() []policed {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]policed, 0, len(m.slots))
	for _, e := range m.slots {
		out = append(out, policed{slot: e.slot, rules: e.rules})
	}
	return out
}

// allSlots returns every allocation, those being set up included.
func (m *Manager) allSlots() []Slot {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Slot, 0, len(m.slots))
	for _, e := range m.slots {
		out = append(out, e.slot)
	}
	return out
}

func (m *Manager) lockID(id string) func() {
	h := fnv.New32a()
	h.Write([]byte(id))
	l := &m.idLocks[h.Sum32()%uint32(len(m.idLocks))]
	l.Lock()
	return l.Unlock
}

// Device is the interface in every capsule namespace that sandboxes use
// (Config.Device).
func (m *Manager) Device() string { return m.cfg.Device() }

// Sandbox is the address and gateway slot's sandbox configures itself
// with (Config.Sandbox).
func (m *Manager) Sandbox(slot Slot) (netip.Prefix, netip.Addr) { return m.cfg.Sandbox(slot) }

// Lookup returns the slot of capsuleID once Setup has completed for it.
func (m *Manager) Lookup(capsuleID string) (Slot, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.slots[capsuleID]
	if !ok || !e.ready {
		return Slot{}, false
	}
	return e.slot, true
}

// Setup gives capsuleID a network and returns it. The allocation is
// persisted before anything is created, so a crash leaves state that
// Cleanup or a later Setup finds; an error undoes everything this call did.
// For a capsule that already has a slot — an agent re-adopting it after a
// restart — Setup repairs what is missing and returns the same slot.
// It returns ErrNoAddress when the pool is full.
func (m *Manager) Setup(ctx context.Context, capsuleID string) (Slot, error) {
	if !validID(capsuleID) {
		return Slot{}, fmt.Errorf("setting up network: invalid capsule id %q", capsuleID)
	}
	if err := ctx.Err(); err != nil {
		return Slot{}, err
	}
	defer m.lockID(capsuleID)()

	m.mu.Lock()
	if e, ok := m.slots[capsuleID]; ok {
		slot := e.slot
		m.mu.Unlock()
		if err := m.repair(slot); err != nil {
			return Slot{}, fmt.Errorf("setting up network for %s: %w", capsuleID, err)
		}
		m.markReady(capsuleID)
		return slot, nil
	}
	idx, ok := m.freeIndex()
	if !ok {
		m.mu.Unlock()
		return Slot{}, ErrNoAddress
	}
	slot := newSlot(m.cfg.CIDR, m.cfg.Prefix, m.cfg.NetnsDir, capsuleID, idx)
	m.used[idx] = capsuleID
	m.slots[capsuleID] = &entry{slot: slot}
	m.next = idx + 1
	m.mu.Unlock()

	if err := m.setup(slot); err != nil {
		if uerr := m.destroy(slot); uerr != nil {
			// Keep the allocation: its address may still be in use by what
			// could not be removed, and Teardown or Cleanup can retry.
			m.log.Error("undoing capsule network", "capsule_id", capsuleID, "error", uerr)
			return Slot{}, fmt.Errorf("setting up network for %s: %w", capsuleID, err)
		}
		if ferr := m.free(slot); ferr != nil {
			m.log.Error("freeing capsule address", "capsule_id", capsuleID, "error", ferr)
		}
		return Slot{}, fmt.Errorf("setting up network for %s: %w", capsuleID, err)
	}
	m.markReady(capsuleID)
	m.log.Info("capsule network set up", "capsule_id", capsuleID,
		"address", slot.Address.Addr(), "iface", slot.HostIface, "netns", slot.NetnsName)
	return slot, nil
}

// Renew readies the network of a capsule that already has a slot for a new
// sandbox of it, with the same address, and returns the slot. runsc takes
// the capsule end's addresses and routes away when its netstack starts, so
// a capsule restored from saved state needs them put back. When the
// namespace or veth is gone the whole slot is rebuilt. A capsule without a
// slot is an error.
func (m *Manager) Renew(ctx context.Context, capsuleID string) (Slot, error) {
	if err := ctx.Err(); err != nil {
		return Slot{}, err
	}
	defer m.lockID(capsuleID)()
	slot, ok := m.Lookup(capsuleID)
	if !ok {
		return Slot{}, fmt.Errorf("renewing network of %s: no address allocated", capsuleID)
	}
	if m.slotIntact(slot) {
		if err := m.fw.add(slot); err != nil {
			return Slot{}, fmt.Errorf("renewing network of %s: %w", capsuleID, err)
		}
		if err := configureHost(slot); err != nil {
			return Slot{}, fmt.Errorf("renewing network of %s: %w", capsuleID, err)
		}
		if err := m.configurePeer(slot); err != nil {
			return Slot{}, fmt.Errorf("renewing network of %s: %w", capsuleID, err)
		}
		return slot, nil
	}
	if err := m.destroy(slot); err != nil {
		return Slot{}, fmt.Errorf("renewing network of %s: %w", capsuleID, err)
	}
	if err := m.build(slot); err != nil {
		return Slot{}, fmt.Errorf("renewing network of %s: %w", capsuleID, err)
	}
	return slot, nil
}

// FreeSlots is how many more capsules the pool has addresses for.
func (m *Manager) FreeSlots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(0, slotCount(m.cfg.CIDR)-len(m.used))
}

// freeIndex finds an unused slot index, round-robin from m.next. m.mu held.
func (m *Manager) freeIndex() (int, bool) {
	n := slotCount(m.cfg.CIDR)
	for i := range n {
		idx := (m.next + i) % n
		if _, taken := m.used[idx]; !taken {
			return idx, true
		}
	}
	return 0, false
}

func (m *Manager) markReady(capsuleID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.slots[capsuleID]; ok {
		e.ready = true
	}
}

// free forgets slot's allocation, on disk first: a crash in between leaves
// an allocation Cleanup removes, never a live capsule without one.
func (m *Manager) free(slot Slot) error {
	if err := removeRecord(m.cfg.StateDir, slot.CapsuleID); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.slots, slot.CapsuleID)
	if m.used[slot.Index] == slot.CapsuleID {
		delete(m.used, slot.Index)
	}
	return nil
}

// setup persists slot and builds its network from nothing.
func (m *Manager) setup(slot Slot) error {
	if err := writeRecord(m.cfg.StateDir, recordOf(slot, nil)); err != nil {
		return err
	}
	return m.build(slot)
}

// build creates the firewall entry, namespace and veth pair of slot,
// replacing leftovers of an earlier, interrupted attempt.
func (m *Manager) build(slot Slot) error {
	// The entry goes in first so the veth never exists without it (packets
	// from a capsule veth without an entry are dropped anyway).
	if err := m.fw.add(slot); err != nil {
		return err
	}
	if err := deleteNetns(slot.NetnsPath); err != nil {
		return err
	}
	if err := deleteLink(slot.HostIface); err != nil {
		return err
	}
	if err := createNetns(slot.NetnsPath); err != nil {
		return err
	}
	ns, err := netns.GetFromPath(slot.NetnsPath)
	if err != nil {
		return fmt.Errorf("opening netns: %w", err)
	}
	defer ns.Close()

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: slot.HostIface},
		PeerName:      PeerIface,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", slot.HostIface, err)
	}
	if err := configureHost(slot); err != nil {
		return err
	}

	return m.configurePeer(slot)
}

// configurePeer readies the inside of slot's namespace for the manager's
// peer: lo up, the veth end with the capsule's address and default route,
// and for PeerTap the tap routed to it (routeTap). Each step is a no-op
// when already done.
func (m *Manager) configurePeer(slot Slot) error {
	ns, err := netns.GetFromPath(slot.NetnsPath)
	if err != nil {
		return fmt.Errorf("opening netns: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("opening netlink in netns: %w", err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo in netns: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	eth, err := h.LinkByName(PeerIface)
	if err != nil {
		return fmt.Errorf("finding %s in netns: %w", PeerIface, err)
	}
	if err := h.AddrReplace(eth, &netlink.Addr{IPNet: ipNet(slot.Address)}); err != nil {
		return fmt.Errorf("adding capsule address: %w", err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bringing %s up: %w", PeerIface, err)
	}
	route := &netlink.Route{
		LinkIndex: eth.Attrs().Index,
		Gw:        net.IP(slot.HostAddr.AsSlice()),
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
	}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("adding default route: %w", err)
	}
	if m.cfg.Peer == PeerTap {
		return routeTap(ns, h, slot, m.cfg.TapGroup)
	}
	return nil
}

// configureHost gives the host end of slot's veth its address and brings it
// up; both are no-ops when already done.
func configureHost(slot Slot) error {
	link, err := netlink.LinkByName(slot.HostIface)
	if err != nil {
		return fmt.Errorf("finding veth %s: %w", slot.HostIface, err)
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(slot.HostAddr, 30))}); err != nil {
		return fmt.Errorf("adding gateway address: %w", err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bringing veth %s up: %w", slot.HostIface, err)
	}
	return nil
}

// repair makes an existing slot complete again. When the namespace and both
// veth ends are there it touches only the host side: runsc removes the
// addresses from the capsule end once its netstack owns them, and putting
// them back would make the kernel answer the capsule's packets alongside
// gVisor. When a piece is gone the capsule has no working network, so it is
// rebuilt from scratch with the same address.
func (m *Manager) repair(slot Slot) error {
	if m.slotIntact(slot) {
		if err := m.fw.add(slot); err != nil {
			return err
		}
		return configureHost(slot)
	}
	m.log.Warn("rebuilding incomplete capsule network", "capsule_id", slot.CapsuleID, "netns", slot.NetnsName)
	if err := m.destroy(slot); err != nil {
		return err
	}
	return m.build(slot)
}

// slotIntact reports whether slot's namespace is mounted and holds the
// capsule end of a veth whose host end is slot.HostIface (and, for
// PeerTap, the tap).
func (m *Manager) slotIntact(slot Slot) bool {
	if !netnsMounted(slot.NetnsPath) {
		return false
	}
	host, err := netlink.LinkByName(slot.HostIface)
	if err != nil {
		return false
	}
	ns, err := netns.GetFromPath(slot.NetnsPath)
	if err != nil {
		return false
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return false
	}
	defer h.Close()
	peer, err := h.LinkByName(PeerIface)
	if err != nil {
		return false
	}
	if m.cfg.Peer == PeerTap {
		if _, err := h.LinkByName(TapIface); err != nil {
			return false
		}
	}
	// A veth's parent index is its peer's index.
	return peer.Attrs().ParentIndex == host.Attrs().Index
}

// destroy removes the firewall entry, veth pair and namespace of slot,
// whichever of them exist.
func (m *Manager) destroy(slot Slot) error {
	var errs []error
	if err := m.fw.remove(slot); err != nil {
		errs = append(errs, err)
	}
	if err := deleteLink(slot.HostIface); err != nil {
		errs = append(errs, err)
	}
	if err := deleteNetns(slot.NetnsPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteLink removes the host interface name (and with a veth, its peer);
// a missing one is not an error.
func deleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if _, ok := errors.AsType[netlink.LinkNotFoundError](err); ok {
			return nil
		}
		return fmt.Errorf("finding link %s: %w", name, err)
	}
	// ENODEV: the link went away meanwhile, as the host end of a veth does
	// when the kernel finishes destroying the namespace of its peer.
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting link %s: %w", name, err)
	}
	return nil
}

// Teardown removes capsuleID's firewall entry, veth pair and namespace, then
// frees its address. A capsule without a slot is not an error. When a piece
// cannot be removed the address stays allocated so that it is not handed to
// another capsule while still in use; calling Teardown again retries.
func (m *Manager) Teardown(ctx context.Context, capsuleID string) error {
	if !validID(capsuleID) {
		return fmt.Errorf("tearing down network: invalid capsule id %q", capsuleID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	defer m.lockID(capsuleID)()
	m.mu.Lock()
	e, ok := m.slots[capsuleID]
	m.mu.Unlock()
	if !ok {
		// Without an allocation only the namespace name is known.
		name := netnsName(m.cfg.Prefix, capsuleID)
		for _, dir := range []string{m.cfg.NetnsDir, m.cfg.legacyDir} {
			if err := deleteNetns(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("tearing down network for %s: %w", capsuleID, err)
			}
		}
		return nil
	}
	if err := m.destroy(e.slot); err != nil {
		return fmt.Errorf("tearing down network for %s: %w", capsuleID, err)
	}
	if err := m.fw.removePolicy(e.slot); err != nil {
		return fmt.Errorf("tearing down network for %s: %w", capsuleID, err)
	}
	if err := m.free(e.slot); err != nil {
		return fmt.Errorf("tearing down network for %s: %w", capsuleID, err)
	}
	m.log.Info("capsule network torn down", "capsule_id", capsuleID, "address", e.slot.Address.Addr())
	return nil
}

// Cleanup tears down every allocation for which keep returns false, then
// removes what no allocation accounts for: namespaces and host veths named
// with the prefix, and firewall entries. The agent calls it at start with
// keep reporting whether the capsule still runs.
func (m *Manager) Cleanup(ctx context.Context, keep func(capsuleID string) bool) error {
	var errs []error
	for _, s := range m.allSlots() {
		if keep(s.CapsuleID) {
			continue
		}
		if err := m.Teardown(ctx, s.CapsuleID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	p := ifacePrefix(m.cfg.Prefix)
	// The legacy directory too: an older agent's leftovers, and the old
	// files of namespaces New moved but could not remove.
	for _, dir := range []string{m.cfg.NetnsDir, m.cfg.legacyDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			errs = append(errs, fmt.Errorf("listing %s: %w", dir, err))
		}
		for _, de := range entries {
			id, ok := strings.CutPrefix(de.Name(), p)
			path := filepath.Join(dir, de.Name())
			if !ok || m.netnsInUse(id, path) {
				continue
			}
			if err := deleteNetns(path); err != nil {
				errs = append(errs, fmt.Errorf("removing leftover netns %s: %w", path, err))
				continue
			}
			m.log.Info("removed leftover netns", "netns", path)
		}
	}

	links, err := listLinks()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		rest, ok := strings.CutPrefix(name, p)
		if !ok {
			continue
		}
		if idx, err := strconv.Atoi(rest); err == nil && m.indexUsed(idx) {
			continue
		}
		// deleteLink, not LinkDel: deleting a veth named with the prefix
		// may already have taken its peer, also named so, with it.
		if err := deleteLink(name); err != nil {
			errs = append(errs, fmt.Errorf("removing leftover veth: %w", err))
			continue
		}
		m.log.Info("removed leftover veth", "iface", name)
	}

	// Reinstalling drops every entry no allocation accounts for, and puts
	// back rules someone may have changed by hand.
	if err := m.fw.install(m.policedSlots); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleaning up capsule networks: %w", err)
	}
	return nil
}

// listLinks lists the host's links, retrying when the dump was interrupted
// by a concurrent change, as setting up or tearing down capsules causes.
func listLinks() ([]netlink.Link, error) {
	var err error
	for range 10 {
		var links []netlink.Link
		links, err = netlink.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, err
}

// netnsInUse reports whether path is the namespace file of capsuleID's slot.
func (m *Manager) netnsInUse(capsuleID, path string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.slots[capsuleID]
	return ok && e.slot.NetnsPath == path
}

func (m *Manager) indexUsed(idx int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.used[idx]
	return ok
}

// Close stops the DNS forwarder and releases the manager's resources. It
// removes nothing: capsules keep their networks across agent restarts
// (their DNS queries go unanswered until the next agent starts its own).
func (m *Manager) Close() error {
	m.dns.close()
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// Uninstall tears down every capsule network of this manager and removes its
// firewall table: what an agent leaves when it is taken off a host for good
// (and what tests call at their end). The manager is unusable afterwards.
func (m *Manager) Uninstall(ctx context.Context) error {
	if err := m.Cleanup(ctx, func(string) bool { return false }); err != nil {
		return err
	}
	m.dns.close()
	if err := m.fw.uninstall(); err != nil {
		return err
	}
	return releaseNetnsDir(m.cfg.NetnsDir)
}
