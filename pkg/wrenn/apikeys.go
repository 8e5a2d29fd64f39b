package wrenn

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// APIKey is a team's API key. Key is set only in CreateAPIKey's answer:
// the server keeps a digest and shows a key once.
type APIKey struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  *string    `json:"created_by"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Key        string     `json:"key,omitempty"`
}

// The scopes an API key may hold (see docs/api.md). A key without a scope
// gets ErrForbidden from the calls that need it.
const (
	ScopeCapsules      = "capsules"
	ScopeExec          = "exec"
	ScopeFiles         = "files"
	ScopeSnapshots     = "snapshots"
	ScopeTemplates     = "templates"
	ScopeHosts         = "hosts"
	ScopeTeam          = "team"
	ScopeKeysManage    = "keys:manage"
	ScopePlatformAdmin = "platform:admin"
)

// CreateAPIKey creates an API key for the client's team with scopes, or
// without any named the default set (capsules, exec, files, snapshots,
// templates). A key can grant only scopes it holds, and creating keys with
// a key needs ScopeKeysManage.
func (c *Client) CreateAPIKey(ctx context.Context, name string, scopes ...string) (*APIKey, error) {
	var out APIKey
	body := map[string]any{"name": name}
	if len(scopes) > 0 {
		body["scopes"] = scopes
	}
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/api-keys", json: body}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAPIKeys lists the team's API keys, newest first.
func (c *Client) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	var out []APIKey
	if err := c.call(ctx, request{method: http.MethodGet, path: "/v1/api-keys"}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteAPIKey deletes an API key; it fails at once from then on.
func (c *Client) DeleteAPIKey(ctx context.Context, id string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/api-keys/" + url.PathEscape(id)}, nil)
}
