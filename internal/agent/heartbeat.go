package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
)

// errHostRejected marks a heartbeat that no retry of the same credential can
// fix: the credential was refused and so was the refresh token, or the host
// no longer exists. Only an operator re-registering the host helps.
var errHostRejected = errors.New("host rejected by the control plane")

// rejectedMessage is logged once when the control plane stops accepting this
// host; it tells the operator what to do.
const rejectedMessage = "host credential rejected by the control plane (host deleted or credential revoked); re-register with --register <new token>"

// heartbeatState is what the last heartbeat attempt ended in. Log lines are
// written when it changes, so a long outage yields one warning, not one per
// attempt.
type heartbeatState int

const (
	stateOK heartbeatState = iota
	stateFailing
	stateRejected
)

// heartbeatLoop heartbeats at once and then every interval until ctx is
// done. While the control plane cannot be reached it retries with capped,
// jittered exponential backoff; while it rejects the host it retries slowly,
// because the agent cannot fix that by itself but the operator can fix it
// on the control plane's side (for instance by restoring the database).
func (s *Server) heartbeatLoop(ctx context.Context) {
	interval := s.cfg.HeartbeatInterval
	bo := backoff{base: min(interval/4, 500*time.Millisecond), max: interval}
	state := stateOK
	var failures int
	var failingSince time.Time

	for {
		err := s.beat(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := interval
		switch {
		case err == nil:
			if state != stateOK {
				s.log.Info("heartbeat accepted again", "failed_attempts", failures,
					"outage", time.Since(failingSince).Round(time.Millisecond).String())
			}
			state, failures = stateOK, 0
			bo.reset()
		case errors.Is(err, errHostRejected):
			if state == stateOK {
				failingSince = time.Now()
			}
			if state != stateRejected {
				s.log.Error(rejectedMessage, "error", err)
			} else {
				s.log.Debug("heartbeat still rejected", "error", err)
			}
			state = stateRejected
			failures++
			wait = max(interval, time.Minute)
		default:
			if state == stateOK {
				failingSince = time.Now()
			}
			if state != stateFailing {
				s.log.Warn("heartbeat failed; retrying with backoff until it succeeds",
					"cp_url", s.cfg.CPURL, "error", err)
			} else {
				s.log.Debug("heartbeat failed again", "error", err)
			}
			state = stateFailing
			failures++
			wait = bo.next()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// beat sends one heartbeat, refreshing the credential first when the control
// plane refuses it.
func (s *Server) beat(ctx context.Context) error {
	free, err := ReadCapacity(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("sending heartbeat: %w", err)
	}
	// The capsule list is always sent, empty or not, so that the control
	// plane can reconcile from it.
	req := hostproto.HeartbeatRequest{
		FreeCPUs:     &free.FreeCPUs,
		FreeMemoryMB: &free.FreeMemoryMB,
		FreeDiskMB:   &free.FreeDiskMB,
		Capsules:     []hostproto.CapsuleReport{},
		Templates:    []string{},
		Address:      s.address,
		TLSPin:       s.tls.Pin,
	}
	if s.capsules != nil {
		infos, err := s.capsules.List(ctx)
		if err != nil {
			// Still heartbeat, with the capsules as last recorded: a
			// broken runtime should not make the host look gone.
			s.log.Warn("listing capsules for the heartbeat", "error", err)
		}
		for _, c := range infos {
			req.Capsules = append(req.Capsules, hostproto.CapsuleReport{ID: c.Spec.ID, Status: c.Status})
		}
		req.Templates, req.Snapshots, req.SnapshotsTotal = s.capsules.TemplateDirs(s.snapshotCursor(), hostproto.SnapshotPage)
		addrs := s.capsules.FreeAddresses()
		req.FreeAddresses = &addrs
	}
	cred := s.credential()
	resp, err := s.cp.heartbeat(ctx, cred.HostID, cred.Credential, req)
	if errors.Is(err, ErrCredentialRejected) {
		// Expired credentials are the ordinary case: refresh and retry
		// once. Anything the refresh cannot fix is final.
		if rerr := s.refresh(ctx, cred); rerr != nil {
			if errors.Is(rerr, ErrRefreshTokenRejected) {
				return fmt.Errorf("%w: %w", errHostRejected, rerr)
			}
			return rerr
		}
		cred = s.credential()
		resp, err = s.cp.heartbeat(ctx, cred.HostID, cred.Credential, req)
		if errors.Is(err, ErrCredentialRejected) {
			return fmt.Errorf("%w: %w", errHostRejected, err)
		}
	}
	if errors.Is(err, ErrCredentialForeign) || errors.Is(err, ErrTLSKeyMismatch) || statusOf(err) == http.StatusNotFound {
		return fmt.Errorf("%w: %w", errHostRejected, err)
	}
	if err == nil {
		s.snapshotsAfter.Store(&resp.SnapshotsAfter)
	}
	return err
}

// refresh trades the refresh token in old for a new credential and refresh
// token, and saves them. The control plane revokes the old pair as it
// answers, so the new one is kept in memory even when saving fails.
func (s *Server) refresh(ctx context.Context, old Credential) error {
	resp, verified, err := s.cp.refresh(ctx, old.RefreshToken)
	if err != nil {
		return err
	}
	if resp.HostID != "" && resp.HostID != s.hostID {
		return fmt.Errorf("refreshing credential: control plane answered for host %q", resp.HostID)
	}
	next := old
	next.Credential = resp.Credential
	next.CredentialExpiresAt = resp.CredentialExpiresAt
	next.RefreshToken = resp.RefreshToken
	var newKey ed25519.PublicKey
	switch {
	case resp.CPPublicKey == "" || resp.CPPublicKey == old.CPPublicKey:
	case !verified:
		// Whoever answers plain http could be anyone on the path; taking
		// its key would let it call this agent. The key stays what
		// registration gave; the new credential is still taken (it only
		// proves this host to the control plane).
		s.log.Error("control-plane key change refused: the refresh answer did not come over verified TLS (WRENN_CP_URL is not https://); the agent keeps the key it has",
			"cp_url", s.cfg.CPURL)
	default:
		if newKey, err = hostauth.DecodePublicKey(resp.CPPublicKey); err != nil {
			return fmt.Errorf("refreshing credential: %w", err)
		}
		next.CPPublicKey = resp.CPPublicKey
	}

	s.mu.Lock()
	s.cred = next
	s.mu.Unlock()
	if newKey != nil {
		s.verifier.SetPublicKey(newKey)
		s.log.Info("control-plane key changed with the credential refresh")
	}
	if err := SaveCredential(s.cfg.Dir, next); err != nil {
		s.log.Error("host credential refreshed but not saved; this run goes on, but after a restart the host must be re-registered",
			"error", err)
		return nil
	}
	s.log.Info("host credential refreshed", "expires_at", next.CredentialExpiresAt.Format(time.RFC3339))
	return nil
}

// backoff yields exponentially growing, jittered waits up to max. The jitter
// keeps a fleet of agents that lost the control plane at the same moment
// from all retrying at the same instants.
type backoff struct {
	base, max time.Duration
	attempt   int
}

func (b *backoff) reset() { b.attempt = 0 }

// next returns a wait between half and all of min(base·2^attempt, max).
func (b *backoff) next() time.Duration {
	d := b.max
	if b.attempt < 30 {
		d = min(b.base<<b.attempt, b.max)
	}
	b.attempt++
	if d <= 1 {
		return b.max
	}
	return d/2 + rand.N(d/2+1)
}

// snapshotCursor is where this heartbeat's page of snapshot directories
// starts: after the name the control plane last answered, or the first.
func (s *Server) snapshotCursor() string {
	if p := s.snapshotsAfter.Load(); p != nil {
		return *p
	}
	return ""
}
