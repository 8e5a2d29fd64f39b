package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// This file holds the two ways the control plane reaches a capsule: the
// agent's CapsuleService for lifecycle, and the agent's envd proxy for
// processes and files. The control plane never holds a capsule's access
// token; the agent adds it.

// capsuleService returns a client for the CapsuleService of host h.
func (s *server) capsuleService(h store.Host) hostagentv1connect.CapsuleServiceClient {
	return hostagentv1connect.NewCapsuleServiceClient(s.agents.client(h), agentURL(h), s.agentOptions(h.ID))
}

// errCapsuleHostGone means the capsule's host was deleted.
var errCapsuleHostGone = errors.New("capsule has no host")

// envdFor returns a client for capsule c's envd, reached through its host
// agent's envd proxy. Clients are kept per capsule and shared (see
// envdClients), so that calls reuse their connections to the agent; do not
// Close it.
func (s *server) envdFor(ctx context.Context, c store.Capsule) (*envdclient.Client, error) {
	if c.HostID == "" {
		return nil, errCapsuleHostGone
	}
	if ec := s.envds.lookup(c, time.Now()); ec != nil {
		return ec, nil
	}
	h, err := s.store.Host(ctx, c.HostID)
	if err != nil {
		return nil, err
	}
	if h.TLSPin == "" {
		return nil, fmt.Errorf("reaching capsule %s: %w", c.ID, errNoPin)
	}
	return s.envds.put(c, h, time.Now(), func() *envdclient.Client {
		// envdclient follows no redirect, so an agent (perhaps a BYOC
		// team's own machine) cannot send these requests elsewhere.
		wrap := func(next http.RoundTripper) http.RoundTripper {
			return s.signer.Transport(h.ID, hostauth.EnvdProcedure(c.ID), next)
		}
		return envdclient.New(agentURL(h)+hostauth.EnvdProxyPath(c.ID), "", envdclient.WithTransportWrapper(wrap),
			envdclient.WithDialer(s.agentAddrs.Dialer().DialContext), envdclient.WithTLS(hosttls.ClientConfig(h.TLSPin)))
	}), nil
}
