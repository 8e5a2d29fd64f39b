package lifecycle

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/capsule"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// This file holds what every operation does when it cannot act or its
// agent call fails: the conflict that names the status found, and the
// settling of a capsule that a failed call left in a transient status.

// wrongStatus is the Conflict of an operation that found capsule c in a
// status it cannot act on. The message names the status, and Error.Status
// carries it.
func wrongStatus(c store.Capsule, want string) *Error {
	var hint string
	switch c.Status {
	case store.CapsulePaused:
		hint = "; resume it first"
	case store.CapsuleRunning:
		hint = "; it is already running"
	case store.CapsulePending, store.CapsuleStarting, store.CapsulePausing, store.CapsuleResuming:
		hint = "; another operation is under way, try again when it is done"
	case store.CapsuleMissing:
		hint = "; its host is not answering"
	case store.CapsuleStopped, store.CapsuleError:
		hint = "; it cannot run again"
	}
	e := errorf(Conflict, "capsule %s is %s, not %s%s", c.ID, c.Status, want, hint)
	e.Status = c.Status
	return e
}

// noHost is the Conflict of an operation on a capsule whose host is gone.
func noHost(c store.Capsule) *Error {
	return errorf(Conflict, "capsule %s has no host any more", c.ID)
}

// agentFailure turns a failed lifecycle call into the caller's error and
// the capsule's status reason. The agent's own message is kept only for
// the codes the agent answers on purpose; for the others (dial errors,
// timeouts, foreign answers) only the code, because the cause could
// describe the network behind an address a BYOC team chose.
func agentFailure(what string, err error) (*Error, string) {
	code := connect.CodeOf(err)
	detail := code.String()
	var ce *connect.Error
	switch code {
	case connect.CodeFailedPrecondition, connect.CodeResourceExhausted, connect.CodeInvalidArgument,
		connect.CodeAlreadyExists, connect.CodeNotFound, connect.CodeAborted:
		if errors.As(err, &ce) && ce.Message() != "" {
			detail += ": " + ce.Message()
		}
	}
	reason := "the host agent could not " + what + ": " + detail
	switch code {
	case connect.CodeFailedPrecondition:
		return errorf(TemplateUnavailable, "%s", reason), reason
	case connect.CodeResourceExhausted:
		return errorf(NoCapacity, "%s", reason), reason
	case connect.CodeAborted:
		// Another operation on the capsule is under way on the host.
		return errorf(Conflict, "%s; try again", reason), reason
	default:
		return errorf(AgentFailed, "%s", reason), reason
	}
}

// hostLost records that capsule c, in a transient status, cannot be
// operated on because its host row is gone (err is ErrNotFound) or could
// not be read.
func (s *Service) hostLost(ctx context.Context, c store.Capsule, err error) (store.Capsule, error) {
	if !errors.Is(err, store.ErrNotFound) {
		// The database failed: leave the transient status for
		// reconciliation rather than guess.
		return c, err
	}
	fc, serr := s.store.SetCapsuleStatus(ctx, c.ID, []string{c.Status}, store.CapsuleError, "its host was deleted")
	if serr != nil && !errors.Is(serr, store.ErrConflict) {
		return c, serr
	}
	return fc, noHost(c)
}

// settleAfterFailure records what capsule c, left in status from by a
// failed op, truly is: it asks the agent. Running or paused there, it is
// recorded so, with the failure as its reason; gone or stopped there, it is
// in error; and when the agent cannot be reached at all (or reports a
// status of its own) the transient status stays for reconciliation to
// settle when the host next reports. It returns the capsule as recorded
// and the caller's error.
func (s *Service) settleAfterFailure(ctx context.Context, c store.Capsule, h store.Host, from, op string, callErr error) (store.Capsule, error) {
	opErr, reason := agentFailure(op+" the capsule", callErr)
	s.log.WarnContext(ctx, "capsule "+op+" failed", "capsule_id", c.ID, "host_id", h.ID, "err", callErr)
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	got, gerr := s.agent(h).GetCapsule(pctx, connect.NewRequest(&hostagentv1.GetCapsuleRequest{CapsuleId: c.ID}))
	cancel()
	var (
		fc  store.Capsule
		err error
	)
	var reported capsule.Status
	if gerr == nil {
		reported = capsule.StatusOf(got.Msg.GetCapsule())
	}
	switch {
	case gerr == nil && reported == capsule.Running:
		fc, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{from}, store.CapsuleRunning, op+" failed: "+reason)
	case gerr == nil && reported == capsule.Paused:
		fc, err = s.store.MarkCapsulePaused(ctx, c.ID, []string{from}, got.Msg.GetCapsule().GetSnapshotBytes(), op+" failed: "+reason)
	case (gerr == nil && reported == capsule.Stopped) || connect.CodeOf(gerr) == connect.CodeNotFound:
		fc, err = s.store.SetCapsuleStatus(ctx, c.ID, []string{from}, store.CapsuleError,
			op+" failed and its host no longer has the capsule: "+reason)
		if opErr.Kind == Conflict {
			opErr.Kind = AgentFailed
		}
	default:
		// Unreachable, or in a status of its own that the agent will
		// report as running, paused or stopped later.
		s.log.WarnContext(ctx, "asking the agent about a capsule after a failure", "capsule_id", c.ID, "host_id", h.ID, "err", gerr)
		lc, err := s.store.LeaveToHost(ctx, c.ID, from, op+" failed and its host could not be asked what became of the capsule; its next heartbeat settles it: "+reason)
		if err != nil && !errors.Is(err, store.ErrConflict) {
			s.log.ErrorContext(ctx, "recording capsule "+op+" failure", "capsule_id", c.ID, "err", err)
			lc = c
		}
		opErr.Status = lc.Status
		return lc, opErr
	}
	if err != nil && !errors.Is(err, store.ErrConflict) {
		s.log.ErrorContext(ctx, "recording capsule "+op+" failure", "capsule_id", c.ID, "err", err)
		return c, opErr
	}
	opErr.Status = fc.Status
	return fc, opErr
}
