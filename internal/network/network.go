// Package network gives every capsule its own network: a network namespace,
// a veth pair to the host, an address from a per-host pool, NAT for egress,
// and a host firewall (nftables) that keeps the capsule away from the host,
// from other capsules and from private and link-local ranges while letting
// it reach the internet. What the sandbox attaches to inside the namespace
// is its peer (Config.Peer): the capsule end of the veth for gVisor, whose
// netstack takes it over, or a tap device for a microVM, routed to the
// veth with the capsule's address translated to and from the guest's fixed
// one (GuestAddr). Everything here is enforced on the host, in front of the
// veth, whichever the peer.
//
// Allocations persist in a state directory so that an agent restart
// re-adopts running capsules without reassigning a live address.
// docs/network.md describes the addressing, names and firewall rules.
package network

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
)

// DefaultPrefix names host veths, namespaces and the nftables table when
// Config.Prefix is empty.
const DefaultPrefix = "wr"

// PeerIface is the name of the capsule end of the veth pair, inside the
// capsule's namespace.
const PeerIface = "eth0"

// Peer is what a capsule's sandbox attaches to inside its namespace.
type Peer string

const (
	// PeerVeth is the capsule end of the veth pair (PeerIface) with the
	// capsule's address and default route: gVisor's netstack takes both
	// over when the sandbox starts.
	PeerVeth Peer = "veth"
	// PeerTap is a tap device (TapIface) beside the capsule end of the
	// veth, the namespace routing between them. The veth end holds the
	// capsule's address as with PeerVeth; the microVM's kernel holds
	// GuestAddr, the same in every capsule, and the namespace translates
	// the one to the other (DNAT in, SNAT out). A guest's address is part
	// of its saved memory, so a fixed one is what lets a saved VM come back
	// in another capsule, at another address; the host sees the capsule on
	// the veth exactly as with PeerVeth.
	PeerTap Peer = "tap"
)

// TapIface is the tap device of a PeerTap namespace. Its name is part of a
// microVM's saved state, so it is the same in every namespace.
const TapIface = "tap0"

// TapAddr and GuestAddr are the two ends of the link between a PeerTap
// namespace and its microVM: the tap's address, the guest's gateway, and
// the guest's own. Link-local, because they never leave the namespace:
// what goes out on the veth carries the capsule's address.
var (
	TapAddr   = netip.MustParsePrefix("169.254.0.1/30")
	GuestAddr = netip.MustParsePrefix("169.254.0.2/30")
)

// TapMAC is the tap's MAC address in every PeerTap namespace. A saved
// guest remembers its gateway's MAC (its ARP cache is in its memory), so
// the tap it finds after a restore in another namespace must have the
// same one.
var TapMAC = net.HardwareAddr{0x06, 0x00, 0xa9, 0xfe, 0x00, 0x01}

// legacyNetnsDir is where agents before Config.NetnsDir mounted capsule
// namespaces. New moves the namespaces it finds there into Config.NetnsDir,
// and Cleanup removes this manager's leftovers from it; nothing is mounted
// there any more (see netns_linux.go for why).
const legacyNetnsDir = "/run/netns"

// ifNameMax is the longest interface name Linux accepts (IFNAMSIZ - 1).
const ifNameMax = 15

// ErrNoAddress is returned by Setup when every slot of the pool is taken.
var ErrNoAddress = errors.New("address pool exhausted")

