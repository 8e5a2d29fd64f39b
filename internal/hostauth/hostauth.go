// Package hostauth proves to a wrenn-agent that an RPC comes from the control
// plane.
//
// The control plane holds an Ed25519 key pair (kept in PostgreSQL so that every
// replica signs with the same key) and hands the public half to each agent when
// it registers. For every call the control plane signs a short-lived, single-use
// token bound to one host (audience), one RPC procedure (subject) and the
// request (a digest of a unary call's message, of an envd-proxy request's method
// and URI, or the capsule a stream is about); the agent verifies all of it and
// refuses anything else. A token is therefore useless for another host, another
// procedure, another request or capsule, a second time, or after a minute. The
// calls travel over TLS pinned to the agent's key (internal/hosttls).
package hostauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

const (
	issuer   = "wrenn-cp"
	tokenTTL = time.Minute
)

// ErrUnauthenticated is returned by Verifier.Verify for a missing, malformed,
// expired or foreign token.
var ErrUnauthenticated = errors.New("hostauth: caller is not the control plane")

// EncodePublicKey returns the text form of a public key that registration
// hands to the agent.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.StdEncoding.EncodeToString(pub)
}

// DecodePublicKey parses the text form produced by EncodePublicKey.
func DecodePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("decoding control-plane public key: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("decoding control-plane public key: got %d bytes, want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Signer mints tokens for calls from the control plane to agents. It is safe
// for concurrent use.
type Signer struct {
	key ed25519.PrivateKey
	now func() time.Time
}

// NewSigner returns a Signer using key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, now: time.Now}
}

// PublicKey returns the key agents verify tokens with.
func (s *Signer) PublicKey() ed25519.PublicKey {
	return s.key.Public().(ed25519.PublicKey)
}

// claims are a token's claims: the registered ones, and the digest of the
// request it was minted for.
type claims struct {
	jwt.RegisteredClaims
	// Digest binds the token to one request (see MessageDigest and
	// RequestDigest), or a stream to one capsule (StreamDigest).
	Digest string `json:"dig,omitempty"`
}

// Token returns a single-use token valid for one minute for calling
// procedure on host, bound to no request (every call refuses it; tests
// use it to show that).
func (s *Signer) Token(hostID, procedure string) (string, error) {
	return s.BoundToken(hostID, procedure, "")
}

// BoundToken is Token bound to the request whose digest is digest.
func (s *Signer) BoundToken(hostID, procedure, digest string) (string, error) {
	now := s.now()
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return "", fmt.Errorf("signing host token: %w", err)
	}
	c := claims{
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        base64.RawURLEncoding.EncodeToString(id),
			Issuer:    issuer,
			Subject:   procedure,
			Audience:  jwt.ClaimStrings{hostID},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(tokenTTL)),
		},
		Digest: digest,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("signing host token: %w", err)
	}
	return tok, nil
}

// MessageDigest is the digest a unary call's token is bound to: SHA-256 of
// the request message in deterministic wire form, which the agent computes
// again from the message it decoded.
func MessageDigest(m any) (string, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return "", fmt.Errorf("hostauth: request %T is not a protobuf message", m)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(pm)
	if err != nil {
		return "", fmt.Errorf("hostauth: encoding request: %w", err)
	}
	sum := sha256.Sum256(b)
	return "m:" + base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// RequestDigest is the digest an envd-proxy request's token is bound to:
// its method and URI (path and query), which name the capsule and the envd
// call. Bodies are streamed (file uploads), so they are not part of it.
func RequestDigest(method, requestURI string) string {
	sum := sha256.Sum256([]byte(method + " " + requestURI))
	return "r:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// ClientInterceptor returns a Connect interceptor that attaches a token for
// hostID to every outgoing unary and streaming call.
func (s *Signer) ClientInterceptor(hostID string) connect.Interceptor {
	return &clientInterceptor{signer: s, hostID: hostID}
}

type clientInterceptor struct {
	signer *Signer
	hostID string
}

func (c *clientInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		digest, err := MessageDigest(req.Any())
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		tok, err := c.signer.BoundToken(c.hostID, req.Spec().Procedure, digest)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		req.Header().Set("Authorization", "Bearer "+tok)
		return next(ctx, req)
	}
}

func (c *clientInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		capsuleID, _ := ctx.Value(capsuleKey{}).(string)
		if tok, err := c.signer.BoundToken(c.hostID, spec.Procedure, StreamDigest(capsuleID)); err == nil {
			conn.RequestHeader().Set("Authorization", "Bearer "+tok)
		}
		return conn
	}
}

