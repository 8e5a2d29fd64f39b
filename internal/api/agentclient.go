package api

import (
	"context"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
)

// The control plane's side of its links to agents, all of them bounded: an
// agent may be a BYOC team's own machine, and what it answers must not be
// able to make the control plane allocate without limit.

// maxAgentMessage bounds one Connect message from an agent: its answers
// are small records (a capsule, host facts).
const maxAgentMessage = 4 << 20

// agentOptions are the Connect options of a client of host hostID's
// agent: calls signed for that host, answers of at most maxAgentMessage
// bytes, no compression either way (envdclient.ClientOptions).
func (s *server) agentOptions(hostID string) connect.ClientOption {
	return connect.WithClientOptions(connect.WithInterceptors(s.signer.ClientInterceptor(hostID)),
		envdclient.ClientOptions(maxAgentMessage))
}

// newAgentHTTPClient returns the HTTP client of calls to agents: base's
// timeout, if any, over a transport of its own that never asks for (and
// so never inflates) compressed answers and never follows a redirect (an
// agent answers; it does not send the control plane elsewhere).
func newAgentHTTPClient(base *http.Client, d *net.Dialer) *http.Client {
	c := http.Client{}
	if base != nil {
		c.Timeout = base.Timeout
	}
	c.Transport = &http.Transport{
		DialContext:         d.DialContext,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	c.CheckRedirect = noRedirects
	return &c
}

// checkAgentAddress refuses, as a 400, an address an agent may not be
// reached at (see internal/agentaddr and WRENN_AGENT_ALLOWED_CIDRS).
func (s *server) checkAgentAddress(ctx context.Context, addr string) error {
	if err := s.agentAddrs.Check(ctx, addr); err != nil {
		return errorf(codeInvalid, "%v", err)
	}
	return nil
}
