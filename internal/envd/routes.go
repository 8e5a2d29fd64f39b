package envd

import (
	"net/http"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/process"
	"github.com/wrenn-dev/wrenn/proto/envd/v1/envdv1connect"
)

// Handler returns envd's routes. Everything but /health and /init requires
// the access token.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	auth := s.requireToken
	limits := connect.WithReadMaxBytes(16 << 20)

	mux.Handle("GET /health", handleHealth())
	mux.Handle("POST /init", s.handleInit())
	mux.Handle("GET /metrics", auth(s.handleMetrics()))
	mux.Handle("GET /ports", auth(s.handlePorts()))
	mux.Handle("POST /prepare-pause", auth(s.handlePreparePause()))
	mux.Handle("GET /files", auth(s.files.Download()))
	mux.Handle("POST /files", auth(s.files.Upload()))

	path, h := envdv1connect.NewProcessServiceHandler(process.NewService(s.table, s.cfg.Keepalive), limits)
	mux.Handle(path, auth(h))
	path, h = envdv1connect.NewFilesystemServiceHandler(s.files, limits)
	mux.Handle(path, auth(h))
	return mux
}