// Config configures a Manager.
type Config struct {
	// CIDR is the IPv4 pool capsule addresses come from. Each capsule takes
	// a /30 of it: .1 is the host end, .2 the capsule end.
	CIDR netip.Prefix
	// StateDir holds one JSON file per allocation; created 0700.
	StateDir string
	// NetnsDir is where capsule network namespaces are mounted, one file
	// per capsule ($WRENN_DIR/netns); created 0700 and made a private bind
	// mount of itself, so that no other program's mounts reach into it.
	NetnsDir string
	// Prefix starts the names of host veths ("<Prefix>-<index>"), namespaces
	// ("<Prefix>-<capsule id>") and the nftables table ("<Prefix>_wrenn").
	// 1 to 5 characters [a-z0-9]; DefaultPrefix when empty.
	Prefix string
	// Peer is what sandboxes attach to in their namespace; PeerVeth when
	// empty. It is the runtime's choice (see runtime.NetworkPeer).
	Peer Peer
	// TapGroup is the group that may attach to a PeerTap namespace's tap
	// without CAP_NET_ADMIN: the group Firecracker's jailer drops every
	// VM to. 0 (the zero value) means nobody but root may: the tap is
	// owned by uid 0 and has no group. gid 0 itself is never a tap group
	// (root needs none). Applied when a tap is created; a tap that exists
	// already keeps the group it was made with.
	TapGroup int
	// Logger receives one line per setup and teardown; slog.Default when nil.
	Logger *slog.Logger

	// DNSUpstreams are the resolvers the DNS forwarder asks; empty: the
	// nameservers of ResolvConf.
	DNSUpstreams []netip.AddrPort
	// ResolvConf is read for DNSUpstreams when none are given;
	// /etc/resolv.conf when empty.
	ResolvConf string
	// DNSPort is the host port the DNS forwarder listens on (UDP and
	// TCP, every address; only capsules may reach it). 0: a free port
	// the kernel picks.
	DNSPort uint16
	// OpenRanges are IPv4 ranges the fixed protections let capsules
	// reach (a package mirror on a private network, say); capsule
	// policies still apply to them.
	OpenRanges []netip.Prefix

	// legacyDir is legacyNetnsDir, or a directory of a test's.
	legacyDir string
}

// Validate reports what is wrong with c, after filling in defaults.
func (c *Config) Validate() error {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch c.Peer {
	case "":
		c.Peer = PeerVeth
	case PeerVeth, PeerTap:
	default:
		return fmt.Errorf("network peer %q: not %q or %q", c.Peer, PeerVeth, PeerTap)
	}
	if c.TapGroup < 0 || int64(c.TapGroup) >= 1<<32-1 {
		return fmt.Errorf("tap group %d: not a gid (0 for root only)", c.TapGroup)
	}
	if len(c.Prefix) > 5 {
		return fmt.Errorf("network prefix %q: longer than 5 characters", c.Prefix)
	}
	for _, r := range c.Prefix {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return fmt.Errorf("network prefix %q: only a-z and 0-9 are allowed", c.Prefix)
		}
	}
	if !c.CIDR.IsValid() {
		return errors.New("network CIDR: not set")
	}
	if !c.CIDR.Addr().Is4() {
		return fmt.Errorf("network CIDR %s: only IPv4 pools are supported", c.CIDR)
	}
	if c.CIDR.Masked() != c.CIDR {
		return fmt.Errorf("network CIDR %s: host bits set (did you mean %s?)", c.CIDR, c.CIDR.Masked())
	}
	if c.CIDR.Bits() > 30 {
		return fmt.Errorf("network CIDR %s: too small, a capsule needs a /30", c.CIDR)
	}
	// The longest host veth name belongs to the last slot.
	if name := hostIface(c.Prefix, slotCount(c.CIDR)-1); len(name) > ifNameMax {
		return fmt.Errorf("network CIDR %s: too large, interface name %s would exceed %d characters", c.CIDR, name, ifNameMax)
	}
	if c.StateDir == "" {
		return errors.New("network state directory: not set")
	}
	for _, p := range c.OpenRanges {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
			return fmt.Errorf("open range %s: not an IPv4 CIDR without host bits", p)
		}
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	switch {
	case c.NetnsDir == "":
		return errors.New("network namespace directory: not set")
	case !filepath.IsAbs(c.NetnsDir):
		return fmt.Errorf("network namespace directory %q: not an absolute path", c.NetnsDir)
	case filepath.Clean(c.NetnsDir) == legacyNetnsDir:
		return fmt.Errorf("network namespace directory %s: shared with iproute2 and other programs; use a directory of the agent's", c.NetnsDir)
	}
	c.NetnsDir = filepath.Clean(c.NetnsDir)
	if c.legacyDir == "" {
		c.legacyDir = legacyNetnsDir
	}
	return nil
}

