package network

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("capsule networking tests need root (network namespaces, nftables)")
	}
}

func randInt(n int64) int {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}

// poolSeq spreads the tests of one run over distinct /20s; the random start
// keeps runs of other packages or processes from colliding with high odds.
var poolSeq atomic.Int64

func init() { poolSeq.Store(int64(randInt(128))) }

// testPool returns a /20 inside 10.200.0.0/13.
func testPool() netip.Prefix {
	k := int(poolSeq.Add(1) % 128)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + k/16), byte((k % 16) * 16), 0}), 20)
}

// testPrefix returns a random prefix starting with "t" so that it never
// equals the default one of a real agent on the same host.
func testPrefix() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := []byte{'t', 0, 0, 0, 0}
	for i := 1; i < len(b); i++ {
		b[i] = chars[randInt(int64(len(chars)))]
	}
	return string(b)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// newTestConfig returns a config with a fresh prefix, pool and state
// directory; the cleanup registered removes everything a manager with that
// config may have left, including the nftables table.
func newTestConfig(t testing.TB) Config {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	cfg := Config{
		CIDR:     testPool(),
		StateDir: filepath.Join(dir, "network"),
		NetnsDir: filepath.Join(dir, "netns"),
		Prefix:   testPrefix(),
		Logger:   testLogger(t),
	}
	t.Cleanup(func() {
		m, err := New(context.Background(), cfg)
		if err != nil {
			t.Errorf("cleanup: New: %v", err)
			return
		}
		// Everything, the table and the namespace directory's mount too.
		if err := m.Uninstall(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return cfg
}

func newTestManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	m, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// inNetns runs fn on a thread switched into the namespace at path. Sockets
// fn creates stay in that namespace after it returns.
func inNetns(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	return runInNetns(target, fn)
}

// serve listens on addr in the namespace at nsPath ("" for the host) and
// answers every connection with "ok". It returns the address it listens on.
func serve(t *testing.T, nsPath, addr string) string {
	return serveFunc(t, nsPath, addr, func(net.Conn) string { return "ok" })
}

// serveFunc is serve answering greet(conn).
func serveFunc(t *testing.T, nsPath, addr string, greet func(net.Conn) string) string {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	}
	var err error
	if nsPath == "" {
		err = listen()
	} else {
		err = inNetns(nsPath, listen)
	}
	if err != nil {
		t.Fatalf("listening on %s in %q: %v", addr, nsPath, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greet(c))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// dialTimeout is long enough for the kernel to retransmit a lost first ARP
// request (it waits a second), which happens now and then right after a
// veth with a reused name and address comes up.
const dialTimeout = 4 * time.Second

// blockedTimeout bounds the attempts that are expected to fail.
const blockedTimeout = time.Second

// dial connects to addr from the namespace at nsPath ("" for the host) and
// reads the listener's greeting, so that a connection accepted by something
// else than serve does not count.
func dial(nsPath, addr string) error {
	got, err := dialFrom(nsPath, netip.Addr{}, addr, dialTimeout)
	if err == nil && got != "ok" {
		err = fmt.Errorf("greeting %q, want \"ok\"", got)
	}
	return err
}

// dialFrom connects to addr from the namespace at nsPath, from local
// address src if valid, and returns the greeting it reads.
func dialFrom(nsPath string, src netip.Addr, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	d := net.Dialer{Timeout: timeout}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	connect := func() (err error) {
		c, err = d.Dial("tcp4", addr)
		return err
	}
	var err error
	if nsPath == "" {
		err = connect()
	} else {
		err = inNetns(nsPath, connect)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return "", err
	}
	got, err := io.ReadAll(c)
	return string(got), err
}

// srcEntries returns the anti-spoofing entries of the manager with prefix,
// as "iface=address".
func srcEntries(t *testing.T, prefix string) map[string]bool {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatalf("opening nftables: %v", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: tableName(prefix)}
	set, err := conn.GetSetByName(table, srcSet)
	if err != nil {
		t.Fatalf("getting set: %v", err)
	}
	elems, err := conn.GetSetElements(set)
	if err != nil {
		t.Fatalf("getting set elements: %v", err)
	}
	out := map[string]bool{}
	for _, e := range elems {
		if len(e.Key) != 20 {
			t.Fatalf("set key %x: %d bytes, want 20", e.Key, len(e.Key))
		}
		iface := string(bytes.TrimRight(e.Key[:16], "\x00"))
		addr := netip.AddrFrom4([4]byte(e.Key[16:20]))
		out[iface+"="+addr.String()] = true
	}
	return out
}

func entryOf(s Slot) string { return s.HostIface + "=" + s.Address.Addr().String() }

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
