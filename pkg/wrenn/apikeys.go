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
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  *string    `json:"created_by"`
	LastUsedAt *time.Time `json:"last_used_at"`
	Key        string     `json:"key,omitempty"`
}

// CreateAPIKey creates an API key for the client's team.
func (c *Client) CreateAPIKey(ctx context.Context, name string) (*APIKey, error) {
	var out APIKey
	body := map[string]string{"name": name}
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
