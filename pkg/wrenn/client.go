package wrenn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultBaseURL is the control plane's address when neither WithBaseURL
// nor WRENN_BASE_URL gives one: `make dev`'s.
const DefaultBaseURL = "http://localhost:8000"

// Client calls one Wrenn control plane with one API key. It is safe for
// concurrent use.
type Client struct {
	base    *url.URL
	apiKey  string
	hc      *http.Client
	retries int
	backoff time.Duration
	getenv  func(string) string
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sets the API key (wrn_…) instead of WRENN_API_KEY.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithBaseURL sets the control plane's root URL (http://host:8000, without
// /v1) instead of WRENN_BASE_URL.
func WithBaseURL(u string) Option {
	return func(c *Client) {
		if p, err := url.Parse(strings.TrimRight(u, "/")); err == nil {
			c.base = p
		} else {
			c.base = &url.URL{Opaque: u} // reported by New
		}
	}
}

// WithHTTPClient sets the HTTP client (default: one without a timeout, so
// that long commands and large transfers are bounded only by their
// context).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetries sets how many times a GET is retried after a connection
// error or a 503 (default 3; 0 turns retries off).
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// WithGetenv reads the environment through getenv instead of os.Getenv.
func WithGetenv(getenv func(string) string) Option { return func(c *Client) { c.getenv = getenv } }

// New returns a client. The API key and base URL come from the options,
// else from WRENN_API_KEY and WRENN_BASE_URL; a missing key is an error.
func New(opts ...Option) (*Client, error) {
	c := &Client{hc: &http.Client{}, retries: 3, backoff: 200 * time.Millisecond, getenv: os.Getenv}
	for _, o := range opts {
		o(c)
	}
	if c.apiKey == "" {
		c.apiKey = c.getenv("WRENN_API_KEY")
	}
	if c.apiKey == "" {
		return nil, errors.New("wrenn: no API key: set WRENN_API_KEY or use WithAPIKey")
	}
	if c.base == nil {
		u := c.getenv("WRENN_BASE_URL")
		if u == "" {
			u = DefaultBaseURL
		}
		WithBaseURL(u)(c)
	}
	if c.base.Scheme != "http" && c.base.Scheme != "https" || c.base.Host == "" {
		return nil, fmt.Errorf("wrenn: base URL %q is not an http(s) URL", c.base.String())
	}
	return c, nil
}

// BaseURL returns the control plane's root URL.
func (c *Client) BaseURL() string { return c.base.String() }

// url returns the absolute URL of path (which starts with /v1) and query.
func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String()
}

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	// json is encoded as the body when not nil; else body is sent as is.
	json        any
	body        io.Reader
	contentType string
	size        int64 // of body, when known (-1 unknown)
	header      http.Header
}

// send does r and returns the response when its status is 2xx; any other
// answer becomes an *Error. The caller closes the body.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	var payload []byte
	if r.json != nil {
		b, err := json.Marshal(r.json)
		if err != nil {
			return nil, fmt.Errorf("wrenn: encoding request: %w", err)
		}
		payload = b
	}
	attempts := 1
	if r.method == http.MethodGet && r.body == nil {
		attempts += c.retries
	}
	var lastErr error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(c.backoff << (i - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		body := r.body
		if payload != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, r.method, c.url(r.path, r.query), body)
		if err != nil {
			return nil, fmt.Errorf("wrenn: %w", err)
		}
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		} else if r.contentType != "" {
			req.Header.Set("Content-Type", r.contentType)
		}
		if r.body != nil && r.size >= 0 {
			req.ContentLength = r.size
		}
		for k, vs := range r.header {
			req.Header[k] = vs
		}
		req.Header.Set("X-API-Key", c.apiKey)
		req.Header.Set("Accept", "application/json")
		res, err := c.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = fmt.Errorf("wrenn: %w", err) // names the method and URL
			continue
		}
		if res.StatusCode >= 200 && res.StatusCode < 300 {
			return res, nil
		}
		lastErr = decodeError(res)
		if res.StatusCode != http.StatusServiceUnavailable {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// call does r and decodes a JSON answer into out (nil: discarded).
func (c *Client) call(ctx context.Context, r request, out any) error {
	res, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("wrenn: decoding the answer of %s %s: %w", r.method, r.path, err)
	}
	return nil
}

// decodeError turns a non-2xx answer into an *Error and closes its body.
func decodeError(res *http.Response) error {
	defer func() { _ = res.Body.Close() }()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Status  string `json:"status"`
		} `json:"error"`
	}
	e := &Error{StatusCode: res.StatusCode}
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message, e.CapsuleStatus = body.Error.Code, body.Error.Message, body.Error.Status
	} else {
		e.Code = "http_" + fmt.Sprint(res.StatusCode)
		e.Message = strings.TrimSpace(string(raw))
		if e.Message == "" {
			e.Message = http.StatusText(res.StatusCode)
		}
	}
	return e
}

// capsulePath returns /v1/capsules/{id}{rest}, id escaped.
func capsulePath(id, rest string) string {
	return "/v1/capsules/" + url.PathEscape(id) + rest
}
