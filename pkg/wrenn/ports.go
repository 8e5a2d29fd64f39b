package wrenn

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Port is a port of a capsule: one something listens on now, or one made
// public (docs/api.md, Port proxy).
type Port struct {
	Port      int      `json:"port"`
	Public    bool     `json:"public"`
	Listening bool     `json:"listening"`
	Addresses []string `json:"addresses"`
	// URL is the port's address through the control plane (the host form
	// when the server has a proxy domain, else the path form); PathURL
	// is the path form, on the API's own origin.
	URL     string `json:"url"`
	PathURL string `json:"path_url"`
}

// PortAccess is a signed, expiring access URL of a port: anyone who holds
// URL reaches the port until ExpiresAt, without credentials.
type PortAccess struct {
	URL       string    `json:"url"`
	PathURL   string    `json:"path_url"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Ports lists capsule id's ports: those something listens on, and the
// public ones.
func (c *Client) Ports(ctx context.Context, id string) ([]Port, error) {
	var out struct {
		Ports []Port `json:"ports"`
	}
	if err := c.call(ctx, request{method: http.MethodGet, path: capsulePath(id, "/ports")}, &out); err != nil {
		return nil, err
	}
	return out.Ports, nil
}

// SetPortPublic makes port of capsule id reachable without credentials
// (public true) or private again.
func (c *Client) SetPortPublic(ctx context.Context, id string, port int, public bool) (*Port, error) {
	var out Port
	body := map[string]bool{"public": public}
	if err := c.call(ctx, request{method: http.MethodPatch, path: capsulePath(id, "/ports/"+strconv.Itoa(port)), json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PortURL returns a signed access URL of port of capsule id that expires
// after ttl (0: the server's default, an hour).
func (c *Client) PortURL(ctx context.Context, id string, port int, ttl time.Duration) (*PortAccess, error) {
	body := map[string]int64{}
	if ttl > 0 {
		body["expires_in_sec"] = int64(ttl / time.Second)
	}
	var out PortAccess
	if err := c.call(ctx, request{method: http.MethodPost, path: capsulePath(id, "/ports/"+strconv.Itoa(port)+"/url"), json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
