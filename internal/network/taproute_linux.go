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
// is a no-op when already done.
func routeTap(ns netns.NsHandle, h *netlink.Handle, slot Slot) error {
	tap, err := h.LinkByName(TapIface)
	if _, missing := errors.AsType[netlink.LinkNotFoundError](err); missing {
		err = createTap(ns)
		if err == nil {
			tap, err = h.LinkByName(TapIface)
		}
	}
	if err != nil {
		return fmt.Errorf("creating tap %s: %w", TapIface, err)
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

// createTap creates the persistent tap TapIface in namespace ns. A tap is
// made with an ioctl on /dev/net/tun, which acts in the calling thread's
// namespace, so it runs in ns (runInNetns).
func createTap(ns netns.NsHandle) error {
	return runInNetns(ns, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: TapIface},
			Mode:      netlink.TUNTAP_MODE_TAP,
			// No packet-information header, as VMMs such as Firecracker
			// open it (they add the virtio-net header flag themselves).
			Flags: netlink.TUNTAP_NO_PI,
		})
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
