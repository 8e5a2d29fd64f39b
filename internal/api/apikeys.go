package api

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wrenn-dev/wrenn/internal/auth"
	"github.com/wrenn-dev/wrenn/internal/store"
)

type apiKeyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  *string    `json:"created_by"`
	LastUsedAt *time.Time `json:"last_used_at"`
	// Key is the whole key, present only in the answer to its creation.
	Key string `json:"key,omitempty"`
}

func toAPIKeyJSON(k store.APIKey) apiKeyJSON {
	return apiKeyJSON{ID: k.ID, Name: k.Name, Prefix: k.Prefix, Scopes: k.Scopes, CreatedAt: k.CreatedAt, CreatedBy: ptr(k.CreatedBy), LastUsedAt: k.LastUsedAt}
}

func (s *server) handleCreateAPIKey() http.Handler {
	type request struct {
		Name string `json:"name"`
		// Scopes default to auth.DefaultScopes when absent.
		Scopes *[]string `json:"scopes"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		name := strings.TrimSpace(req.Name)
		if name == "" {
			return errorf(codeInvalid, "name is required")
		}
		if utf8.RuneCountInString(name) > maxNameLen {
			return errorf(codeInvalid, "name must be at most %d characters", maxNameLen)
		}
		scopes, err := grantableScopes(p, req.Scopes)
		if err != nil {
			return err
		}
		key, hash, err := auth.NewToken(auth.APIKeyPrefix)
		if err != nil {
			return err
		}
		k, err := s.store.CreateAPIKey(r.Context(), store.NewAPIKey{
			TeamID: p.TeamID, CreatedBy: p.UserID, Name: name, Prefix: auth.DisplayPrefix(key), Hash: hash, Scopes: scopes,
		}, s.event(r, p, "api_key.create", map[string]any{"name": name, "scopes": scopes}))
		if err != nil {
			return err
		}
		j := toAPIKeyJSON(k)
		j.Key = key
		encode(w, http.StatusCreated, j)
		return nil
	})
}

// grantableScopes returns the scopes a new key of p gets: asked (nil: the
// default set), each known and held by p, since a key never gives more
// power than its creator has.
func grantableScopes(p principal, asked *[]string) ([]string, error) {
	if asked == nil {
		asked = &auth.DefaultScopes
	}
	if len(*asked) == 0 {
		return nil, errorf(codeInvalid, "scopes must name at least one scope (known: %s)", strings.Join(auth.AllScopes, ", "))
	}
	scopes, err := auth.ParseScopes(*asked)
	if err != nil {
		return nil, errorf(codeInvalid, "%v", err)
	}
	held := p.heldScopes()
	for _, sc := range scopes {
		if !slices.Contains(held, sc) {
			if sc == auth.ScopePlatformAdmin {
				return nil, errorf(codeForbidden, "only platform admins can create keys with the %s scope", sc)
			}
			return nil, errorf(codeForbidden, "this API key cannot grant the %s scope, which it does not hold", sc)
		}
	}
	return scopes, nil
}

func (s *server) handleListAPIKeys() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		keys, err := s.store.APIKeys(r.Context(), caller(r).TeamID)
		if err != nil {
			return err
		}
		out := make([]apiKeyJSON, 0, len(keys))
		for _, k := range keys {
			out = append(out, toAPIKeyJSON(k))
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

func (s *server) handleDeleteAPIKey() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p := caller(r)
		id, err := pathID(r, "API key")
		if err != nil {
			return err
		}
		err = s.store.DeleteAPIKey(r.Context(), p.TeamID, id, s.event(r, p, "api_key.delete", nil))
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "no API key with id %s", id)
		}
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
