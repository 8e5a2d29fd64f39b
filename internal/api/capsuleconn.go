package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// This file holds the two ways the control plane reaches a capsule: the
// agent's CapsuleService for lifecycle, and the agent's envd proxy for
// processes and files. The control plane never holds a capsule's access
// token; the agent adds it.

// capsuleService returns a client for the CapsuleService of host h. It
// follows no redirects (see agentOnly).
func (s *server) capsuleService(h store.Host) hostagentv1connect.CapsuleServiceClient {
	hc := *s.agentClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hostagentv1connect.NewCapsuleServiceClient(&hc, "http://"+h.Address,
		connect.WithInterceptors(s.signer.ClientInterceptor(h.ID)))
}

// agentOnly is a round tripper that lets through only requests to one
// capsule's envd proxy on its host. envdclient's HTTP client follows
// redirects, and an agent may be a BYOC team's own machine: without it the
// agent could send the control plane's requests anywhere the control plane
// can reach and have the answers passed back to the user.
type agentOnly struct {
	host, prefix string
	next         http.RoundTripper
}

func (t agentOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host || !strings.HasPrefix(req.URL.Path, t.prefix+"/") {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("refusing a request to %s%s: not the capsule's envd proxy (a redirect?)", req.URL.Host, req.URL.Path)
	}
	return t.next.RoundTrip(req)
}

// CloseIdleConnections closes next's idle connections.
func (t agentOnly) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
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
	return s.envds.put(c, h, time.Now(), func() *envdclient.Client {
		prefix := hostauth.EnvdProxyPath(c.ID)
		wrap := func(next http.RoundTripper) http.RoundTripper {
			// Checked before a token is minted for the request.
			return agentOnly{host: h.Address, prefix: prefix, next: s.signer.Transport(h.ID, hostauth.EnvdProcedure(c.ID), next)}
		}
		return envdclient.New("http://"+h.Address+prefix, "", envdclient.WithTransportWrapper(wrap))
	}), nil
}
