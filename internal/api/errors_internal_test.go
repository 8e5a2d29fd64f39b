package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn/internal/lifecycle"
)

// TestWriteErrorCanceled checks that a request the client gave up on is not
// logged as an internal error (the dashboard aborts fetches when a view
// closes), while a real failure still is.
func TestWriteErrorCanceled(t *testing.T) {
	var logs bytes.Buffer
	s := &server{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	failure := errors.New("envd: context canceled")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	s.writeError(rec, httptest.NewRequest("GET", "/v1/capsules/x/metrics", nil).WithContext(ctx), failure)
	if rec.Code != http.StatusServiceUnavailable || logs.Len() != 0 {
		t.Errorf("canceled request: status %d, log %q; want 503 and nothing logged at info or above", rec.Code, logs.String())
	}

	rec = httptest.NewRecorder()
	s.writeError(rec, httptest.NewRequest("GET", "/v1/capsules/x/metrics", nil), failure)
	if rec.Code != http.StatusInternalServerError || !strings.Contains(logs.String(), "internal error") {
		t.Errorf("failed request: status %d, log %q; want 500 and an error logged", rec.Code, logs.String())
	}
}

// TestEveryServiceErrorHasACode checks that the error table maps every
// kind of the capsule service's errors to a code with an HTTP status, so
// that none of them reaches a client as a 500.
func TestEveryServiceErrorHasACode(t *testing.T) {
	for _, k := range lifecycle.Kinds {
		code, ok := codeOfKind[k]
		if !ok {
			t.Errorf("kind %q has no error code in codeOfKind", k)
			continue
		}
		if _, ok := statusOf[code]; !ok {
			t.Errorf("kind %q maps to code %q, which has no HTTP status", k, code)
		}
	}
	if len(codeOfKind) != len(lifecycle.Kinds) {
		t.Errorf("codeOfKind has %d entries, lifecycle.Kinds %d", len(codeOfKind), len(lifecycle.Kinds))
	}
}
