package network

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
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
// uses it: a tap bridged with the veth, no address in the namespace, and
// the host reaching the capsule's address through it — the host's ARP
// request comes out of the tap, and once a guest answers, so does the
// host's packet. Renew keeps it, Teardown leaves nothing.
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
	checkBridged := func(when string) {
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
		br, err := h.LinkByName(BridgeIface)
		if err != nil {
			t.Fatalf("%s: bridge: %v", when, err)
		}
		for _, name := range []string{PeerIface, TapIface} {
			l, err := h.LinkByName(name)
			if err != nil {
				t.Fatalf("%s: %s: %v", when, name, err)
			}
			if l.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("%s: %s is not in %s", when, name, BridgeIface)
			}
			if l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("%s: %s is down", when, name)
			}
			addrs, err := h.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				t.Fatal(err)
			}
			if len(addrs) != 0 {
				t.Errorf("%s: %s has addresses %v; the guest holds the capsule's address", when, name, addrs)
			}
		}
		if _, ok := errors.AsType[netlink.LinkNotFoundError](func() error { _, err := netlink.LinkByName(TapIface); return err }()); !ok {
			t.Errorf("%s: a %s exists in the host's namespace", when, TapIface)
		}
	}
	checkBridged("after Setup")

	tap := openTap(t, slot.NetnsPath)
	capsule := slot.Address.Addr().As4()
	conn, err := net.Dial("udp4", net.JoinHostPort(slot.Address.Addr().String(), "9"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := []byte("to the guest " + id)
	if _, err := conn.Write(payload); err != nil {
		t.Fatal(err)
	}
	// An ARP request (opcode 1) for the capsule's address, from the host.
	req := readFrame(t, tap, "the host's ARP request", func(f []byte) bool {
		return len(f) >= 42 && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_ARP &&
			binary.BigEndian.Uint16(f[20:]) == 1 && bytes.Equal(f[38:42], capsule[:])
	})
	hostMAC, hostIP := req[22:28], req[28:32]
	guestMAC := []byte{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	reply := make([]byte, 0, 42)
	reply = append(reply, hostMAC...)
	reply = append(reply, guestMAC...)
	reply = binary.BigEndian.AppendUint16(reply, unix.ETH_P_ARP)
	reply = append(reply, 0, 1, 8, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
	reply = append(reply, guestMAC...)
	reply = append(reply, capsule[:]...)
	reply = append(reply, hostMAC...)
	reply = append(reply, hostIP...)
	if _, err := tap.Write(reply); err != nil {
		t.Fatalf("answering the ARP request: %v", err)
	}
	// The host's UDP packet follows, to the guest's MAC.
	readFrame(t, tap, "the host's UDP packet", func(f []byte) bool {
		return len(f) >= 42 && bytes.Equal(f[0:6], guestMAC) && binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_IP &&
			f[23] == unix.IPPROTO_UDP && bytes.Equal(f[30:34], capsule[:]) && bytes.HasSuffix(f, payload)
	})

	if _, err := m.Renew(context.Background(), id); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	checkBridged("after Renew")
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
