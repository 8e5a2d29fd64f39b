package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// maxHostTemplates bounds the base templates one heartbeat may report: the
// ones an operator put on the host. Snapshots, which any member can make,
// are reported apart, a page per heartbeat (hostproto.SnapshotPage), so that
// no number of them can make a heartbeat be refused.
const maxHostTemplates = 10000

// dedupe returns names sorted and without repeats.
func dedupe(names []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(names)))
}

type templateJSON struct {
	Name            string    `json:"name"`
	Kind            string    `json:"kind"`
	Description     string    `json:"description"`
	SizeBytes       int64     `json:"size_bytes"`
	DefaultVCPUs    int       `json:"default_vcpus"`
	DefaultMemoryMB int       `json:"default_memory_mb"`
	DefaultDiskMB   int       `json:"default_disk_mb"`
	CreatedAt       time.Time `json:"created_at"`
	// A snapshot's host and source capsule (null for base templates).
	HostID          *string `json:"host_id"`
	SourceCapsuleID *string `json:"source_capsule_id"`
	// Public templates are every team's (base templates, and builds a
	// platform admin made public); the others the team's own.
	Public bool `json:"public"`
	// BuildMS is how long the template's build took (null: not built by
	// a build job); Config what its build recorded.
	BuildMS *int64          `json:"build_ms"`
	Config  json.RawMessage `json:"config"`
}

func toTemplateJSON(t store.Template) templateJSON {
	j := templateJSON{
		Name: t.Name, Kind: t.Kind, Description: t.Description, SizeBytes: t.SizeBytes,
		DefaultVCPUs: t.DefaultVCPUs, DefaultMemoryMB: t.DefaultMemoryMB, DefaultDiskMB: t.DefaultDiskMB,
		CreatedAt: t.CreatedAt, HostID: ptr(t.HostID), SourceCapsuleID: ptr(t.SourceCapsuleID),
		Public: t.TeamID == "", Config: t.Config,
	}
	if t.BuildMS > 0 {
		j.BuildMS = &t.BuildMS
	}
	if len(j.Config) == 0 {
		j.Config = json.RawMessage("{}")
	}
	return j
}

func (s *server) handleListTemplates() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		ts, err := s.store.Templates(r.Context(), caller(r).TeamID)
		if err != nil {
			return err
		}
		out := make([]templateJSON, 0, len(ts))
		for _, t := range ts {
			out = append(out, toTemplateJSON(t))
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}
