package api

import (
	"net/http"

	"github.com/wrenn-dev/wrenn/internal/lifecycle"
)

// This file serves snapshots: templates made from a capsule's saved state.
// A snapshot lives on the disk of the host its capsule ran on, in a
// directory named by the template's id (names are per team, directories
// per host); capsules created from it are placed on that host only.

func (s *server) handleCreateSnapshot() http.Handler {
	type request struct {
		CapsuleID string `json:"capsule_id"`
		Name      string `json:"name"`
		Resume    *bool  `json:"resume"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		t, err := s.capsules.Snapshot(r.Context(), lifecycle.SnapshotRequest{
			TeamID: p.TeamID, CapsuleID: req.CapsuleID, Name: req.Name, Resume: req.Resume == nil || *req.Resume,
		}, s.event(r, p, "snapshot.create", nil))
		if err != nil {
			return err
		}
		encode(w, http.StatusCreated, toTemplateJSON(t))
		return nil
	})
}

func (s *server) handleDeleteSnapshot() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		if err := s.capsules.DeleteSnapshot(r.Context(), p.TeamID, r.PathValue("name"), s.event(r, p, "snapshot.delete", nil)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// handleListSnapshots lists what GET /v1/templates lists: snapshots are
// templates, and the base ones are shown with them, marked by kind.
func (s *server) handleListSnapshots() http.Handler { return s.handleListTemplates() }
