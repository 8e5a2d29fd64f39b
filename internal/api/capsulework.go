package api

import (
	"context"
	"errors"
	"net/http"
	"path"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/hostauth"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// This file holds what every route that works inside a capsule (exec,
// processes, terminals, files) shares: finding the caller's running
// capsule, reaching its envd, recording the use, and turning envd's errors
// into API errors.

// envdCallTimeout bounds one unary call to envd (a file operation, a
// signal, a process list).
const envdCallTimeout = 30 * time.Second

// activeEvery is how often a long operation (a terminal, a stream, a long
// command) touches its capsule, so that the TTL reaper does not pause a
// capsule that is in use; activeEveryFor shortens it for short timeouts.
const activeEvery = 30 * time.Second

// activeEveryFor is the touch interval for a capsule with timeout_sec
// timeoutSec: a quarter of the timeout (the store skips touches less than
// a second apart, so last_active_at may lag by that much more), between
// 250 ms and activeEvery.
func activeEveryFor(timeoutSec int) time.Duration {
	if timeoutSec <= 0 {
		return activeEvery
	}
	return min(activeEvery, max(250*time.Millisecond, time.Duration(timeoutSec)*time.Second/4))
}

// runningCapsule returns the capsule {id} of the caller's team (see
// teamCapsule) when it is running.
func (s *server) runningCapsule(r *http.Request) (store.Capsule, error) {
	c, err := s.teamCapsule(r)
	if err != nil {
		return store.Capsule{}, err
	}
	if c.Status != store.CapsuleRunning {
		hint := ""
		if c.Status == store.CapsulePaused {
			hint = "; resume it first"
		}
		return store.Capsule{}, errorf(codeCapsuleNotRunning, "capsule %s is %s, not running%s", c.ID, c.Status, hint)
	}
	return c, nil
}

// runningEnvd returns the caller's running capsule {id} (runningCapsule)
// and the client of its envd (capsuleEnvd): what an operation inside the
// capsule needs first.
func (s *server) runningEnvd(r *http.Request) (store.Capsule, *envdclient.Client, error) {
	c, err := s.runningCapsule(r)
	if err != nil {
		return c, nil, err
	}
	ec, err := s.capsuleEnvd(r.Context(), c)
	return c, ec, err
}

// capsuleEnvd returns the (shared) client for c's envd, through its agent.
func (s *server) capsuleEnvd(ctx context.Context, c store.Capsule) (*envdclient.Client, error) {
	ec, err := s.envdFor(ctx, c)
	if errors.Is(err, errCapsuleHostGone) || errors.Is(err, store.ErrNotFound) {
		return nil, errorf(codeCapsuleUnreachable, "capsule %s has no host any more", c.ID)
	}
	return ec, err
}

// used records a successful operation on c: it touches last_active_at and,
// when action is not empty, writes an audit row. The operation has already
// happened inside the capsule, so a failure here is logged rather than
// answered: the caller must not retry something that was done.
func (s *server) used(r *http.Request, c store.Capsule, action string, meta map[string]any) {
	ctx := context.WithoutCancel(r.Context())
	var err error
	if action == "" {
		err = s.store.TouchCapsule(ctx, c.ID)
	} else {
		ev := s.event(r, caller(r), action, meta)
		ev.TeamID, ev.ResourceID = c.TeamID, c.ID
		err = s.store.RecordCapsuleUse(ctx, c.ID, ev)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "recording capsule use", "capsule_id", c.ID, "action", action, "err", err)
	}
}

// startUse marks the start of an operation on c that keepActive then
// keeps alive: runningCapsule read c as running, but the TTL reaper may
// have claimed it since, and an operation begun under a pause would be
// cut by it. After startUse the reaper cannot claim c until its timeout
// has passed again, by which time keepActive has touched it.
func (s *server) startUse(ctx context.Context, c store.Capsule) error {
	ok, err := s.store.StartCapsuleUse(ctx, c.ID)
	if err != nil {
		return err
	}
	if !ok {
		return errorf(codeCapsuleNotRunning, "capsule %s is no longer running (it was paused or destroyed meanwhile)", c.ID)
	}
	return nil
}

// keepActive touches c every activeEveryFor its timeout until ctx ends,
// for operations that may outlast the capsule's idle timeout. Such an
// operation begins with startUse, which is the first touch (and the one
// that matters: an operation that starts just before the timeout would
// otherwise be paused under it).
func (s *server) keepActive(ctx context.Context, c store.Capsule) {
	t := time.NewTicker(activeEveryFor(c.TimeoutSec))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.store.TouchCapsule(ctx, c.ID); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "recording capsule activity", "capsule_id", c.ID, "err", err)
		}
	}
}

