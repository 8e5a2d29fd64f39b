package hosttls

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateKeepsTheKey(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, File))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", File, fi.Mode().Perm())
	}
	b, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Pin != b.Pin || !ValidPin(a.Pin) {
		t.Errorf("pins %q then %q: want the same valid pin on a second load", a.Pin, b.Pin)
	}
	if err := os.WriteFile(filepath.Join(dir, File), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir); err == nil {
		t.Error("a damaged key file was accepted (or replaced); want an error")
	}
}

// handshake connects a client with ClientConfig(pin) to a server with id
// and returns the client's handshake error.
func handshake(t *testing.T, id Identity, pin string) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(id))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, ClientConfig(pin))
	defer func() { _ = c.Close() }()
	return c.Handshake()
}

func TestClientConfigChecksThePin(t *testing.T) {
	agent, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, agent, agent.Pin); err != nil {
		t.Errorf("the pinned key: %v", err)
	}
	if err := handshake(t, other, agent.Pin); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("another key than the pinned one: got %v, want %v", err, ErrPinMismatch)
	}
	for _, bad := range []string{"", "abc", agent.Pin[:43], agent.Pin + "="} {
		if ValidPin(bad) {
			t.Errorf("ValidPin(%q) = true", bad)
		}
	}
}
