package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/wrenn-dev/wrenn/internal/config"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
)

// ValidateAddress reports whether address is something the control plane
// can dial: host:port with a non-empty host and a port from 1 to 65535.
// Checking here spares a registration token, which is single use, on an
// address the control plane would refuse anyway.
func ValidateAddress(address string) error {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("address %q: must be host:port, like 10.0.0.5:50051", address)
	}
	if host == "" {
		return fmt.Errorf("address %q: the host is missing; give an address the control plane can reach, like 10.0.0.5:50051", address)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", address)
	}
	return nil
}

// Register exchanges a registration token for a host credential: it sends
// this machine's specs and the address the control plane should call it on,
// and saves the answer in cfg.Dir. An existing credential file is replaced;
// holding a valid registration token is what authorises that.
//
// A token the control plane refuses yields an error wrapping
// ErrRegistrationTokenRejected.
func Register(ctx context.Context, cfg config.Agent, token, address string, log *slog.Logger) (Credential, error) {
	if token == "" {
		return Credential{}, errors.New("registering host: the registration token is empty")
	}
	if err := ValidateAddress(address); err != nil {
		return Credential{}, fmt.Errorf("registering host: %w", err)
	}
	if err := EnsureDir(cfg.Dir); err != nil {
		return Credential{}, fmt.Errorf("registering host: %w", err)
	}
	specs, err := ReadSpecs(cfg.Dir, cfg.Runtime)
	if err != nil {
		return Credential{}, fmt.Errorf("registering host: %w", err)
	}
	// The key the agent will serve with; the control plane pins it.
	id, err := hosttls.LoadOrCreate(cfg.Dir)
	if err != nil {
		return Credential{}, fmt.Errorf("registering host: %w", err)
	}
	resp, err := newCPClient(cfg.CPURL).register(ctx, hostproto.RegisterRequest{
		Token:        token,
		Address:      address,
		Arch:         specs.Arch,
		CPUs:         specs.CPUs,
		MemoryMB:     specs.MemoryMB,
		DiskMB:       specs.DiskMB,
		Runtime:      specs.Runtime,
		AgentVersion: specs.AgentVersion,
		Hostname:     specs.Hostname,
		TLSPin:       id.Pin,
	})
	if err != nil {
		return Credential{}, err
	}
	// A key that does not parse would lock the control plane out of this
	// agent; better to fail now than to save it.
	if _, err := hostauth.DecodePublicKey(resp.CPPublicKey); err != nil {
		return Credential{}, fmt.Errorf("registering host: %w", err)
	}
	cred := Credential{
		HostID:              resp.Host.ID,
		CPURL:               cfg.CPURL,
		Credential:          resp.Credential,
		CredentialExpiresAt: resp.CredentialExpiresAt,
		RefreshToken:        resp.RefreshToken,
		CPPublicKey:         resp.CPPublicKey,
	}
	if err := SaveCredential(cfg.Dir, cred); err != nil {
		return Credential{}, fmt.Errorf("registering host: %w", err)
	}
	log.Info("host registered", "host_id", cred.HostID, "address", address,
		"arch", specs.Arch, "cpus", specs.CPUs, "memory_mb", specs.MemoryMB,
		"disk_mb", specs.DiskMB, "runtime", specs.Runtime)
	return cred, nil
}