// streamDigestPrefix starts the digest of a streaming call's token.
const streamDigestPrefix = "c:"

// StreamDigest is the digest a streaming call's token is bound to: the
// capsule the stream is about ("" for none). A stream's messages are not
// known when it opens, so the agent checks each one as it arrives: every
// capsule_id field in it must name that capsule (Interceptor).
func StreamDigest(capsuleID string) string { return streamDigestPrefix + capsuleID }

type capsuleKey struct{}

// WithCapsule returns ctx for streaming calls about capsule capsuleID: the
// client interceptor binds their tokens to it (StreamDigest).
func WithCapsule(ctx context.Context, capsuleID string) context.Context {
	return context.WithValue(ctx, capsuleKey{}, capsuleID)
}

func (c *clientInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Verifier checks tokens on the agent side. It is safe for concurrent use,
// including SetPublicKey while calls are being verified.
type Verifier struct {
	pub    atomic.Pointer[ed25519.PublicKey]
	parser *jwt.Parser
	seen   replayCache
}

// NewVerifier returns a Verifier accepting tokens signed by the control plane
// key pub and addressed to hostID.
func NewVerifier(pub ed25519.PublicKey, hostID string) *Verifier {
	v := &Verifier{
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
			jwt.WithIssuer(issuer),
			jwt.WithAudience(hostID),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(), // and Verify requires iat to bound the lifetime
			jwt.WithLeeway(5*time.Second),
		),
	}
	v.SetPublicKey(pub)
	return v
}

// SetPublicKey makes the Verifier accept tokens signed by pub, and no longer
// those signed by the previous key, from the next call on. The agent uses it
// when a credential refresh brings a new control-plane key.
func (v *Verifier) SetPublicKey(pub ed25519.PublicKey) {
	v.pub.Store(&pub)
}

// Verify reports an error wrapping ErrUnauthenticated unless header carries a
// valid control-plane token for this host and procedure, bound to digest
// (MessageDigest of a unary call's message, RequestDigest of an envd-proxy
// request), and not used before.
func (v *Verifier) Verify(header http.Header, procedure, digest string) error {
	_, err := v.verify(header, procedure, func(dig string) bool { return dig == digest })
	return err
}

// VerifyStream is Verify for a streaming call: the token must be bound to
// a capsule (StreamDigest), whose id it returns ("" for a stream bound to
// none); every message of the stream must then name that capsule or none
// (see Interceptor).
func (v *Verifier) VerifyStream(header http.Header, procedure string) (capsuleID string, err error) {
	dig, err := v.verify(header, procedure, func(dig string) bool { return strings.HasPrefix(dig, streamDigestPrefix) })
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(dig, streamDigestPrefix), nil
}

// verify checks header's token as Verify says, with digestOK judging its
// digest, and returns the digest.
func (v *Verifier) verify(header http.Header, procedure string, digestOK func(string) bool) (string, error) {
	raw, ok := strings.CutPrefix(header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return "", fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	pub := *v.pub.Load()
	var c claims
	_, err := v.parser.ParseWithClaims(raw, &c, func(*jwt.Token) (any, error) { return pub, nil })
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	if c.Subject != procedure {
		return "", fmt.Errorf("%w: token is for %q, not %q", ErrUnauthenticated, c.Subject, procedure)
	}
	if c.IssuedAt == nil || c.ExpiresAt.Sub(c.IssuedAt.Time) > tokenTTL+time.Second {
		return "", fmt.Errorf("%w: token lifetime too long", ErrUnauthenticated)
	}
	if !digestOK(c.Digest) {
		return "", fmt.Errorf("%w: token is for another request", ErrUnauthenticated)
	}
	if c.ID == "" {
		return "", fmt.Errorf("%w: token has no id", ErrUnauthenticated)
	}
	if !v.seen.first(c.ID, c.ExpiresAt.Time) {
		return "", fmt.Errorf("%w: token already used", ErrUnauthenticated)
	}
	return c.Digest, nil
}

// replayCache remembers the ids of tokens used, until they expire (plus
// the parser's leeway). It holds at most what the control plane signed for
// this host in a minute, since no one else can mint a token.
type replayCache struct {
	mu   sync.Mutex
	seen map[string]time.Time
	// pruneAt is the size at which expired ids are swept out next.
	pruneAt int
}

// first records id and reports whether it was not seen before.
func (r *replayCache) first(id string, expires time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	if _, used := r.seen[id]; used {
		return false
	}
	if len(r.seen) >= r.pruneAt {
		now := time.Now()
		for k, exp := range r.seen {
			if now.After(exp) {
				delete(r.seen, k)
			}
		}
		r.pruneAt = max(1024, 2*len(r.seen))
	}
	r.seen[id] = expires.Add(10 * time.Second)
	return true
}

// Interceptor returns a Connect server interceptor that rejects every call
// that Verify does not accept with CodeUnauthenticated.
func (v *Verifier) Interceptor() connect.Interceptor {
	return &serverInterceptor{v: v}
}

type serverInterceptor struct{ v *Verifier }

func (s *serverInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		digest, err := MessageDigest(req.Any())
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		if err := s.v.Verify(req.Header(), req.Spec().Procedure, digest); err != nil {
			return nil, connect.NewError(connect.CodeUnauthenticated, err)
		}
		return next(ctx, req)
	}
}

