package api

import (
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// Client cache settings.
const (
	// hostAddressTTL is how long a cached client is used without reading
	// its host's address again: an agent that registers anew from another
	// address is found within this time.
	hostAddressTTL = 10 * time.Second
	// envdIdleTTL is how long an unused client is kept.
	envdIdleTTL = 2 * time.Minute
)

// envdClients keeps one envd client per capsule. A command such as `true`
// takes a few milliseconds inside a capsule; a fresh client would add a new
// TCP connection and HTTP/2 handshake to the agent, and a host lookup, to
// each one. It is safe for concurrent use.
type envdClients struct {
	mu sync.Mutex
	m  map[string]*envdEntry // by capsule id
}

type envdEntry struct {
	hostID  string
	address string
	pin     string // the host's agent key pin the client accepts
	client  *envdclient.Client
	checked time.Time // when the host's address was last read
	used    time.Time
}

func newEnvdClients() *envdClients {
	return &envdClients{m: map[string]*envdEntry{}}
}

// lookup returns c's client if its host's address was read recently
// enough, else nil.
func (ec *envdClients) lookup(c store.Capsule, now time.Time) *envdclient.Client {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	e := ec.m[c.ID]
	if e == nil || e.hostID != c.HostID || now.Sub(e.checked) > hostAddressTTL {
		return nil
	}
	e.used = now
	return e.client
}

// put returns c's client for host h, made by newClient unless the cached
// one already goes to h's address and pinned key. It also drops clients unused for
// envdIdleTTL.
func (ec *envdClients) put(c store.Capsule, h store.Host, now time.Time, newClient func() *envdclient.Client) *envdclient.Client {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if e := ec.m[c.ID]; e != nil && e.hostID == h.ID && e.address == h.Address && e.pin == h.TLSPin {
		e.checked, e.used = now, now
		return e.client
	}
	for id, e := range ec.m {
		if id == c.ID || now.Sub(e.used) > envdIdleTTL {
			// Close only drops idle connections: a call still using the
			// old client finishes.
			e.client.Close()
			delete(ec.m, id)
		}
	}
	e := &envdEntry{hostID: h.ID, address: h.Address, pin: h.TLSPin, client: newClient(), checked: now, used: now}
	ec.m[c.ID] = e
	return e.client
}

// forgetHost drops the clients of host hostID's capsules, so that the next
// call reads the host's address and pinned key again: one has just changed.
func (ec *envdClients) forgetHost(hostID string) {
	ec.mu.Lock()
	defer ec.mu.Unlock()
	for id, e := range ec.m {
		if e.hostID == hostID {
			e.client.Close()
			delete(ec.m, id)
		}
	}
}
