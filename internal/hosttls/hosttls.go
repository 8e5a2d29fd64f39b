// Package hosttls is the TLS of the control plane's calls to agents.
//
// Each agent generates a key pair and a self-signed certificate of its own
// the first time it starts, and keeps them in $WRENN_DIR/agent-tls.pem
// (mode 0600). It serves only TLS with it. At registration (and, for hosts
// registered before, in heartbeats until one is pinned) the agent tells the
// control plane the SHA-256 of its certificate's public key (SPKI); the
// control plane stores that pin with the host and accepts, on every
// connection to that agent, only a certificate with that very key. No
// certificate authority is involved: the registration token, which only an
// admin hands out, is what vouches for the key.
package hosttls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// File is the name, under WRENN_DIR, of the agent's key and certificate
// (PEM, key first).
const File = "agent-tls.pem"

// Identity is an agent's TLS key pair and the pin the control plane knows
// it by.
type Identity struct {
	Cert tls.Certificate
	// Pin is the base64 (standard, padded) SHA-256 of the certificate's
	// SubjectPublicKeyInfo.
	Pin string
}

// PinOf returns the pin of a DER-encoded certificate.
func PinOf(der []byte) (string, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", fmt.Errorf("pinning certificate: %w", err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// ValidPin reports whether s has the form of a pin: base64 of 32 bytes.
func ValidPin(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(b) == sha256.Size && len(s) == 44
}

// Generate returns a fresh identity: an ECDSA P-256 key and a self-signed
// certificate for it. The certificate's dates are wide; the control plane
// checks the key, not the dates or names.
func Generate() (Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Identity{}, fmt.Errorf("generating agent TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return Identity{}, fmt.Errorf("generating agent TLS certificate: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "wrenn-agent"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(100, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"wrenn-agent"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return Identity{}, fmt.Errorf("generating agent TLS certificate: %w", err)
	}
	return identity(der, key)
}

func identity(der []byte, key *ecdsa.PrivateKey) (Identity, error) {
	pin, err := PinOf(der)
	if err != nil {
		return Identity{}, err
	}
	return Identity{Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Pin: pin}, nil
}

// LoadOrCreate returns the identity kept in dir, creating it (mode 0600,
// written atomically) when there is none. A file that is there but does
// not parse is an error, not replaced: replacing it would change the key
// the control plane has pinned.
func LoadOrCreate(dir string) (Identity, error) {
	path := filepath.Join(dir, File)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		id, err := Generate()
		if err != nil {
			return Identity{}, err
		}
		if err := save(path, id); err != nil {
			return Identity{}, err
		}
		return id, nil
	}
	if err != nil {
		return Identity{}, fmt.Errorf("loading agent TLS key: %w", err)
	}
	return parse(path, b)
}

func parse(path string, b []byte) (Identity, error) {
	var key *ecdsa.PrivateKey
	var der []byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return Identity{}, fmt.Errorf("loading agent TLS key from %s: %w", path, err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return Identity{}, fmt.Errorf("loading agent TLS key from %s: %T is not an ECDSA key", path, k)
			}
			key = ek
		case "CERTIFICATE":
			der = blk.Bytes
		}
	}
	if key == nil || der == nil {
		return Identity{}, fmt.Errorf("loading agent TLS key from %s: want a PRIVATE KEY and a CERTIFICATE block", path)
	}
	id, err := identity(der, key)
	if err != nil {
		return Identity{}, fmt.Errorf("loading agent TLS key from %s: %w", path, err)
	}
	if _, err := tls.X509KeyPair(pemCert(der), pemKey(key)); err != nil {
		return Identity{}, fmt.Errorf("loading agent TLS key from %s: key and certificate do not match: %w", path, err)
	}
	return id, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(key *ecdsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
}

// save writes id to path with mode 0600: a temporary file, fsynced, then
// renamed over path, so that a crash leaves the old file or the new one.
func save(path string, id Identity) error {
	key, ok := id.Cert.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("saving agent TLS key: %T is not an ECDSA key", id.Cert.PrivateKey)
	}
	data := append(pemKey(key), pemCert(id.Cert.Certificate[0])...)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+File+".*")
	if err != nil {
		return fmt.Errorf("saving agent TLS key: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("saving agent TLS key: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("saving agent TLS key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("saving agent TLS key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving agent TLS key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving agent TLS key: %w", err)
	}
	return nil
}

// ServerConfig is the agent's TLS: its own certificate, TLS 1.3 only.
// The HTTP server adds h2 and http/1.1 to the protocols it offers.
func ServerConfig(id Identity) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{id.Cert}, MinVersion: tls.VersionTLS13}
}

// ErrPinMismatch is the handshake error when an agent's key is not the one
// pinned for its host.
var ErrPinMismatch = errors.New("agent's TLS key is not the one pinned for this host")

// ClientConfig is the TLS of a connection to the agent whose key is pinned
// as pin: any other key fails the handshake with ErrPinMismatch. Names,
// dates and issuers are not looked at; the pinned key is the identity.
func ClientConfig(pin string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard verification wants a certificate authority; it is
		// replaced by the check of the pinned key below.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection checks the pinned key.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate", ErrPinMismatch)
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if base64.StdEncoding.EncodeToString(sum[:]) != pin {
				return ErrPinMismatch
			}
			return nil
		},
	}
}

// Protocols chooses what a Transport speaks to an agent.
type Protocols int

// Protocols of a Transport: HTTP/2 and HTTP/1.1 (ALPN picks, HTTP/2 when
// the agent offers it), only HTTP/2 (client streams need it), or only
// HTTP/1.1 (large file transfers are faster over it).
const (
	AnyHTTP Protocols = iota
	HTTP2Only
	HTTP1Only
)

// Transport returns an HTTP transport to the agent whose key is pinned as
// pin (ClientConfig), dialling with dial (nil: a plain net.Dialer). It
// never asks for compressed answers, so nothing is inflated before the
// caller's limits see it.
func Transport(pin string, dial func(ctx context.Context, network, addr string) (net.Conn, error), p Protocols) *http.Transport {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(p != HTTP2Only)
	protocols.SetHTTP2(p != HTTP1Only)
	return &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     ClientConfig(pin),
		Protocols:           protocols,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
}
