package store_test

import (
	"context"
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
