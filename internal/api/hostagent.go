package api

import (
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/rules"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// This file serves the agent's side of docs/host-protocol.md: registration,
// heartbeats and credential refresh.

// runtimes are the runtime drivers an agent may report.
var runtimes = map[string]bool{"gvisor": true, "firecracker": true}

// maxLabelLen bounds the free-text fields an agent reports.
const maxLabelLen = 255

// Bounds of the sizes an agent reports, well inside the database's
// columns (cpus is an integer, 32 bits): an agent, perhaps a team's own
// machine, cannot make a registration or heartbeat fail in the database.
const (
	maxHostCPUs = 1 << 16
	maxHostMB   = 1 << 40 // an exbibyte
	// maxHostAddresses bounds free_addresses: a /8 of /30s.
	maxHostAddresses = 1 << 22
)

// credentialsJSON is what registration and refresh hand to the agent.
type credentialsJSON = hostproto.Credentials

// newCredentials returns a fresh credential and refresh token for an agent
// and their stored forms.
func (s *server) newCredentials() (credentialsJSON, store.Secret, store.Secret, error) {
	cred, credHash, err := auth.NewToken(auth.HostCredentialPrefix)
	if err != nil {
		return credentialsJSON{}, store.Secret{}, store.Secret{}, err
	}
	refresh, refreshHash, err := auth.NewToken(auth.RefreshTokenPrefix)
	if err != nil {
		return credentialsJSON{}, store.Secret{}, store.Secret{}, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	j := credentialsJSON{
		Credential:          cred,
		CredentialExpiresAt: now.Add(s.cfg.HostCredentialTTL),
		RefreshToken:        refresh,
		CPPublicKey:         hostauth.EncodePublicKey(s.signer.PublicKey()),
	}
	return j, store.Secret{Hash: credHash, ExpiresAt: j.CredentialExpiresAt},
		store.Secret{Hash: refreshHash, ExpiresAt: now.Add(refreshTokenTTL)}, nil
}

// validAddress reports whether addr is host:port with a non-empty host and a
// port in 1..65535.
func validAddress(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || strings.ContainsAny(host, "/ ") {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535
}

func (s *server) handleRegister() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decode[hostproto.RegisterRequest](w, r, maxBody)
		if err != nil {
			return err
		}
		// Fields are checked before the token, so that a bad request does
		// not use the token up.
		switch {
		case req.Token == "":
			return errorf(codeInvalid, "token is required")
		case req.Address == "":
			return errorf(codeInvalid, "address is required: the host:port the control plane reaches the agent at")
		case !validAddress(req.Address):
			return errorf(codeInvalid, "address %q is not host:port", req.Address)
		case req.Arch == "" || len(req.Arch) > 32:
			return errorf(codeInvalid, "arch is required (e.g. amd64)")
		case req.CPUs < 1 || req.CPUs > maxHostCPUs:
			return errorf(codeInvalid, "cpus must be between 1 and %d", maxHostCPUs)
		case req.MemoryMB < 1 || req.MemoryMB > maxHostMB:
			return errorf(codeInvalid, "memory_mb must be between 1 and %d", maxHostMB)
		case req.DiskMB < 1 || req.DiskMB > maxHostMB:
			return errorf(codeInvalid, "disk_mb must be between 1 and %d", maxHostMB)
		case !runtimes[req.Runtime]:
			return errorf(codeInvalid, "runtime must be gvisor or firecracker, not %q", req.Runtime)
		case len(req.AgentVersion) > maxLabelLen || len(req.Hostname) > maxLabelLen:
			return errorf(codeInvalid, "agent_version and hostname must be at most %d bytes", maxLabelLen)
		case !hosttls.ValidPin(req.TLSPin):
			return errorf(codeInvalid, "tls_spki_sha256 is required: the base64 SHA-256 of the agent's TLS public key (an agent older than TLS links must be upgraded)")
		}
		if err := s.checkAgentAddress(r.Context(), req.Address); err != nil {
			return err
		}
		invalid := errorf(codeInvalidRegistrationToken, "registration token is unknown, used, expired or superseded; issue a new one with POST /v1/hosts/{id}/token")
		if !auth.HasPrefix(req.Token, auth.RegistrationTokenPrefix) {
			return invalid
		}
		creds, cred, refresh, err := s.newCredentials()
		if err != nil {
			return err
		}
		h, err := s.store.Register(r.Context(), auth.HashToken(req.Token), store.HostSpec{
			Address: req.Address, Arch: req.Arch, CPUs: req.CPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB,
			Runtime: req.Runtime, AgentVersion: req.AgentVersion, Hostname: req.Hostname, TLSPin: req.TLSPin,
		}, cred, refresh, store.Event{
			Action: "host.register", IP: s.clientIP(r),
			Metadata: map[string]any{"address": req.Address, "runtime": req.Runtime, "hostname": req.Hostname},
		})
		if errors.Is(err, store.ErrNotFound) {
			return invalid
		}
		if err != nil {
			return err
		}
		// A registration may bring another address and key.
		s.envds.forgetHost(h.ID)
		s.log.InfoContext(r.Context(), "host registered", "host_id", h.ID, "address", h.Address, "runtime", h.Runtime)
		encode(w, http.StatusCreated, hostproto.RegisterResponse[hostJSON]{Host: toHostJSON(h), Credentials: creds})
		return nil
	})
}

