package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/wrenn-dev/wrenn/internal/lifecycle"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// Error is an error the client is meant to see: a stable code and a message
// saying what is wrong.
type Error struct {
	Code    string
	Message string
	// Status is the capsule's current status, set on the conflicts of
	// lifecycle operations so that clients need not ask again.
	Status string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Error codes.
const (
	codeInvalid                  = "invalid_request"
	codeUnauthenticated          = "unauthenticated"
	codeInvalidCredentials       = "invalid_credentials"
	codeInvalidRegistrationToken = "invalid_registration_token"
	codeInvalidHostCredential    = "invalid_host_credential"
	codeInvalidRefreshToken      = "invalid_refresh_token"
	codeTLSKeyMismatch           = "tls_key_mismatch"
	codeForbidden                = "forbidden"
	codeNotFound                 = "not_found"
	codeMethodNotAllowed         = "method_not_allowed"
	codeConflict                 = "conflict"
	codeTooLarge                 = "payload_too_large"
	codeRateLimited              = "rate_limited"
	codeInternal                 = "internal"
	codeUnavailable              = "unavailable"

	// Capsules and templates.
	codeCapsuleNotFound     = "capsule_not_found"
	codeTemplateNotFound    = "template_not_found"
	codeTemplateUnavailable = "template_unavailable"
	codeNoHost              = "no_host"
	codeNoCapacity          = "no_capacity"
	codeAgentError          = "agent_error"
	codeNameTaken           = "name_taken"
	codeTemplateInUse       = "template_in_use"
	codeQuotaExceeded       = "quota_exceeded"
)

// Error codes of work inside a capsule (processes and files).
const (
	codeCapsuleNotRunning   = "capsule_not_running"
	codeCapsuleUnreachable  = "capsule_unreachable"
	codePortNotListening    = "port_not_listening"
	codeProcessNotFound     = "process_not_found"
	codeFileNotFound        = "file_not_found"
	codeFileExists          = "file_exists"
	codeRangeNotSatisfiable = "range_not_satisfiable"
	codeInsufficientStorage = "insufficient_storage"
)

// statusOf maps every error code to its HTTP status: the one place where
// that mapping lives.
var statusOf = map[string]int{
	codeInvalid:                  http.StatusBadRequest,
	codeUnauthenticated:          http.StatusUnauthorized,
	codeInvalidCredentials:       http.StatusUnauthorized,
	codeInvalidRegistrationToken: http.StatusUnauthorized,
	codeInvalidHostCredential:    http.StatusUnauthorized,
	codeInvalidRefreshToken:      http.StatusUnauthorized,
	codeTLSKeyMismatch:           http.StatusConflict,
	codeForbidden:                http.StatusForbidden,
	codeNotFound:                 http.StatusNotFound,
	codeMethodNotAllowed:         http.StatusMethodNotAllowed,
	codeConflict:                 http.StatusConflict,
	codeTooLarge:                 http.StatusRequestEntityTooLarge,
	codeRateLimited:              http.StatusTooManyRequests,
	codeInternal:                 http.StatusInternalServerError,
	codeUnavailable:              http.StatusServiceUnavailable,

	codeCapsuleNotFound:     http.StatusNotFound,
	codeTemplateNotFound:    http.StatusNotFound,
	codeTemplateUnavailable: http.StatusConflict,
	codeNoHost:              http.StatusServiceUnavailable,
	codeNoCapacity:          http.StatusServiceUnavailable,
	codeAgentError:          http.StatusBadGateway,
	codeNameTaken:           http.StatusConflict,
	codeTemplateInUse:       http.StatusConflict,
	codeQuotaExceeded:       http.StatusForbidden,
	codeCapsuleNotRunning:   http.StatusConflict,
	codeCapsuleUnreachable:  http.StatusBadGateway,
	codePortNotListening:    http.StatusBadGateway,
	codeProcessNotFound:     http.StatusNotFound,
	codeFileNotFound:        http.StatusNotFound,
	codeFileExists:          http.StatusConflict,
	codeRangeNotSatisfiable: http.StatusRequestedRangeNotSatisfiable,
	codeInsufficientStorage: http.StatusInsufficientStorage,
}

// codeOfKind maps the capsule service's error kinds to error codes.
var codeOfKind = map[lifecycle.Kind]string{
	lifecycle.Invalid:             codeInvalid,
	lifecycle.Conflict:            codeConflict,
	lifecycle.CapsuleNotFound:     codeCapsuleNotFound,
	lifecycle.TemplateNotFound:    codeTemplateNotFound,
	lifecycle.TemplateUnavailable: codeTemplateUnavailable,
	lifecycle.TemplateInUse:       codeTemplateInUse,
	lifecycle.NameTaken:           codeNameTaken,
	lifecycle.NoHost:              codeNoHost,
	lifecycle.NoCapacity:          codeNoCapacity,
	lifecycle.AgentFailed:         codeAgentError,
	lifecycle.QuotaExceeded:       codeQuotaExceeded,
	lifecycle.TooManyCreates:      codeRateLimited,
}

// errorf returns an *Error with a formatted message.
func errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status,omitempty"`
		// WrennCode is the code of this API when Code is the compatible
		// API's.
		WrennCode string `json:"wrenn_code,omitempty"`
	} `json:"error"`
}

// writeError answers err in the JSON error shape. Errors that are not an
// *Error are internal: the client gets a generic message and only the log
// gets the cause.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var (
		e  *Error
		le *lifecycle.Error
	)
	switch {
	case errors.As(err, &e):
	case errors.As(err, &le):
		e = &Error{Code: codeOfKind[le.Kind], Message: le.Message, Status: le.Status}
	case errors.Is(err, store.ErrNotFound):
		e = errorf(codeNotFound, "not found")
	case errors.Is(err, store.ErrConflict):
		e = errorf(codeConflict, "conflicts with existing data")
	case r.Context().Err() != nil:
		// The client went away (a closed tab, an aborted fetch): the
		// failure is the cancellation, not a fault of the server.
		s.log.DebugContext(r.Context(), "request canceled by the client", "method", r.Method, "path", r.URL.Path,
			"request_id", w.Header().Get("X-Request-ID"), "err", err)
		e = errorf(codeUnavailable, "the request was canceled")
	default:
		s.log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path,
			"request_id", w.Header().Get("X-Request-ID"), "err", err)
		e = errorf(codeInternal, "internal error; see the control plane log (request id %s)", w.Header().Get("X-Request-ID"))
	}
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	var body errorBody
	body.Error.Code, body.Error.Message, body.Error.Status = e.Code, e.Message, e.Status
	if isCompat(r) {
		// The Python SDK's codes (compat.go); this API's own stays in
		// wrenn_code.
		body.Error.WrennCode = e.Code
		body.Error.Code = compatCode(e.Code)
		if e.Code == codeConflict && e.Status != "" {
			body.Error.Code = "invalid_state" // a lifecycle call in the wrong status
		}
	}
	encode(w, status, body)
}
