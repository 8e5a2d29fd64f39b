// Package testdb gives each test a fresh database on the throw-away
// PostgreSQL cluster that `make test` (scripts/test.sh) starts.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/store"
)

// EnvVar names the variable holding the admin URL of the test cluster.
const EnvVar = "WRENN_TEST_DATABASE_URL"

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// New creates an empty database named after the test, drops it when the test
// ends, and returns its connection URL. The test fails (never skips) when no
// cluster is configured, because a skipped database test would hide a defect.
func New(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvVar)
	if admin == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which starts a throw-away PostgreSQL", EnvVar)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	base := unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	name := "t_" + base + "_" + hex.EncodeToString(suffix)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connecting to test cluster: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("connecting to drop test database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database: %v", err)
		}
	})

	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parsing %s: %v", EnvVar, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Store returns a fresh database with every migration applied and a store
// open on it (closed when the test ends), and the database's URL.
func Store(t testing.TB) (*store.Store, string) {
	t.Helper()
	url := New(t)
	if err := store.MigrateUp(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, url
}
