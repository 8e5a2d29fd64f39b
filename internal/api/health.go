package api

import (
	"context"
	_ "embed" // for openapi.yaml
	"net/http"
	"time"

	"github.com/wrenn-dev/wrenn/internal/version"
)

func (s *server) handleHealth() http.Handler {
	type response struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			s.log.WarnContext(r.Context(), "health check: database unreachable", "err", err)
			return errorf(codeUnavailable, "database unreachable")
		}
		encode(w, http.StatusOK, response{Status: "ok", Version: version.Version})
		return nil
	})
}

//go:embed openapi.yaml
var openapiSpec []byte

func (s *server) handleOpenAPI() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openapiSpec)
	})
}
