package agent

import (
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
		// The verifier's key may change with a credential refresh; the
		// interceptor reads the current one on every call.
		connect.WithInterceptors(s.verifier.Interceptor()),
		// Requests from the control plane are small; a bound keeps a
		// caller from making the agent buffer an arbitrary body.
		connect.WithReadMaxBytes(maxRequestBytes),
	}
	mux.Handle(hostagentv1connect.NewHostAgentServiceHandler(s, opts...))
	return mux
}
