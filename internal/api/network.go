package api

import (
	"errors"
	"net/http"

	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/lifecycle"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// Egress policies (docs/network.md): in a capsule create, changed on a
// capsule with PATCH /v1/capsules/{id}/network, and a team's default for
// new capsules, which owners and platform admins set.

// policyRequest is an egress policy as a request writes it: internet left
// out is on.
type policyRequest struct {
	Internet *bool    `json:"internet"`
	Allow    []string `json:"allow"`
	Deny     []string `json:"deny"`
}

// normalize checks r and returns the policy it asks for, canonical; a nil
// r is nil (none asked for).
func (r *policyRequest) normalize() (*egress.Policy, error) {
	if r == nil {
		return nil, nil
	}
	p := egress.Policy{Internet: r.Internet == nil || *r.Internet, Allow: r.Allow, Deny: r.Deny}
	return lifecycle.NormalizePolicy(&p)
}

// policyJSON is an egress policy as the API shows it: never null, lists
// never null.
func policyJSON(p *egress.Policy) egress.Policy {
	if p == nil {
		return egress.Open()
	}
	out := *p
	if out.Allow == nil {
		out.Allow = []string{}
	}
	if out.Deny == nil {
		out.Deny = []string{}
	}
	return out
}

func (s *server) handleSetCapsuleNetwork() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decode[policyRequest](w, r, maxBody)
		if err != nil {
			return err
		}
		p, err := req.normalize()
		if err != nil {
			return err
		}
		c, err := s.teamCapsule(r)
		if err != nil {
			return err
		}
		c, err = s.capsules.SetNetwork(r.Context(), c, p, s.event(r, caller(r), "capsule.network", map[string]any{"network": policyJSON(p)}))
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, toCapsuleJSON(c))
		return nil
	})
}

// teamPolicyJSON is a team's default egress policy.
type teamPolicyJSON struct {
	Network egress.Policy `json:"network"`
}

func (s *server) handleGetTeamNetworkPolicy() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.store.TeamNetworkPolicy(r.Context(), caller(r).TeamID)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, teamPolicyJSON{Network: policyJSON(p)})
		return nil
	})
}

func (s *server) handleSetTeamNetworkPolicy() http.Handler {
	type request struct {
		Network *policyRequest `json:"network"`
	}
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		pr := caller(r)
		if !pr.PlatformAdmin && (pr.APIKeyID != "" || pr.Role != store.RoleOwner) {
			return errorf(codeForbidden, "only the team's owners (signed in, not with an API key) and platform admins can set its default network policy")
		}
		req, err := decode[request](w, r, maxBody)
		if err != nil {
			return err
		}
		if req.Network == nil {
			return errorf(codeInvalid, "network is required: the policy new capsules get ({\"internet\": true} for the open one)")
		}
		p, err := req.Network.normalize()
		if err != nil {
			return err
		}
		if p.IsOpen() {
			p = nil
		}
		ev := s.event(r, pr, "team.network_policy", map[string]any{"network": policyJSON(p)})
		ev.TeamID = pr.TeamID
		err = s.store.SetTeamNetworkPolicy(r.Context(), pr.TeamID, p, ev)
		if errors.Is(err, store.ErrNotFound) {
			return errorf(codeNotFound, "the team is gone")
		}
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, teamPolicyJSON{Network: policyJSON(p)})
		return nil
	})
}
