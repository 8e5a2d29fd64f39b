package network

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// openTap attaches to the tap TapIface of the namespace at nsPath, as a
// microVM's VMM does, and returns it as a file that reads and writes
// Ethernet frames.
func openTap(t *testing.T, nsPath string) *os.File {
	t.Helper()
	var fd int
	err := inNetns(nsPath, func() error {
		var err error
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(TapIface)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("attaching to %s: %v", TapIface, err)
	}
	f := os.NewFile(uintptr(fd), TapIface)
	t.Cleanup(func() { f.Close() })
	return f
}

// readFrame reads frames from tap until match accepts one, or fails the
// test after a few seconds.
func readFrame(t *testing.T, tap *os.File, what string, match func([]byte) bool) []byte {
	t.Helper()
	if err := tap.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, err := tap.Read(buf)
		if err != nil {
			t.Fatalf("waiting for %s on the tap: %v", what, err)
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// TestTapPeer checks the namespace of a PeerTap network the way a microVM
// uses it: the veth end holds the capsule's address, the tap TapAddr, and
// the namespace translates between the capsule's address and GuestAddr.
// Attached to the tap as a VMM is, the test sees the host's packet to the
// capsule's address arrive for GuestAddr (after an ARP request it
// answers), and its own packets from GuestAddr leave on the host's veth
// from the capsule's address, while one sent from any other address does
// not leave at all. Renew keeps it, Teardown leaves nothing.
func TestTapPeer(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	cfg.Peer = PeerTap
	m := newTestManager(t, cfg)
	if d := cfg.Device(); d != TapIface {
		t.Fatalf("Device() = %q, want %q", d, TapIface)
	}
	id := uuid.NewString()
	slot, err := m.Setup(context.Background(), id)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if addr, gw := m.Sandbox(slot); addr != GuestAddr || gw != TapAddr.Addr() {
		t.Errorf("Sandbox = %v via %v, want %v via %v", addr, gw, GuestAddr, TapAddr.Addr())
	}
	checkRouted(t, slot, "after Setup")

	tap := openTap(t, slot.NetnsPath)
	capsule := slot.Address.Addr().As4()
	guest := GuestAddr.Addr().As4()
	conn, err := net.Dial("udp4", net.JoinHostPort(slot.Address.Addr().String(), "9"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := []byte("to the guest " + id)
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	// The namespace asks for GuestAddr's MAC (ARP request, opcode 1).
	req := readFrame(t, tap, "the namespace's ARP request", func(f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_ARP &&
			binary.BigEndian.Uint16(f[20:]) == 1 && bytes.Equal(f[38:42], guest[:])
	})
	tapMAC, tapIP := append([]byte(nil), req[22:28]...), req[28:32]
	if !bytes.Equal(tapIP, TapAddr.Addr().AsSlice()) || !bytes.Equal(tapMAC, TapMAC) {
		t.Errorf("ARP request from %v at %v, want the tap's %v at %v", net.IP(tapIP), net.HardwareAddr(tapMAC), TapAddr.Addr(), TapMAC)
	}
	guestMAC := []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	reply := make([]byte, 0, 42)
	reply = append(reply, tapMAC...)
	reply = append(reply, guestMAC...)
	reply = binary.BigEndian.AppendUint16(reply, unix.ETH_P_ARP)
	reply = append(reply, 0, 1, 8, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
	reply = append(reply, guestMAC...)
	reply = append(reply, guest[:]...)
	reply = append(reply, tapMAC...)
	reply = append(reply, tapIP...)
	if _, err := tap.Write(reply); err != nil {
		t.Fatalf("answering the ARP request: %v", err)
	}
	// The host's UDP packet follows, to the guest's MAC and, translated,
	// to GuestAddr.
	readFrame(t, tap, "the host's UDP packet", func(f []byte) bool {
		return len(f) >= 42 && bytes.Equal(f[0:6], guestMAC) && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_IP &&
			f[23] == unix.IPPROTO_UDP && bytes.Equal(f[30:34], guest[:]) && bytes.HasSuffix(f, payload)
	})

	// Out: the guest's packets leave on the host's veth from the capsule's
	// address; a spoofed one is dropped in the namespace. The packet
	// socket sees frames before the host's firewall does.
	veth := capture(t, slot.HostIface)
	dst := [4]byte{192, 0, 2, 1} // TEST-NET-1: routed out, never answered
	spoofed := []byte("spoofed " + id)
	honest := []byte("from the guest " + id)
	for _, p := range []struct {
		src     [4]byte
		payload []byte
	}{{[4]byte{169, 254, 0, 3}, spoofed}, {capsule, spoofed}, {guest, honest}} {
		if _, err := tap.Write(udpFrame(tapMAC, guestMAC, p.src, dst, p.payload)); err != nil {
			t.Fatal(err)
		}
	}
	out := readFrame(t, veth, "the guest's packet on the host's veth", func(f []byte) bool {
		if len(f) >= 42 && bytes.Contains(f, spoofed) {
			t.Errorf("a packet the guest sent from another address left the namespace: %x", f)
		}
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_IP && bytes.HasSuffix(f, honest)
	})
	if src := out[26:30]; !bytes.Equal(src, capsule[:]) {
		t.Errorf("the guest's packet left from %v, want the capsule's %v", net.IP(src), slot.Address.Addr())
	}

	if _, err := m.Renew(context.Background(), id); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	checkRouted(t, slot, "after Renew")
	tap.Close()
	if err := m.Teardown(context.Background(), id); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if netnsMounted(slot.NetnsPath) {
		t.Errorf("namespace %s still mounted after Teardown", slot.NetnsPath)
	}
	if _, err := netlink.LinkByName(slot.HostIface); err == nil {
		t.Errorf("host veth %s left after Teardown", slot.HostIface)
	}
}

// checkRouted checks slot's PeerTap namespace: eth0 with the capsule's
// address and the tap with TapAddr and TapMAC, both up, and no tap in the
// host's namespace.
func checkRouted(t *testing.T, slot Slot, when string) {
	t.Helper()
	ns, err := netns.GetFromPath(slot.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for name, want := range map[string]netip.Prefix{PeerIface: slot.Address, TapIface: TapAddr} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("%s: %s: %v", when, name, err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("%s: %s is down", when, name)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != want.String() {
			t.Errorf("%s: %s has addresses %v, want %v", when, name, addrs, want)
		}
		if name == TapIface && l.Attrs().HardwareAddr.String() != TapMAC.String() {
			t.Errorf("%s: %s has MAC %v, want %v", when, name, l.Attrs().HardwareAddr, TapMAC)
		}
	}
	if _, ok := errors.AsType[netlink.LinkNotFoundError](func() error { _, err := netlink.LinkByName(TapIface); return err }()); !ok {
		t.Errorf("%s: a %s exists in the host's namespace", when, TapIface)
	}
}

// capture opens a packet socket on the host interface name, returning it
// as a file of the Ethernet frames the interface receives.
func capture(t *testing.T, name string) *os.File {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	proto := binary.BigEndian.Uint16([]byte{byte(unix.ETH_P_ALL >> 8), byte(unix.ETH_P_ALL)})
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(hostToNet(proto)))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: hostToNet(proto), Ifindex: l.Attrs().Index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() { f.Close() })
	return f
}

// hostToNet puts a big-endian 16-bit value in the byte order the packet
// socket calls expect (network order in a host integer).
func hostToNet(v uint16) uint16 {
	b := binary.BigEndian.AppendUint16(nil, v)
	return binary.NativeEndian.Uint16(b)
}

// udpFrame is an Ethernet frame carrying an IPv4 UDP datagram (port 9 to
// 9, no UDP checksum) from src to dst.
func udpFrame(dstMAC, srcMAC []byte, src, dst [4]byte, payload []byte) []byte {
	f := append(append(append([]byte(nil), dstMAC...), srcMAC...), 0x08, 0x00)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip = append(append(ip, src[:]...), dst[:]...)
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := []byte{0, 9, 0, 9, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	return append(append(append(f, ip...), udp...), payload...)
}

func TestConfigValidatePeer(t *testing.T) {
	cfg := Config{CIDR: testPool(), StateDir: "/x", NetnsDir: "/y", Peer: "macvtap"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted peer \"macvtap\"")
	}
	cfg.Peer = ""
	if err := cfg.Validate(); err != nil || cfg.Peer != PeerVeth || cfg.Device() != PeerIface {
		t.Errorf("empty peer: err %v, peer %q, device %q; want veth and %s", err, cfg.Peer, cfg.Device(), PeerIface)
	}
}
