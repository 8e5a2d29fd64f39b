package agent

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// maxRequestBytes bounds the size of one RPC request message.
const maxRequestBytes = 4 << 20

// Handler returns every route the agent serves. Each Connect service is
// mounted with the control-plane check; anything else is a plain 404.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	opts := []connect.HandlerOption{
		connect.WithInterceptors(&controlPlaneOnly{s: s}),
		// Requests from the control plane are small; a bound keeps a
		// caller from making the agent buffer an arbitrary body.
		connect.WithReadMaxBytes(maxRequestBytes),
	}
	mux.Handle(hostagentv1connect.NewHostAgentServiceHandler(s, opts...))
	return mux
}

// controlPlaneOnly refuses every call that does not carry a valid token
// signed by the control plane for this host and this procedure. It defers to
// hostauth's interceptor of the Server's current verifier, so that a key
// received on a credential refresh takes effect for the next call.
type controlPlaneOnly struct{ s *Server }

func (c *controlPlaneOnly) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		return c.s.verifier.Load().Interceptor().WrapUnary(next)(ctx, req)
	}
}

func (c *controlPlaneOnly) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (c *controlPlaneOnly) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return c.s.verifier.Load().Interceptor().WrapStreamingHandler(next)(ctx, conn)
	}
}
