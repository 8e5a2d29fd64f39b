// Package imagepull fetches container images from registries, for
// templates built from an image reference ("python:3.12-slim"). It uses
// go-containerregistry's registry client and writes the image as a `docker
// save` archive, which the template build then treats as an uploaded one.
//
// The control plane pulls on a user's behalf, so what it may reach is the
// operator's choice: only the registries a Policy names, anonymously, over
// a dialer that refuses loopback, link-local, metadata and other special
// addresses (internal/agentaddr) unless the operator allows their range —
// a registry name that resolves, or redirects, somewhere inside gains
// nothing. Images are linux/amd64 and bounded in size before any layer is
// fetched.
package imagepull

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/wrenn-dev/wrenn/internal/agentaddr"
)

// DefaultRegistries are the registries a control plane pulls from unless
// its operator says otherwise (WRENN_IMAGE_REGISTRIES).
var DefaultRegistries = []string{"docker.io", "ghcr.io", "quay.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws", "registry.k8s.io"}

// Policy says where images may be pulled from, and how big they may be.
type Policy struct {
	// registries are the allowed registry names (host[:port]); insecure
	// those of them reached over plain http.
	registries []string
	insecure   []string
	addrs      *agentaddr.Policy
	maxBytes   int64
	transport  http.RoundTripper
}

// New returns the policy allowing registries — host[:port] names, or
// "http://host[:port]" for a registry served over plain http (a mirror on
// the operator's own network) — whose addresses pass the ranges of cidrs
// (agentaddr.New), for images of at most maxBytes compressed. "docker.io"
// stands for Docker Hub under all its names.
func New(registries []string, cidrs []netip.Prefix, maxBytes int64) (*Policy, error) {
	p := &Policy{addrs: agentaddr.New(cidrs), maxBytes: maxBytes}
	for _, r := range registries {
		r = strings.ToLower(strings.TrimSpace(r))
		if r == "" {
			continue
		}
		host, plain := strings.CutPrefix(r, "http://")
		if strings.ContainsAny(host, "/@?#") {
			return nil, fmt.Errorf("registry %q: want host[:port] or http://host[:port]", r)
		}
		if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
			return nil, fmt.Errorf("registry %q: %w", r, err)
		}
		if host == "docker.io" {
			p.registries = append(p.registries, name.DefaultRegistry)
		}
		p.registries = append(p.registries, host)
		if plain {
			p.insecure = append(p.insecure, host)
		}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: p.control}
	p.transport = &http.Transport{
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return p, nil
}

// Registries returns the allowed registries, for messages.
func (p *Policy) Registries() []string { return slices.Clone(p.registries) }

// control refuses connections to addresses outside the policy's ranges;
// it sees the address of each connection, after resolution and redirects.
func (p *Policy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialing %s: not an IP address and port", address)
	}
	if err := p.addrs.Allowed(ap.Addr()); err != nil {
		return fmt.Errorf("dialing %s: registry address refused (WRENN_IMAGE_REGISTRY_CIDRS): %w", address, err)
	}
	return nil
}

// Parse reads image reference ref and checks that its registry is
// allowed; the error says why not, for the person who gave it.
func (p *Policy) Parse(ref string) (name.Reference, error) {
	if len(p.registries) == 0 {
		return nil, fmt.Errorf("this control plane pulls no images (WRENN_IMAGE_REGISTRIES is none); upload the image instead")
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%q is not an image reference: %w", ref, err)
	}
	reg := r.Context().RegistryStr()
	if !slices.Contains(p.registries, reg) {
		return nil, fmt.Errorf("registry %s is not one this control plane pulls from (%s)", reg, strings.Join(p.registries, ", "))
	}
	if slices.Contains(p.insecure, reg) {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Pull fetches image ref (its linux/amd64 image when it names an index)
// into the new file dst as a `docker save` archive and returns the
// archive's size. progress is told what is fetched. A failure removes dst.
func (p *Policy) Pull(ctx context.Context, ref name.Reference, dst string, progress func(string)) (n int64, err error) {
	opts := []remote.Option{
		remote.WithContext(ctx), remote.WithTransport(p.transport), remote.WithAuth(authn.Anonymous),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}), remote.WithUserAgent("wrenn"),
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return 0, fmt.Errorf("fetching %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, fmt.Errorf("reading the layers of %s: %w", ref, err)
	}
	var total int64
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return 0, fmt.Errorf("reading the layers of %s: %w", ref, err)
		}
		total += size
	}
	if total > p.maxBytes {
		return 0, fmt.Errorf("image %s is %d bytes compressed, more than the %d this control plane takes", ref, total, p.maxBytes)
	}
	progress(fmt.Sprintf("pulling %s (%s): %d layers, %d bytes", ref, digest, len(layers), total))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(dst)
		}
	}()
	// A digest reference has no tag to record; the archive holds one
	// image either way.
	tag, ok := ref.(name.Tag)
	if !ok {
		tag = ref.Context().Tag("pulled")
	}
	if err := tarball.Write(tag, img, f); err != nil {
		return 0, fmt.Errorf("fetching %s: %w", ref, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	progress(fmt.Sprintf("pulled %s: %d bytes", ref, fi.Size()))
	return fi.Size(), nil
}
