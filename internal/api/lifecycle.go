package api

import (
	"net/http"
)

// This file serves pause, resume and ping; internal/lifecycle does them.

func (s *server) handlePauseCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		c, err = s.capsules.Pause(r.Context(), c, s.event(r, caller(r), "capsule.pause", map[string]any{}))
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

func (s *server) handleResumeCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		c, err = s.capsules.Resume(r.Context(), c, s.event(r, caller(r), "capsule.resume", map[string]any{}))
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

func (s *server) handlePingCapsule() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		c, err = s.capsules.Ping(r.Context(), c)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}