func (s *serverInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (s *serverInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		capsuleID, err := s.v.VerifyStream(conn.RequestHeader(), conn.Spec().Procedure)
		if err != nil {
			return connect.NewError(connect.CodeUnauthenticated, err)
		}
		return next(ctx, &boundStream{StreamingHandlerConn: conn, capsuleID: capsuleID})
	}
}

// boundStream refuses every received message that names another capsule
// than the one its token is bound to.
type boundStream struct {
	connect.StreamingHandlerConn
	capsuleID string
}

func (b *boundStream) Receive(m any) error {
	if err := b.StreamingHandlerConn.Receive(m); err != nil {
		return err
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("hostauth: message %T is not a protobuf message", m))
	}
	if id, ok := otherCapsule(pm.ProtoReflect(), b.capsuleID, 0); ok {
		return connect.NewError(connect.CodeUnauthenticated,
			fmt.Errorf("%w: the stream's token is not for capsule %q", ErrUnauthenticated, id))
	}
	return nil
}

// otherCapsule finds a capsule_id field in m (or in the messages it holds,
// down to a few levels) that is set to something other than want.
func otherCapsule(m protoreflect.Message, want string, depth int) (string, bool) {
	if depth > 4 {
		return "", false
	}
	var found string
	var bad bool
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Name() == "capsule_id" && fd.Kind() == protoreflect.StringKind && !fd.IsList() && v.String() != want:
			found, bad = v.String(), true
		case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap():
			found, bad = otherCapsule(v.Message(), want, depth+1)
		}
		return !bad
	})
	return found, bad
}

// EnvdProxyPath is the prefix of the agent's envd proxy for one capsule:
// requests under it go to that capsule's envd with its access token added.
func EnvdProxyPath(capsuleID string) string { return "/capsules/" + capsuleID + "/envd" }

// ProxyErrorHeader is set (to "1") on the answers the agent's envd proxy
// gives itself — the capsule is unknown or not running, its envd does not
// answer — so that the control plane can tell them from envd's own answers,
// which use the same error codes (a not_found of the proxy is a missing
// capsule, one of envd a missing file).
const ProxyErrorHeader = "Wrenn-Proxy-Error"

// EnvdProcedure is the subject of tokens for a capsule's envd proxy, so that
// a token for one capsule cannot be used on another.
func EnvdProcedure(capsuleID string) string { return "envd:" + capsuleID }

// Transport returns a round tripper that adds a fresh token for procedure
// on hostID, bound to the request's method and URI (RequestDigest), to
// every request before passing it to next.
func (s *Signer) Transport(hostID, procedure string, next http.RoundTripper) http.RoundTripper {
	return &signingTransport{signer: s, hostID: hostID, procedure: procedure, next: next}
}

type signingTransport struct {
	signer    *Signer
	hostID    string
	procedure string
	next      http.RoundTripper
}

func (t *signingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.signer.BoundToken(t.hostID, t.procedure, RequestDigest(req.Method, req.URL.RequestURI()))
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+tok)
	return t.next.RoundTrip(req)
}

// CloseIdleConnections closes next's idle connections, if it has any.
func (t *signingTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// PortProxyPath is the prefix of the agent's port proxy for one port of one
// capsule: requests under it go to that port at the capsule's address.
func PortProxyPath(capsuleID, port string) string {
	return "/capsules/" + capsuleID + "/ports/" + port
}

// PortProcedure is the subject of tokens for a capsule's port proxy, so that
// a token for one capsule cannot be used on another (the port is in the
// request URI the token is bound to).
func PortProcedure(capsuleID string) string { return "port:" + capsuleID }

// PortProxyErrorHeader carries, on the answers the agent's port proxy gives
// itself, what went wrong (its error code), so that the control plane can
// tell them from the capsule's own answers.
const PortProxyErrorHeader = "Wrenn-Port-Proxy-Error"