// envdErrorKinds names the API codes of envd's not_found and already_exists
// for one kind of operation.
type envdErrorKinds struct {
	notFound string
	exists   string
}

var (
	fileErrors    = envdErrorKinds{notFound: codeFileNotFound, exists: codeFileExists}
	processErrors = envdErrorKinds{notFound: codeProcessNotFound, exists: codeConflict}
	// An exec's not_found is its executable or working directory.
	execErrors = envdErrorKinds{notFound: codeFileNotFound, exists: codeConflict}
)

// envdError turns the failure of a call to c's envd into an API error. What
// the caller got wrong (a bad path, a missing file, no permission, a wrong
// state) keeps envd's message, which speaks of the caller's own capsule;
// anything else means the agent or envd could not be reached or failed, and
// the client gets capsule_unreachable while the cause goes to the log.
func (s *server) envdError(ctx context.Context, c store.Capsule, kinds envdErrorKinds, err error) error {
	if err == nil {
		return nil
	}
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return err
	}
	var (
		code, msg string
		header    http.Header
		httpErr   *envdclient.Error
		rpcErr    *connect.Error
	)
	switch {
	case errors.As(err, &httpErr):
		code, msg, header = httpErr.Code, httpErr.Message, httpErr.Header
		if httpErr.Status == http.StatusRequestedRangeNotSatisfiable {
			return errorf(codeRangeNotSatisfiable, "the requested range is outside the file")
		}
	case errors.As(err, &rpcErr):
		code, msg, header = rpcErr.Code().String(), rpcErr.Message(), rpcErr.Meta()
	}
	if header.Get(hostauth.ProxyErrorHeader) != "" {
		// The agent answered, not envd: the capsule itself is missing or
		// not running there.
		code = "proxy_" + code
	}
	switch code {
	case "proxy_failed_precondition":
		return errorf(codeCapsuleNotRunning, "capsule %s is not running on its host", c.ID)
	case "invalid_argument":
		return errorf(codeInvalid, "%s", msg)
	case "not_found":
		return errorf(kinds.notFound, "%s", msg)
	case "already_exists":
		return errorf(kinds.exists, "%s", msg)
	case "permission_denied":
		return errorf(codeForbidden, "%s", msg)
	case "failed_precondition":
		return errorf(codeConflict, "%s", msg)
	case "resource_exhausted":
		if rpcErr != nil && !connect.IsWireError(rpcErr) {
			// Raised here, not by envd: its answer is over the read limit.
			return errorf(codeTooLarge, "the capsule's answer is larger than %d MiB; ask for less (a subdirectory, a smaller depth)", envdclient.MaxMessageBytes>>20)
		}
		return errorf(codeInsufficientStorage, "%s", msg)
	}
	if ctx.Err() != nil {
		// The client went away; nobody reads this answer.
		return errorf(codeCapsuleUnreachable, "request canceled")
	}
	s.log.WarnContext(ctx, "calling envd", "capsule_id", c.ID, "host_id", c.HostID, "err", err)
	return errorf(codeCapsuleUnreachable, "capsule %s did not answer; try again, or check its host", c.ID)
}

// Request field limits shared by processes and files.
const (
	maxPathLen = 4096
	maxTagLen  = 128
	maxUserLen = 64
)

// checkPath refuses what envd would refuse, before anything is sent: an
// empty or relative path, a NUL byte, an absurd length.
func checkPath(field, p string) error {
	switch {
	case p == "":
		return errorf(codeInvalid, "%s is required: an absolute path inside the capsule", field)
	case strings.ContainsRune(p, 0):
		return errorf(codeInvalid, "%s must not contain NUL bytes", field)
	case len(p) > maxPathLen:
		return errorf(codeInvalid, "%s is longer than %d bytes", field, maxPathLen)
	case !path.IsAbs(p):
		return errorf(codeInvalid, "%s must be absolute (start with /), not %q", field, p)
	}
	return nil
}

// checkUser refuses user names that cannot name an account: envd answers an
// unknown one itself.
func checkUser(u string) error {
	if len(u) > maxUserLen || strings.ContainsAny(u, ":/\x00\n") {
		return errorf(codeInvalid, "user %q is not a user name", u)
	}
	return nil
}

// checkText refuses control characters (and NUL) in short identifiers.
func checkText(field, v string, limit int) error {
	if len(v) > limit {
		return errorf(codeInvalid, "%s is longer than %d bytes", field, limit)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errorf(codeInvalid, "%s must not contain control characters", field)
		}
	}
	return nil
}
