package api

import (
	"context"
	"net/http"
)

// handleCapsuleMetrics serves GET /v1/capsules/{id}/metrics. Reading
// metrics is not activity: a dashboard that polls them must not keep an
// idle capsule from its timeout.
func (s *server) handleCapsuleMetrics() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, ec, err := s.runningEnvd(r)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		m, err := ec.Metrics(ctx)
		if err != nil {
			return s.envdError(r.Context(), c, processErrors, err)
		}
		// envd's own JSON is the answer: what it reads inside the capsule,
		// so against the capsule's own limits (its memory_mb, its layer).
		encode(w, http.StatusOK, m)
		return nil
	})
}