// heartbeatInterval is what the control plane asks agents to heartbeat at:
// 30 s, or less when the timeout is short enough that 30 s would make a
// live host look dead.
func (s *server) heartbeatInterval() int {
	return max(1, min(30, int(math.Floor(s.cfg.HostTimeout.Seconds()/3))))
}

func (s *server) handleHeartbeat() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		invalid := errorf(codeInvalidHostCredential, "host credential is unknown, expired or revoked; refresh it or register again")
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !auth.HasPrefix(tok, auth.HostCredentialPrefix) {
			return invalid
		}
		hostID, err := s.store.HostByCredential(r.Context(), auth.HashToken(tok))
		if errors.Is(err, store.ErrNotFound) {
			return invalid
		}
		if err != nil {
			return err
		}
		if id, err := uuid.Parse(r.PathValue("id")); err != nil || id.String() != hostID {
			return errorf(codeForbidden, "this credential belongs to another host")
		}
		req, err := decode[hostproto.HeartbeatRequest](w, r, maxHeartbeatBody)
		if err != nil {
			return err
		}
		switch {
		case req.FreeCPUs == nil || req.FreeMemoryMB == nil || req.FreeDiskMB == nil:
			return errorf(codeInvalid, "free_cpus, free_memory_mb and free_disk_mb are required")
		case *req.FreeCPUs < 0 || *req.FreeMemoryMB < 0 || *req.FreeDiskMB < 0:
			return errorf(codeInvalid, "free_cpus, free_memory_mb and free_disk_mb must not be negative")
		case *req.FreeCPUs > maxHostCPUs || *req.FreeMemoryMB > maxHostMB || *req.FreeDiskMB > maxHostMB:
			return errorf(codeInvalid, "free_cpus must be at most %d, free_memory_mb and free_disk_mb at most %d", maxHostCPUs, maxHostMB)
		}
		if req.TLSPin != "" && !hosttls.ValidPin(req.TLSPin) {
			return errorf(codeInvalid, "tls_spki_sha256 must be the base64 SHA-256 of the agent's TLS public key")
		}
		if req.FreeAddresses != nil && (*req.FreeAddresses < 0 || *req.FreeAddresses > maxHostAddresses) {
			return errorf(codeInvalid, "free_addresses must be between 0 and %d", maxHostAddresses)
		}
		if req.Address != "" && !validAddress(req.Address) {
			return errorf(codeInvalid, "address must be host:port with a port in 1..65535, not %q", req.Address)
		}
		if req.Address != "" {
			if err := s.checkAgentAddress(r.Context(), req.Address); err != nil {
				return err
			}
		}
		if len(req.Templates) > maxHostTemplates {
			return errorf(codeInvalid, "templates: at most %d names, not %d", maxHostTemplates, len(req.Templates))
		}
		for i, name := range req.Templates {
			if !rules.ValidTemplateName(name) {
				return errorf(codeInvalid, "templates[%d]: %q is not a template name (%s)", i, name, rules.TemplateNameRule)
			}
		}
		if len(req.Snapshots) > hostproto.SnapshotPage {
			return errorf(codeInvalid, "snapshots: at most %d names per heartbeat, not %d", hostproto.SnapshotPage, len(req.Snapshots))
		}
		for i, name := range req.Snapshots {
			if !rules.ValidTemplateName(name) {
				return errorf(codeInvalid, "snapshots[%d]: %q is not a template name (%s)", i, name, rules.TemplateNameRule)
			}
		}
		if req.TLSPin != "" {
			// A host registered before agents served TLS has no key
			// pinned: the first one its authenticated heartbeat brings
			// is pinned. Once pinned, only a new registration changes it.
			pinned, err := s.store.PinHostKey(r.Context(), hostID, req.TLSPin,
				store.Event{Action: "host.tls_pin", IP: s.clientIP(r)})
			if errors.Is(err, store.ErrPinMismatch) {
				return errorf(codeTLSKeyMismatch, "the agent's TLS key is not the one pinned for this host; register the host again (POST /v1/hosts/{id}/token, then wrenn-agent --register) to pin a new key")
			}
			if errors.Is(err, store.ErrNotFound) {
				return invalid
			}
			if err != nil {
				return err
			}
			if pinned {
				s.log.InfoContext(r.Context(), "host TLS key pinned from its heartbeat", "host_id", hostID)
			}
		}
		reported := make([]store.ReportedCapsule, 0, len(req.Capsules))
		for _, c := range req.Capsules {
			reported = append(reported, store.ReportedCapsule{ID: c.ID, Status: c.Status})
		}
		capsules, err := json.Marshal(req.Capsules)
		if err != nil {
			return err
		}
		if req.Capsules == nil {
			capsules = []byte("[]")
		}
		revived, err := s.store.Heartbeat(r.Context(), hostID, store.Capacity{
			FreeCPUs: *req.FreeCPUs, FreeMemoryMB: *req.FreeMemoryMB, FreeDiskMB: *req.FreeDiskMB, Capsules: capsules,
			Templates: dedupe(req.Templates), FreeAddresses: req.FreeAddresses,
		})
		if errors.Is(err, store.ErrNotFound) {
			return invalid
		}
		if err != nil {
			return err
		}
		if revived {
			s.log.InfoContext(r.Context(), "host back online", "host_id", hostID)
		}
		if req.Address != "" {
			prev, changed, err := s.store.SetHostAddress(r.Context(), hostID, req.Address,
				store.Event{Action: "host.address", IP: s.clientIP(r)})
			if err != nil {
				return err
			}
			if changed {
				s.log.InfoContext(r.Context(), "host address changed", "host_id", hostID, "from", prev, "to", req.Address)
				// Other replicas find it within hostAddressTTL.
				s.envds.forgetHost(hostID)
				s.portHosts.forget(hostID)
			}
		}
		// The agent's own list settles what the control plane could not
		// know, and what the host holds that nothing owns is removed.
		// Snapshot directories come a page per heartbeat; each page is
		// checked for orphans on its own.
		dirs := append(slices.Clip(req.Templates), req.Snapshots...)
		if err := s.capsules.Reconcile(r.Context(), hostID, reported, dirs); err != nil {
			return err
		}
		resp := hostproto.HeartbeatResponse{Status: store.HostOnline, HeartbeatIntervalSec: s.heartbeatInterval()}
		if len(req.Snapshots) == hostproto.SnapshotPage {
			resp.SnapshotsAfter = req.Snapshots[len(req.Snapshots)-1]
		}
		encode(w, http.StatusOK, resp)
		return nil
	})
}

func (s *server) handleRefresh() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decode[hostproto.RefreshRequest](w, r, maxBody)
		if err != nil {
			return err
		}
		if req.RefreshToken == "" {
			return errorf(codeInvalid, "refresh_token is required")
		}
		invalid := errorf(codeInvalidRefreshToken, "refresh token is unknown, used, expired or revoked; register the host again")
		if !auth.HasPrefix(req.RefreshToken, auth.RefreshTokenPrefix) {
			return invalid
		}
		creds, cred, refresh, err := s.newCredentials()
		if err != nil {
			return err
		}
		hostID, err := s.store.Refresh(r.Context(), auth.HashToken(req.RefreshToken), cred, refresh,
			store.Event{Action: "host.refresh", IP: s.clientIP(r)})
		if errors.Is(err, store.ErrNotFound) {
			return invalid
		}
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, hostproto.RefreshResponse{HostID: hostID, Credentials: creds})
		return nil
	})
}
