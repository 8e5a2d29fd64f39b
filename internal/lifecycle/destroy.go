package lifecycle

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// destroyAttempts bounds how often Destroy follows a capsule whose status
// changes under it (a start or pause finishing meanwhile).
const destroyAttempts = 5

// settleWait is how often Destroy looks again at a capsule it destroyed on
// its host while a pause or resume was in flight there: that operation
// fails and settles the row, and only then can the destroy be recorded.
const settleWait = 100 * time.Millisecond

// Destroy destroys capsule c on its host and records it stopped with ev
// (metadata completed with the status it had). Destroying a stopped
// capsule does nothing. A capsule in the middle of a pause or resume is a
// Conflict, unless this call already destroyed it on the host: then it
// waits for that operation to settle the record.
func (s *Service) Destroy(ctx context.Context, c store.Capsule, ev store.Event) error {
	ctx = context.WithoutCancel(ctx)
	// destroyed is set once the agent destroyed the capsule: from then on
	// this call has acted and must finish recording it.
	destroyed := false
	deadline := time.Now().Add(destroyTimeout)
	var err error
	for attempt := 0; ; {
		switch c.Status {
		case store.CapsuleStopped:
			return nil
		case store.CapsulePausing, store.CapsuleResuming:
			if !destroyed {
				return wrongStatus(c, "running or paused")
			}
			if time.Now().After(deadline) {
				return errorf(Conflict, "capsule %s was destroyed on its host but stays %s; try again", c.ID, c.Status)
			}
			time.Sleep(settleWait)
			if c, err = s.store.GetCapsule(ctx, c.TeamID, c.ID); err != nil {
				return err
			}
			continue
		}
		if attempt++; attempt > destroyAttempts {
			return errorf(Conflict, "capsule %s kept changing status (now %s); try again", c.ID, c.Status)
		}
		if c.HostID != "" {
			h, err := s.store.Host(ctx, c.HostID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				// The host was deleted meanwhile: nothing left to stop.
			case err != nil:
				return err
			default:
				if err := s.destroyOnAgent(ctx, h, c.ID); err != nil {
					s.log.WarnContext(ctx, "destroying capsule", "capsule_id", c.ID, "host_id", h.ID, "err", err)
					opErr, _ := agentFailure("destroy the capsule", err)
					if opErr.Kind != Conflict {
						// Only a busy capsule (try again) is not the
						// agent failing.
						opErr.Kind = AgentFailed
					}
					opErr.Status = c.Status
					return opErr
				}
				destroyed = true
			}
		}
		// Only from the status the destroy saw: if a start finished
		// meanwhile, the capsule may be back on the host; go again.
		prev := c.Status
		c, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{prev}, store.CapsuleStopped, "",
			withMeta(ev, map[string]any{"status": prev}))
		if err == nil {
			s.log.InfoContext(ctx, "capsule destroyed", "capsule_id", c.ID)
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

// destroyBestEffort asks host h to destroy capsule id and only logs a
// failure: the capsule is already recorded as gone or failed.
func (s *Service) destroyBestEffort(ctx context.Context, h store.Host, id string) {
	if err := s.destroyOnAgent(ctx, h, id); err != nil {
		s.log.WarnContext(ctx, "destroying capsule on its host", "capsule_id", id, "host_id", h.ID, "err", err)
	}
}

// destroyOnAgent asks host h to destroy capsule id; the agent answers
// success for capsules it does not know. A capsule whose sandbox is gone
// but whose host could not remove all of its network or files is
// destroyed too: the host keeps reporting it, and the heartbeat's clean-up
// of finished capsules asks again (cleanUpHost) until nothing is left.
func (s *Service) destroyOnAgent(ctx context.Context, h store.Host, id string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), destroyTimeout)
	defer cancel()
	resp, err := s.agent(h).DestroyCapsule(ctx, connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id}))
	if err != nil {
		return err
	}
	if left := resp.Msg.GetLeftovers(); left != "" {
		s.log.WarnContext(ctx, "capsule destroyed, its host is still removing what it had (retried on heartbeats)",
			"capsule_id", id, "host_id", h.ID, "leftovers", left)
	}
	return nil
}
