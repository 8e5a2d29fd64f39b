package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hosttls"
	"github.com/wrenn-dev/wrenn/internal/store"
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

// agentLinks keeps the HTTP clients of calls to agents, one per pinned
// agent key (internal/hosttls): a connection is accepted only from the key
// pinned for the host called, so a client is good for that key only. It is
// safe for concurrent use.
type agentLinks struct {
	timeout time.Duration
	dialer  *net.Dialer
	mu      sync.Mutex
	m       map[string]*agentLink // by pin
}

type agentLink struct {
	client *http.Client
	used   time.Time
}

// agentLinkIdle is how long an unused client is kept.
const agentLinkIdle = 10 * time.Minute

// newAgentLinks returns the clients of calls to agents: base's timeout,
// if any, over transports of their own that dial with d, speak TLS to the
// pinned key only, never ask for (and so never inflate) compressed answers
// and never follow a redirect (an agent answers; it does not send the
// control plane elsewhere).
func newAgentLinks(base *http.Client, d *net.Dialer) *agentLinks {
	l := &agentLinks{dialer: d, m: map[string]*agentLink{}}
	if base != nil {
		l.timeout = base.Timeout
	}
	return l
}

// errNoPin is the error of a call to a host with no agent key pinned.
var errNoPin = errors.New("no TLS key is pinned for this host: its agent has sent none (an agent older than TLS links; upgrade it)")

// client returns the HTTP client of calls to host h's agent.
func (l *agentLinks) client(h store.Host) *http.Client {
	if h.TLSPin == "" {
		return &http.Client{Transport: failingTransport{errNoPin}}
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.m[h.TLSPin]; e != nil {
		e.used = now
		return e.client
	}
	for pin, e := range l.m {
		if now.Sub(e.used) > agentLinkIdle {
			e.client.CloseIdleConnections()
			delete(l.m, pin)
		}
	}
	c := &http.Client{
		Timeout:       l.timeout,
		Transport:     hosttls.Transport(h.TLSPin, l.dialer.DialContext, hosttls.AnyHTTP),
		CheckRedirect: noRedirects,
	}
	l.m[h.TLSPin] = &agentLink{client: c, used: now}
	return c
}

// failingTransport fails every request with err.
type failingTransport struct{ err error }

func (t failingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	return nil, t.err
}

// agentURL is the base URL of host h's agent.
func agentURL(h store.Host) string { return "https://" + h.Address }

// checkAgentAddress refuses, as a 400, an address an agent may not be
// reached at (see internal/agentaddr and WRENN_AGENT_ALLOWED_CIDRS).
func (s *server) checkAgentAddress(ctx context.Context, addr string) error {
	if err := s.agentAddrs.Check(ctx, addr); err != nil {
		return errorf(codeInvalid, "%v", err)
	}
	return nil
}
