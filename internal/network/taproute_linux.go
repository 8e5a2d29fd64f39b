package network

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// natTable is the nftables table inside a PeerTap namespace. It lives and
// dies with the namespace, so it shares no name space with the host's
// tables.
const natTable = "wrenn_tap"

// routeTap readies the microVM side of PeerTap namespace ns (h its netlink
// handle), whose veth end already holds slot's address: the persistent
// tap with TapAddr and TapMAC, forwarding on, and natTable translating the capsule's
// address to GuestAddr on the way in and back on the way out. Every step
// is a no-op when already done. A tap made here may be attached to by the
// members of group (createTap).
func routeTap(ns netns.NsHandle, h *netlink.Handle, slot Slot, group int) error {
	tap, err := h.LinkByName(TapIface)
	if _, missing := errors.AsType[netlink.LinkNotFoundError](err); missing {
		err = createTap(ns, group)
		if err == nil {
			tap, err = h.LinkByName(TapIface)
		}
	}
	if err != nil {
		return fmt.Errorf("creating tap %s: %w", TapIface, err)
	}
	// A tap made for another group (the agent's VMs now run in another
	// one, or with no jailer) would shut the VMM out; nothing is attached
	// to it here (a new capsule, or a paused one resuming), so it is made
	// again. The kernel reports no group as 0.
	if tt, ok := tap.(*netlink.Tuntap); ok && tt.Group != uint32(max(group, 0)) {
		if err := h.LinkDel(tap); err != nil {
			return fmt.Errorf("removing tap %s made for group %d: %w", TapIface, tt.Group, err)
		}
		if err := createTap(ns, group); err != nil {
			return fmt.Errorf("creating tap %s: %w", TapIface, err)
		}
		if tap, err = h.LinkByName(TapIface); err != nil {
			return fmt.Errorf("creating tap %s: %w", TapIface, err)
		}
	}
	if !bytes.Equal(tap.Attrs().HardwareAddr, TapMAC) {
		if err := h.LinkSetHardwareAddr(tap, TapMAC); err != nil {
			return fmt.Errorf("setting the tap's MAC: %w", err)
		}
	}
	if err := h.AddrReplace(tap, &netlink.Addr{IPNet: ipNet(TapAddr)}); err != nil {
		return fmt.Errorf("adding the tap's address: %w", err)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return fmt.Errorf("bringing %s up: %w", TapIface, err)
	}
	// /proc/sys/net shows the namespace of the thread that opens it.
	if err := runInNetns(ns, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}); err != nil {
		return fmt.Errorf("turning on forwarding in the namespace: %w", err)
	}
	return writeTapNAT(ns, slot)
}

// createTap creates the persistent tap TapIface in namespace ns, usable
// without CAP_NET_ADMIN by the members of group (0: by nobody). A tap is
// made with ioctls on /dev/net/tun, which act in the calling thread's
// namespace, so it runs in ns (runInNetns).
//
// The kernel lets a process without CAP_NET_ADMIN attach to a persistent
// tap unless the tap has an owner that is not its euid, or a group it is
// not in; a tap with neither is open to everyone. So a tap always gets one
// of the two: group alone when there is one (the VMs behind it each run
// as a uid of their own, so an owner would shut them out), else owner
// uid 0. netlink.Tuntap cannot express "group, no owner": it always sets
// both (its zero values mean root, not unset), hence the ioctls here. The
// group is set before TUNSETPERSIST, so that a failure never leaves a
// persistent tap behind with the wrong access: until then, closing the
// file descriptor removes the tap.
func createTap(ns netns.NsHandle, group int) error {
	return runInNetns(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer func() { _ = unix.Close(fd) }()
		ifr, err := unix.NewIfreq(TapIface)
		if err != nil {
			return err
		}
		// No packet-information header, as VMMs such as Firecracker open
		// it (they add the virtio-net header flag themselves).
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		if group > 0 {
			if err := unix.IoctlSetInt(fd, unix.TUNSETGROUP, group); err != nil {
				return fmt.Errorf("TUNSETGROUP %d: %w", group, err)
			}
		} else if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, 0); err != nil {
			return fmt.Errorf("TUNSETOWNER 0: %w", err)
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			return fmt.Errorf("TUNSETPERSIST: %w", err)
		}
		return nil
	})
}

// writeTapNAT (re)writes natTable in namespace ns, in one transaction:
//
//	prerouting  (dstnat): iif eth0, to the capsule's address -> dnat to GuestAddr
//	postrouting (srcnat): oif eth0, from GuestAddr           -> snat to the capsule's address
//	forward     (filter, policy drop): tap0 -> eth0 only from GuestAddr,
//	                                   eth0 -> tap0 only to GuestAddr
//
// The forward chain keeps a guest from sending as anyone else (the host's
// firewall checks the capsule's address too, on the veth).
func writeTapNAT(ns netns.NsHandle, slot Slot) error {
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return fmt.Errorf("opening nftables in the namespace: %w", err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("listing the namespace's nftables tables: %w", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: natTable}
	for _, t := range tables {
		if t.Name == natTable {
			conn.DelTable(table)
		}
	}
	conn.AddTable(table)
	capsule := slot.Address.Addr().As4()
	guest := GuestAddr.Addr().As4()

	pre := conn.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	conn.AddRule(&nftables.Rule{Table: table, Chain: pre, Exprs: concat(
		ifnameIs(expr.MetaKeyIIFNAME, PeerIface), addrIs(16, capsule),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: guest[:]},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})})

	post := conn.AddChain(&nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	conn.AddRule(&nftables.Rule{Table: table, Chain: post, Exprs: concat(
		ifnameIs(expr.MetaKeyOIFNAME, PeerIface), addrIs(12, guest),
		[]expr.Any{
			&expr.Immediate{Register: 1, Data: capsule[:]},
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})})

	drop := nftables.ChainPolicyDrop
	fwd := conn.AddChain(&nftables.Chain{Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	accept := []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	conn.AddRule(&nftables.Rule{Table: table, Chain: fwd, Exprs: concat(
		ifnameIs(expr.MetaKeyIIFNAME, TapIface), ifnameIs(expr.MetaKeyOIFNAME, PeerIface), addrIs(12, guest), accept)})
	conn.AddRule(&nftables.Rule{Table: table, Chain: fwd, Exprs: concat(
		ifnameIs(expr.MetaKeyIIFNAME, PeerIface), ifnameIs(expr.MetaKeyOIFNAME, TapIface), addrIs(16, guest), accept)})

	if err := conn.Flush(); err != nil {
		return fmt.Errorf("writing the namespace's NAT table: %w", err)
	}
	return nil
}

// ifnameIs matches the interface named exactly name (the kernel compares
// the whole IFNAMSIZ buffer, so the name is NUL-padded).
func ifnameIs(key expr.MetaKey, name string) []expr.Any {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
	}
}

// addrIs matches the IPv4 address at offset in the network header: 12 the
// source, 16 the destination.
func addrIs(offset uint32, addr [4]byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
