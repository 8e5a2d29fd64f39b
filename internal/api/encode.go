package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Body limits: requests are small JSON objects, except heartbeats, which
// list every capsule of a host: paused ones too, as many as the host's
// address pool has /30s (16384 in a /16, about 1 MB of JSON), so the bound
// leaves room for several times that.
const (
	maxBody          = 64 << 10
	maxHeartbeatBody = 8 << 20
)

// encode writes v as JSON with status.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status is sent; a failed write means the client went away.
	_ = json.NewEncoder(w).Encode(v)
}

// ptr returns s for a nullable JSON field: nil (null) when s is "".
func ptr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// decode reads one JSON object of at most limit bytes into a T, refusing
// unknown fields and trailing data, and turns every failure into an *Error
// that says what is wrong.
func decode[T any](w http.ResponseWriter, r *http.Request, limit int64) (T, error) {
	var v T
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, decodeError(err, limit)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return v, decodeError(err, limit)
		}
		return v, errorf(codeInvalid, "request body must hold a single JSON object")
	}
	return v, nil
}

func decodeError(err error, limit int64) *Error {
	var (
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
		tooLarge *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooLarge):
		return errorf(codeTooLarge, "request body is larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return errorf(codeInvalid, "request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(codeInvalid, "request body is truncated JSON")
	case errors.As(err, &syntax):
		return errorf(codeInvalid, "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errorf(codeInvalid, "request body must be a JSON object, not %s", typ.Value)
		}
		return errorf(codeInvalid, "field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errorf(codeInvalid, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return errorf(codeInvalid, "invalid JSON: %v", err)
	}
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	default:
		return fmt.Sprintf("of type %s", kind)
	}
}

// answer writes v as JSON with status and a Content-Length, and flushes
// it: the client has its whole answer at once, while the handler goes on
// with bookkeeping that need not delay it.
func answer(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
	_ = http.NewResponseController(w).Flush()
}

// nonNil returns s, or an empty slice for nil, so that it encodes as [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
