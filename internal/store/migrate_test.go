package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/testdb"
)

func tables(t *testing.T, url string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var n int
	err = conn.QueryRow(t.Context(), `
		SELECT count(*) FROM information_schema.tables
		WHERE table_schema = 'public' AND table_name <> 'goose_db_version'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrationsUpDownUp(t *testing.T) {
	url := testdb.New(t)
	m, err := store.NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	ctx := t.Context()

	steps := []struct {
		name string
		run  func() error
		want func(n int) bool
		desc string
	}{
		{"up", func() error { _, err := m.Up(ctx); return err }, func(n int) bool { return n >= 10 }, "at least 10 tables"},
		{"down to zero", func() error { _, err := m.DownTo(ctx, 0); return err }, func(n int) bool { return n == 0 }, "no tables"},
		{"up again", func() error { _, err := m.Up(ctx); return err }, func(n int) bool { return n >= 10 }, "at least 10 tables"},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if n := tables(t, url); !s.want(n) {
			t.Fatalf("after %s: got %d tables, want %s", s.name, n, s.desc)
		}
	}
	pending, err := m.HasPending(ctx)
	if err != nil || pending {
		t.Errorf("after up: got pending=%v err=%v, want nothing pending", pending, err)
	}
}

func TestSigningKeyShared(t *testing.T) {
	url := testdb.New(t)
	if err := store.MigrateUp(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	// Two stores stand for two replicas starting at once.
	a, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := store.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ka, err := a.SigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.SigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !ka.Equal(kb) {
		t.Errorf("replicas got different signing keys")
	}
}

// Keys made before scopes keep what they could do but minting keys and
// platform-admin power, and a database whose first user became platform
// admin counts as bootstrapped.
func TestMigrateAuthz(t *testing.T) {
	url := testdb.New(t)
	m, err := store.NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = m.Close() }()
	ctx := t.Context()
	var before int64
	for _, src := range m.ListSources() {
		if strings.HasSuffix(src.Path, "_authz.sql") {
			before = src.Version - 1
		}
	}
	if before == 0 {
		t.Fatal("no _authz.sql migration")
	}
	if _, err := m.UpTo(ctx, before); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, `
		WITH u AS (INSERT INTO users (email, name, password_hash, is_platform_admin) VALUES ('a@example.com', '', 'x', true) RETURNING id),
		     t AS (INSERT INTO teams (name) VALUES ('t') RETURNING id)
		INSERT INTO api_keys (team_id, created_by, name, prefix, key_hash)
		SELECT t.id, u.id, 'old', 'wrn_old', 'hash' FROM t, u`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Up(ctx); err != nil {
		t.Fatal(err)
	}
	var scopes []string
	if err := conn.QueryRow(ctx, `SELECT scopes FROM api_keys WHERE name = 'old'`).Scan(&scopes); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(scopes, ","); got != "capsules,exec,files,snapshots,templates,hosts,team" {
		t.Errorf("old key: got scopes %s, want every scope but keys:manage and platform:admin", got)
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Spent, even once no platform admin is left.
	if _, err := conn.Exec(ctx, `UPDATE users SET is_platform_admin = false`); err != nil {
		t.Fatal(err)
	}
	if open, err := st.BootstrapOpen(ctx); err != nil || open {
		t.Errorf("bootstrap after migrating a database with a platform admin: got open=%v err=%v, want spent", open, err)
	}
}
