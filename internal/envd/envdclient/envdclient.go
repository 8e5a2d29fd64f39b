// Package envdclient is the Go client of envd, the guest agent inside a
// capsule: the Connect clients of its process and filesystem services, with
// the access token attached, and helpers for its plain HTTP routes (init,
// file upload and download, metrics, ports, prepare-pause, health).
//
// A Client is safe for concurrent use.
package envdclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/proto/envd/v1/envdv1connect"
)

// TokenHeader is the header that carries the access token on every call.
const TokenHeader = "X-Access-Token"

// DefaultPort is the port envd listens on.
const DefaultPort = 49983

// Read limits. envd runs inside a capsule, under the tenant's control, so
// everything it answers is bounded before it is held in memory: the
// control plane and the agent must not be made to allocate what a capsule
// chooses.
const (
	// MaxMessageBytes bounds one Connect message from envd (a directory
	// listing, a process list, an output chunk). Larger messages fail
	// with connect.CodeResourceExhausted, raised locally (not a wire
	// error).
	MaxMessageBytes = 16 << 20
	// maxJSONAnswer bounds the JSON answers of the plain HTTP routes.
	maxJSONAnswer = 1 << 20
)

// noGzip refuses compressed Connect answers. Decompression runs before any
// size check can see the result, and a small gzip can expand a thousand
// times; the link between control plane, agent and envd gains little from
// compression anyway. Requests are not compressed either (that is
// connect's default).
var noGzip = connect.WithAcceptCompression("gzip", nil, nil)

// ClientOptions are the Connect options of every client of envd's
// services: the per-message read limit and no compression. The control
// plane's clients of the agent use the same with a limit of their own.
func ClientOptions(readMax int) connect.ClientOption {
	return connect.WithClientOptions(connect.WithReadMaxBytes(readMax), noGzip)
}

// InitRequest is the body of POST /init.
type InitRequest struct {
	// AccessToken becomes the token every later call must carry. Required.
	AccessToken string `json:"access_token"`
	// EnvVars are added to the environment of every process.
	EnvVars map[string]string `json:"env_vars,omitempty"`
	// DefaultUser is the user of calls that name none.
	DefaultUser string `json:"default_user,omitempty"`
	// DefaultWorkdir is the working directory of processes that name none.
	DefaultWorkdir string `json:"default_workdir,omitempty"`
	// Hostname is set as the capsule's hostname (only when envd is init).
	Hostname string `json:"hostname,omitempty"`
}

// Metrics is the answer of GET /metrics: the capsule's resource use.
type Metrics struct {
	CPUCount          int     `json:"cpu_count"`
	CPUUsedPercent    float64 `json:"cpu_used_pct"`
	MemTotalBytes     uint64  `json:"mem_total_bytes"`
	MemUsedBytes      uint64  `json:"mem_used_bytes"`
	MemAvailableBytes uint64  `json:"mem_available_bytes"`
	DiskTotalBytes    uint64  `json:"disk_total_bytes"`
	DiskUsedBytes     uint64  `json:"disk_used_bytes"`
	Load1             float64 `json:"load_1"`
	Processes         int     `json:"processes"`
	Timestamp         string  `json:"timestamp"`
}

// Ports is the answer of GET /ports: the TCP ports something in the
// capsule listens on.
type Ports struct {
	Ports []Port `json:"ports"`
}

// Port is one listening TCP port and the addresses it listens on
// ("0.0.0.0" and "::" for every address).
type Port struct {
	Port      int      `json:"port"`
	Addresses []string `json:"addresses"`
}

// UploadResult is the answer of POST /files.
type UploadResult struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// Error is an error answer of an HTTP route:
// {"error":{"code":"not_found","message":"..."}}.
type Error struct {
	Status  int
	Code    string
	Message string
	// Header is the answer's header (a proxy in front of envd may mark
	// its own answers there).
	Header http.Header
}

func (e *Error) Error() string {
	return fmt.Sprintf("envd: %d %s: %s", e.Status, e.Code, e.Message)
}

// Option changes how New builds a client.
type Option func(*options)

type options struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	wrap func(http.RoundTripper) http.RoundTripper
	tls  *tls.Config
}

// WithTLS makes the client speak TLS with cfg (an https:// base URL):
// RPCs over HTTP/2, file transfers over HTTP/1.1, as without TLS. The
// control plane uses it to reach envd through an agent whose key it has
// pinned (internal/hosttls).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.tls = cfg }
}

// WithTransportWrapper makes every request pass through wrap's round
// tripper, e.g. to add the control plane's token when envd is reached
// through the agent's envd proxy.
func WithTransportWrapper(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(o *options) { o.wrap = wrap }
}

