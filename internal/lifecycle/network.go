package lifecycle

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/egress"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// NormalizePolicy checks p, an egress policy from a request, and returns
// it in canonical form; nil stays nil. Its error is Invalid and says which
// entry is wrong.
func NormalizePolicy(p *egress.Policy) (*egress.Policy, error) {
	if p == nil {
		return nil, nil
	}
	n, err := p.Normalize()
	if err != nil {
		return nil, errorf(Invalid, "%s", err.Error())
	}
	return &n, nil
}

// createPolicy is the egress policy of a new capsule from template t that
// asked for req (normalized; nil: none): its own, else the snapshot's it
// is launched from, else its team's default, else the open policy (nil).
func (s *Service) createPolicy(ctx context.Context, teamID string, t store.Template, req *egress.Policy) (*egress.Policy, error) {
	if req != nil {
		return req, nil
	}
	if t.Network != nil {
		return t.Network, nil
	}
	p, err := s.store.TeamNetworkPolicy(ctx, teamID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	return p, nil
}

// SetNetwork makes p (normalized; nil: the open policy) the egress policy
// of capsule c, running or paused, on its host first and then in the
// database with ev. A running capsule's next connection and lookup follow
// it. The capsule's row stays locked meanwhile, so that concurrent
// changes reach the host in the order they are recorded.
func (s *Service) SetNetwork(ctx context.Context, c store.Capsule, p *egress.Policy, ev store.Event) (store.Capsule, error) {
	ctx = context.WithoutCancel(ctx)
	var hostID string
	nc, err := s.store.SetCapsuleNetwork(ctx, c.ID, p, ev, func(cur store.Capsule) error {
		c = cur
		if c.Status != store.CapsuleRunning && c.Status != store.CapsulePaused {
			return wrongStatus(c, "running or paused")
		}
		h, err := s.hostOf(ctx, c)
		if errors.Is(err, store.ErrNotFound) {
			return noHost(c)
		}
		if err != nil {
			return err
		}
		hostID = h.ID
		callCtx, cancel := context.WithTimeout(ctx, bookkeepingTimeout)
		defer cancel()
		_, err = s.agent(h).SetCapsuleNetwork(callCtx, connect.NewRequest(&hostagentv1.SetCapsuleNetworkRequest{
			CapsuleId: c.ID, Network: capsule.PolicyToProto(p),
		}))
		if err != nil {
			s.log.WarnContext(ctx, "capsule network policy change failed", "capsule_id", c.ID, "host_id", h.ID, "err", err)
			opErr, _ := agentFailure("change the capsule's network policy", err)
			return opErr
		}
		return nil
	})
	var le *Error
	switch {
	case errors.As(err, &le):
		return c, le
	case errors.Is(err, store.ErrNotFound):
		return c, errorf(CapsuleNotFound, "capsule %s was deleted meanwhile", c.ID)
	case err != nil:
		return c, err
	}
	s.log.InfoContext(ctx, "capsule network policy changed", "capsule_id", c.ID, "host_id", hostID)
	return nc, nil
}
