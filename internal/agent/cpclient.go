package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/wrenn-dev/wrenn/internal/hostproto"
)

// Errors the control plane answers with, for calls the agent makes. Each
// wraps an *APIError carrying the details.
var (
	// ErrRegistrationTokenRejected: the registration token is unknown,
	// expired, already used or superseded by a newer one.
	ErrRegistrationTokenRejected = errors.New("registration token invalid, expired or already used")
	// ErrCredentialRejected: the host credential is unknown, expired or
	// revoked (401).
	ErrCredentialRejected = errors.New("host credential rejected")
	// ErrCredentialForeign: the credential is valid but belongs to another
	// host than the one the call names (403).
	ErrCredentialForeign = errors.New("host credential belongs to another host")
	// ErrRefreshTokenRejected: the refresh token is unknown, expired, used
	// or revoked.
	ErrRefreshTokenRejected = errors.New("refresh token rejected")
	// ErrTLSKeyMismatch: the control plane has pinned another TLS key for
	// this host than the one the agent serves with (409
	// tls_key_mismatch); only registering the host again changes the pin.
	ErrTLSKeyMismatch = errors.New("control plane has pinned another TLS key for this host; register the host again with --register <new token>")
)

// codeTLSKeyMismatch is the control plane's error code for ErrTLSKeyMismatch.
const codeTLSKeyMismatch = "tls_key_mismatch"

// APIError is an error answer from the control plane in its one JSON shape,
// {"error": {"code": …, "message": …}}.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("control plane answered %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("control plane answered %d %s: %s", e.Status, e.Code, e.Message)
}

// cpClient calls the control plane's host endpoints (docs/host-protocol.md).
// It is safe for concurrent use.
type cpClient struct {
	base string
	http *http.Client
}

func newCPClient(base string) *cpClient {
	// The timeout bounds one call so that a control plane that accepts
	// connections but never answers cannot stall the heartbeat loop.
	return &cpClient{base: base, http: &http.Client{Timeout: 15 * time.Second}}
}

// The messages are hostproto's, shared with the control plane.
type (
	registerResponse = hostproto.RegisterResponse[hostproto.HostRef]
	heartbeatRequest = hostproto.HeartbeatRequest
)

func (c *cpClient) register(ctx context.Context, req hostproto.RegisterRequest) (registerResponse, error) {
	var resp registerResponse
	err := c.post(ctx, hostproto.RegisterPath, "", req, &resp)
	if statusOf(err) == http.StatusUnauthorized {
		err = fmt.Errorf("%w: %w", ErrRegistrationTokenRejected, err)
	}
	if err != nil {
		return registerResponse{}, fmt.Errorf("registering host: %w", err)
	}
	if resp.Host.ID == "" || resp.Credential == "" || resp.RefreshToken == "" || resp.CPPublicKey == "" {
		return registerResponse{}, errors.New("registering host: control plane's answer lacks host.id, credential, refresh_token or cp_public_key")
	}
	return resp, nil
}

// heartbeat sends one heartbeat. The answer's status and suggested interval
// are not read: the agent keeps its own WRENN_HEARTBEAT_INTERVAL.
func (c *cpClient) heartbeat(ctx context.Context, hostID, credential string, req heartbeatRequest) (hostproto.HeartbeatResponse, error) {
	var resp hostproto.HeartbeatResponse
	err := c.post(ctx, hostproto.HeartbeatPath(url.PathEscape(hostID)), credential, req, &resp)
	switch {
	case statusOf(err) == http.StatusUnauthorized:
		err = fmt.Errorf("%w: %w", ErrCredentialRejected, err)
	case statusOf(err) == http.StatusForbidden:
		err = fmt.Errorf("%w: %w", ErrCredentialForeign, err)
	case statusOf(err) == http.StatusConflict && codeOf(err) == codeTLSKeyMismatch:
		err = fmt.Errorf("%w: %w", ErrTLSKeyMismatch, err)
	}
	if err != nil {
		return resp, fmt.Errorf("sending heartbeat: %w", err)
	}
	return resp, nil
}

// refresh trades refreshToken for new credentials; verified reports
// whether the answer came over verified TLS (postVerified).
func (c *cpClient) refresh(ctx context.Context, refreshToken string) (_ hostproto.RefreshResponse, verified bool, _ error) {
	var resp hostproto.RefreshResponse
	verified, err := c.postVerified(ctx, hostproto.RefreshPath, "", hostproto.RefreshRequest{RefreshToken: refreshToken}, &resp)
	if statusOf(err) == http.StatusUnauthorized {
		err = fmt.Errorf("%w: %w", ErrRefreshTokenRejected, err)
	}
	if err != nil {
		return hostproto.RefreshResponse{}, false, fmt.Errorf("refreshing credential: %w", err)
	}
	if resp.Credential == "" || resp.RefreshToken == "" {
		return hostproto.RefreshResponse{}, false, errors.New("refreshing credential: control plane's answer lacks credential or refresh_token")
	}
	return resp, verified, nil
}

// statusOf returns the HTTP status of an error answer from the control
// plane, or 0 when err is not one (a network error, for instance).
func statusOf(err error) int {
	var api *APIError
	if errors.As(err, &api) {
		return api.Status
	}
	return 0
}

// codeOf returns the error code of an error answer from the control
// plane, or "".
func codeOf(err error) string {
	var api *APIError
	if errors.As(err, &api) {
		return api.Code
	}
	return ""
}

// maxAnswer bounds what the agent reads from the control plane: every answer
// in the protocol is a small JSON object.
const maxAnswer = 1 << 20

// post sends in as JSON to path and decodes a 2xx answer into out, unless
// out is nil. Any other answer is returned as an *APIError.
func (c *cpClient) post(ctx context.Context, path, bearer string, in, out any) error {
	_, err := c.postVerified(ctx, path, bearer, in, out)
	return err
}

// postVerified is post, also reporting whether the answer came over TLS
// whose certificate chain was verified (WRENN_CP_URL is https://): only
// then is the answer known to be the control plane's.
func (c *cpClient) postVerified(ctx context.Context, path, bearer string, in, out any) (verified bool, err error) {
	body, err := json.Marshal(in)
	if err != nil {
		return false, fmt.Errorf("encoding request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false, err
	}
	verified = resp.TLS != nil && len(resp.TLS.VerifiedChains) > 0
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return false, fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		api := &APIError{Status: resp.StatusCode}
		var shape struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &shape) == nil {
			api.Code, api.Message = shape.Error.Code, shape.Error.Message
		}
		if api.Code == "" {
			api.Code = http.StatusText(resp.StatusCode)
		}
		return false, api
	}
	if out == nil {
		return verified, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return false, fmt.Errorf("decoding answer: %w", err)
	}
	return verified, nil
}