// WithDialer makes the client open its connections with dial, e.g. to reach
// a capsule's address from inside its network namespace.
func WithDialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dial = dial }
}

// Client talks to one envd.
type Client struct {
	base       string
	rpcHTTP    *http.Client
	fileHTTP   *http.Client
	tokenMu    sync.RWMutex
	token      string
	Process    envdv1connect.ProcessServiceClient
	Filesystem envdv1connect.FilesystemServiceClient
}

// New returns a client for the envd at baseURL (e.g. "http://10.11.0.2:49983")
// that sends token (which may be empty before /init).
//
// RPCs go over HTTP/2 (h2c, or over TLS with WithTLS), which client-streaming
// input needs; file transfers go over HTTP/1.1, which streams large bodies
// faster.
func New(baseURL, token string, opts ...Option) *Client {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	o := options{dial: dialer.DialContext, wrap: func(rt http.RoundTripper) http.RoundTripper { return rt }}
	for _, opt := range opts {
		opt(&o)
	}
	rpcTransport := &http.Transport{
		DialContext:     o.dial,
		Protocols:       new(http.Protocols),
		IdleConnTimeout: 90 * time.Second,
		// Without this the transport asks for gzip itself and inflates
		// the answer before connect's limits see it.
		DisableCompression: true,
	}
	fileTransport := &http.Transport{
		DialContext:         o.dial,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
		DisableCompression:  true,
	}
	if o.tls != nil {
		rpcTransport.TLSClientConfig = o.tls.Clone()
		rpcTransport.Protocols.SetHTTP2(true)
		fileTransport.TLSClientConfig = o.tls.Clone()
		fileTransport.Protocols = new(http.Protocols)
		fileTransport.Protocols.SetHTTP1(true)
		fileTransport.TLSHandshakeTimeout = 10 * time.Second
		rpcTransport.TLSHandshakeTimeout = 10 * time.Second
	} else {
		rpcTransport.Protocols.SetUnencryptedHTTP2(true)
	}
	c := &Client{
		base: strings.TrimRight(baseURL, "/"),
		// envd never redirects; a redirect is answered, not followed.
		rpcHTTP:  &http.Client{Transport: o.wrap(rpcTransport), CheckRedirect: noRedirects},
		fileHTTP: &http.Client{Transport: o.wrap(fileTransport), CheckRedirect: noRedirects},
		token:    token,
	}
	rpcOpts := connect.WithClientOptions(connect.WithInterceptors(tokenInterceptor{c}), ClientOptions(MaxMessageBytes))
	c.Process = envdv1connect.NewProcessServiceClient(c.rpcHTTP, c.base, rpcOpts)
	c.Filesystem = envdv1connect.NewFilesystemServiceClient(c.rpcHTTP, c.base, rpcOpts)
	return c
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// SetToken changes the token sent from now on.
func (c *Client) SetToken(token string) {
	c.tokenMu.Lock()
	c.token = token
	c.tokenMu.Unlock()
}

func (c *Client) currentToken() string {
	c.tokenMu.RLock()
	defer c.tokenMu.RUnlock()
	return c.token
}

// Close releases idle connections.
func (c *Client) Close() {
	c.rpcHTTP.CloseIdleConnections()
	c.fileHTTP.CloseIdleConnections()
}

// BaseURL is the URL the client was made for.
func (c *Client) BaseURL() string { return c.base }

// tokenInterceptor adds the access token to every RPC.
type tokenInterceptor struct{ c *Client }

func (i tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if t := i.c.currentToken(); t != "" {
			req.Header().Set(TokenHeader, t)
		}
		return next(ctx, req)
	}
}

func (i tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if t := i.c.currentToken(); t != "" {
			conn.RequestHeader().Set(TokenHeader, t)
		}
		return conn
	}
}

func (i tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// do sends an HTTP request with the token and turns error answers into *Error.
func (c *Client) do(hc *http.Client, req *http.Request) (*http.Response, error) {
	if t := c.currentToken(); t != "" {
		req.Header.Set(TokenHeader, t)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		defer func() { _ = resp.Body.Close() }()
		return nil, readError(resp)
	}
	return resp, nil
}

func readError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode, Header: resp.Header}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else {
		e.Code, e.Message = strings.ReplaceAll(strings.ToLower(http.StatusText(resp.StatusCode)), " ", "_"), strings.TrimSpace(string(b))
	}
	return e
}

