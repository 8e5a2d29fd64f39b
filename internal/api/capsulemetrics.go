package api

import (
	"context"
	"net/http"
)

// capsuleMetricsJSON is what a capsule uses right now, as its envd reads it
// inside the capsule (so the numbers are the capsule's own view: its
// memory limit, its writable layer).
type capsuleMetricsJSON struct {
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

// handleCapsuleMetrics serves GET /v1/capsules/{id}/metrics. Reading
// metrics is not activity: a dashboard that polls them must not keep an
// idle capsule from its timeout.
func (s *server) handleCapsuleMetrics() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.runningCapsule(r)
		if err != nil {
			return err
		}
		ec, err := s.capsuleEnvd(r.Context(), c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), envdCallTimeout)
		defer cancel()
		m, err := ec.Metrics(ctx)
		if err != nil {
			return s.envdError(r.Context(), c, processErrors, err)
		}
		encode(w, http.StatusOK, capsuleMetricsJSON(*m))
		return nil
	})
}
