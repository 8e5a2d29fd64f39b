package agent

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/hostproto"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// maxRequestBytes bounds the size of one RPC request message.
const maxRequestBytes = 4 << 20

// Handler returns every route the agent serves. Each Connect service is
// mounted with the control-plane check; the envd proxy makes its own;
// the port proxy too; anything else is a plain 404. Without a capsule manager (an agent that
// runs no capsules, as in some tests) only HostAgentService is served.
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
	if s.capsules != nil {
		mux.Handle(hostagentv1connect.NewCapsuleServiceHandler(capsuleService{s.capsules}, opts...))
	}
	// The envd proxy checks its own token: it is bound to the capsule,
	// not to a procedure of this API.
	mux.Handle(hostauth.EnvdProxyPath("{id}")+"/", newEnvdProxy(s.capsules, s.verifier))
	// So does the port proxy, whose tokens name the capsule and are bound
	// to the request line, port included.
	ports := newPortProxy(s.capsules, s.verifier)
	mux.Handle(hostauth.PortProxyPath("{id}", "{port}"), ports)
	mux.Handle(hostauth.PortProxyPath("{id}", "{port}")+"/", ports)
	// So does a template import: it is bound to the template's name.
	mux.Handle("POST "+hostproto.TemplateImportPath("{name}"), s.importHandler())
	// And a template's move from one host to another (transfer.go).
	mux.Handle("GET "+hostproto.TemplateExportPath("{name}"), s.exportHandler())
	mux.Handle("POST "+hostproto.TemplateReceivePath("{name}"), s.receiveHandler())
	return mux
}