// decodeJSON reads a JSON answer of at most maxJSONAnswer bytes into v; a
// compressed answer is refused (the transports do not ask for one).
func decodeJSON(resp *http.Response, v any) error {
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && enc != "identity" {
		return fmt.Errorf("answer is %s-encoded; only plain answers are accepted", enc)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONAnswer+1))
	if err != nil {
		return err
	}
	if len(b) > maxJSONAnswer {
		return fmt.Errorf("answer is larger than %d bytes", maxJSONAnswer)
	}
	return json.Unmarshal(b, v)
}

// Health reports nil when envd answers GET /health.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, http.MethodGet, "/health", "checking health")
}

// call sends a bodiless request to path and reports whether envd accepted
// it, wrapping errors with op.
func (c *Client) call(ctx context.Context, method, path, op string) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_ = resp.Body.Close()
	return nil
}

// Init calls POST /init and, on success, sends the new token from then on.
func (c *Client) Init(ctx context.Context, in InitRequest) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("initializing envd: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/init", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("initializing envd: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return fmt.Errorf("initializing envd: %w", err)
	}
	_ = resp.Body.Close()
	c.SetToken(in.AccessToken)
	return nil
}

// UploadOptions are the optional settings of Upload.
type UploadOptions struct {
	// Mode is the new file's permission bits (default 0644).
	Mode uint32
	// User owns the file and must be allowed to create it (default: envd's default user).
	User string
	// Size, when positive, is sent as Content-Length.
	Size int64
}

// Upload streams r into the file at path (absolute), replacing it atomically.
func (c *Client) Upload(ctx context.Context, path string, r io.Reader, opts UploadOptions) (*UploadResult, error) {
	q := url.Values{"path": {path}}
	if opts.Mode != 0 {
		q.Set("mode", strconv.FormatUint(uint64(opts.Mode), 8))
	}
	if opts.User != "" {
		q.Set("user", opts.User)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/files?"+q.Encode(), io.NopCloser(r))
	if err != nil {
		return nil, fmt.Errorf("uploading %s: %w", path, err)
	}
	if opts.Size > 0 {
		req.ContentLength = opts.Size
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return nil, fmt.Errorf("uploading %s: %w", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out UploadResult
	if err := decodeJSON(resp, &out); err != nil {
		return nil, fmt.Errorf("uploading %s: reading answer: %w", path, err)
	}
	return &out, nil
}

// Download opens the file at path; the caller must close the body. user may
// be empty for the default user.
func (c *Client) Download(ctx context.Context, path, user string) (io.ReadCloser, error) {
	return c.DownloadRange(ctx, path, user, 0, -1)
}

// DownloadRange opens length bytes of the file at path from offset on
// (length < 0: to the end).
func (c *Client) DownloadRange(ctx context.Context, path, user string, offset, length int64) (io.ReadCloser, error) {
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("user", user)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/files?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", path, err)
	}
	switch {
	case length == 0:
		return io.NopCloser(strings.NewReader("")), nil
	case length > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", path, err)
	}
	if (offset > 0 || length > 0) && resp.StatusCode != http.StatusPartialContent {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("downloading %s: range not honoured (status %d)", path, resp.StatusCode)
	}
	return resp.Body, nil
}

// Metrics calls GET /metrics.
func (c *Client) Metrics(ctx context.Context) (*Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "application/json" {
		return nil, errors.New("reading metrics: answer is not JSON")
	}
	var m Metrics
	if err := decodeJSON(resp, &m); err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	return &m, nil
}

// Ports calls GET /ports.
func (c *Client) Ports(ctx context.Context) (*Ports, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/ports", nil)
	if err != nil {
		return nil, fmt.Errorf("listing ports: %w", err)
	}
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return nil, fmt.Errorf("listing ports: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct != "application/json" {
		return nil, errors.New("listing ports: answer is not JSON")
	}
	var p Ports
	if err := decodeJSON(resp, &p); err != nil {
		return nil, fmt.Errorf("listing ports: %w", err)
	}
	return &p, nil
}

// PreparePause calls POST /prepare-pause, which flushes the capsule's
// filesystems to disk before a snapshot.
func (c *Client) PreparePause(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/prepare-pause", "preparing pause")
}

// Open is Download for proxies: it sends header's Range and If-Range with
// the request and returns envd's whole answer (200, or 206 for a range),
// so that the caller can pass on Content-Length, Content-Range and
// Last-Modified. The caller must close the body.
func (c *Client) Open(ctx context.Context, path, user string, header http.Header) (*http.Response, error) {
	q := url.Values{"path": {path}}
	if user != "" {
		q.Set("user", user)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/files?"+q.Encode(), nil)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", path, err)
	}
	for _, h := range []string{"Range", "If-Range"} {
		if v := header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := c.do(c.fileHTTP, req)
	if err != nil {
		return nil, fmt.Errorf("downloading %s: %w", path, err)
	}
	return resp, nil
}
