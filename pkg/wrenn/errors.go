package wrenn

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an error answered by the API: {"error": {"code", "message"}}
// with an HTTP status.
type Error struct {
	// StatusCode is the HTTP status, e.g. 404.
	StatusCode int
	// Code is the API's error code, e.g. "capsule_not_found".
	Code string
	// Message says what is wrong, in the API's words.
	Message string
	// CapsuleStatus is the capsule's current status, set on the 409 of a
	// lifecycle operation that found the capsule in another status.
	CapsuleStatus string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%d %s): %s", e.Code, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Sentinels that errors.Is matches an *Error against, by HTTP status.
var (
	ErrBadRequest      = errors.New("wrenn: bad request")          // 400
	ErrUnauthenticated = errors.New("wrenn: unauthenticated")      // 401
	ErrForbidden       = errors.New("wrenn: forbidden")            // 403
	ErrNotFound        = errors.New("wrenn: not found")            // 404
	ErrConflict        = errors.New("wrenn: conflict")             // 409
	ErrUnavailable     = errors.New("wrenn: unavailable")          // 503
	ErrRateLimited     = errors.New("wrenn: rate limited")         // 429
	ErrTooLarge        = errors.New("wrenn: payload too large")    // 413
	ErrStorage         = errors.New("wrenn: insufficient storage") // 507
)

var sentinelOf = map[int]error{
	http.StatusBadRequest:            ErrBadRequest,
	http.StatusUnauthorized:          ErrUnauthenticated,
	http.StatusForbidden:             ErrForbidden,
	http.StatusNotFound:              ErrNotFound,
	http.StatusConflict:              ErrConflict,
	http.StatusServiceUnavailable:    ErrUnavailable,
	http.StatusTooManyRequests:       ErrRateLimited,
	http.StatusRequestEntityTooLarge: ErrTooLarge,
	http.StatusInsufficientStorage:   ErrStorage,
}

// Is reports whether target is the sentinel of e's HTTP status.
func (e *Error) Is(target error) bool {
	s, ok := sentinelOf[e.StatusCode]
	return ok && s == target
}

// IsCode reports whether err is an *Error with the API error code code
// (such as "capsule_not_running").
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}