// Device is the interface in a capsule's namespace that its sandbox uses:
// PeerIface for PeerVeth, TapIface for PeerTap.
func (c Config) Device() string {
	if c.Peer == PeerTap {
		return TapIface
	}
	return PeerIface
}

// Sandbox is the address and default gateway the sandbox of slot
// configures itself with: the capsule's own and the host end's for
// PeerVeth, GuestAddr and TapAddr for PeerTap.
func (c Config) Sandbox(slot Slot) (addr netip.Prefix, gateway netip.Addr) {
	if c.Peer == PeerTap {
		return GuestAddr, TapAddr.Addr()
	}
	return slot.Address, slot.HostAddr
}

// Slot is the network of one capsule.
type Slot struct {
	CapsuleID string
	Index     int
	// NetnsName is the name of the namespace's file, NetnsPath the file
	// (in Config.NetnsDir, or in /run/netns for a capsule an older agent
	// set up until New moves it).
	NetnsName string
	NetnsPath string
	// HostIface is the host end of the veth pair; the capsule end is
	// PeerIface inside the namespace.
	HostIface string
	// HostAddr is the host end's address and the capsule's default gateway.
	HostAddr netip.Addr
	// Address is the capsule's address with the /30 it shares with HostAddr.
	Address netip.Prefix
}

// slotCount is how many /30s the pool holds.
func slotCount(cidr netip.Prefix) int {
	return 1 << (32 - cidr.Bits() - 2)
}

// newSlot derives everything about slot index from the pool and the prefix,
// so that only the index (and where its namespace is mounted) needs to be
// persisted.
func newSlot(cidr netip.Prefix, prefix, netnsDir, capsuleID string, index int) Slot {
	base := cidr.Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(index) * 4
	addr := func(off uint32) netip.Addr {
		v := n + off
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	name := netnsName(prefix, capsuleID)
	return Slot{
		CapsuleID: capsuleID,
		Index:     index,
		NetnsName: name,
		NetnsPath: filepath.Join(netnsDir, name),
		HostIface: hostIface(prefix, index),
		HostAddr:  addr(1),
		Address:   netip.PrefixFrom(addr(2), 30),
	}
}

// slotIndex is the inverse of newSlot for a capsule address; ok is false
// when addr is not the capsule end of a slot of cidr.
func slotIndex(cidr netip.Prefix, addr netip.Addr) (int, bool) {
	if !addr.Is4() || !cidr.Contains(addr) {
		return 0, false
	}
	a, b := addr.As4(), cidr.Addr().As4()
	off := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) -
		(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	if off%4 != 2 {
		return 0, false
	}
	return int(off / 4), true
}

// ifacePrefix is what every host veth name of this manager starts with. The
// dash matters: prefixes are [a-z0-9] only, so "wr-" can never match the
// veths of a manager whose prefix is "wrx", and firewall rules matching on it
// never touch another manager's capsules.
func ifacePrefix(prefix string) string { return prefix + "-" }

func hostIface(prefix string, index int) string {
	return ifacePrefix(prefix) + strconv.Itoa(index)
}

func netnsName(prefix, capsuleID string) string {
	return ifacePrefix(prefix) + capsuleID
}

// tableName is the nftables table of a manager.
func tableName(prefix string) string { return prefix + "_wrenn" }

// validID reports whether id can be used in file and namespace names:
// capsule ids are UUIDs, this allows a little more but nothing that could
// escape a directory.
func validID(id string) bool {
	if id == "" || len(id) > 64 || id[0] == '.' || id[0] == '-' {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}
