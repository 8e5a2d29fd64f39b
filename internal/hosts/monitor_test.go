package hosts_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn/internal/hosts"
	"github.com/wrenn-dev/wrenn/internal/store"
	"github.com/wrenn-dev/wrenn/internal/testdb"
)

// registeredHost creates a host and registers it through the store, as the
// API does.
func registeredHost(t *testing.T, st *store.Store, n int) string {
	t.Helper()
	ctx := t.Context()
	tok := store.Secret{Hash: "reg" + string(rune('a'+n)), ExpiresAt: time.Now().Add(time.Hour)}
	h, err := st.CreateHost(ctx, store.NewHost{Type: store.HostRegular}, tok, store.Event{ActorType: store.ActorSystem, Action: "host.create"})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	_, err = st.Register(ctx, tok.Hash, store.HostSpec{Address: "127.0.0.1:1", Arch: "amd64", CPUs: 1, MemoryMB: 1, DiskMB: 1, Runtime: "gvisor"},
		store.Secret{Hash: "cred" + h.ID, ExpiresAt: exp}, store.Secret{Hash: "refresh" + h.ID, ExpiresAt: exp},
		store.Event{Action: "host.register"})
	if err != nil {
		t.Fatal(err)
	}
	return h.ID
}

func status(t *testing.T, st *store.Store, id string) string {
	t.Helper()
	h, err := st.Host(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return h.Status
}

func TestMonitorMarksSilentHostsAndHeartbeatRevives(t *testing.T) {
	st, _ := testdb.Store(t)
	ctx := t.Context()
	silent := registeredHost(t, st, 0)
	alive := registeredHost(t, st, 1)

	const timeout = time.Second
	m := &hosts.Monitor{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: 200 * time.Millisecond, Timeout: timeout}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()

	deadline := time.Now().Add(5 * timeout)
	for status(t, st, silent) != store.HostUnreachable {
		if time.Now().After(deadline) {
			t.Fatalf("silent host still %s after %s, want unreachable", status(t, st, silent), 5*timeout)
		}
		if _, err := st.Heartbeat(ctx, alive, store.Capacity{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := status(t, st, alive); got != store.HostOnline {
		t.Errorf("heartbeating host: got %s, want online", got)
	}
	revived, err := st.Heartbeat(ctx, silent, store.Capacity{FreeCPUs: 1})
	if err != nil || !revived {
		t.Fatalf("heartbeat after silence: got revived=%v err=%v, want revived", revived, err)
	}
	if got := status(t, st, silent); got != store.HostOnline {
		t.Errorf("after heartbeat: got %s, want online", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestMonitorRunsOnOneReplicaAtATime(t *testing.T) {
	st, url := testdb.Store(t)
	ctx := t.Context()
	id := registeredHost(t, st, 0)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, `UPDATE hosts SET last_heartbeat_at = now() - interval '1 hour' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}

	// Another replica is in its round: it holds the lock.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(x'5772656e6e02'::bigint)`); err != nil {
		t.Fatal(err)
	}
	m := &hosts.Monitor{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Interval: time.Second, Timeout: time.Second}
	if err := m.Check(ctx); err != nil {
		t.Fatalf("Check while locked: %v", err)
	}
	if got := status(t, st, id); got != store.HostOnline {
		t.Errorf("while another replica holds the lock: got %s, want online (untouched)", got)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if got := status(t, st, id); got != store.HostUnreachable {
		t.Errorf("after the lock is free: got %s, want unreachable", got)
	}
}

func TestUnreachableEventBelongsToHostTeam(t *testing.T) {
	st, url := testdb.Store(t)
	ctx := t.Context()
	_, team, err := st.CreateUser(ctx, store.NewUser{Email: "o@example.com", PasswordHash: "x", TeamName: "o"}, store.Event{Action: "auth.signup"})
	if err != nil {
		t.Fatal(err)
	}
	tok := store.Secret{Hash: "reg-byoc", ExpiresAt: time.Now().Add(time.Hour)}
	h, err := st.CreateHost(ctx, store.NewHost{Type: store.HostBYOC, TeamID: team.TeamID}, tok, store.Event{ActorType: store.ActorSystem, Action: "host.create"})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	if _, err := st.Register(ctx, tok.Hash, store.HostSpec{Address: "127.0.0.1:1", Arch: "amd64", CPUs: 1, MemoryMB: 1, DiskMB: 1, Runtime: "gvisor"},
		store.Secret{Hash: "cred-byoc", ExpiresAt: exp}, store.Secret{Hash: "refresh-byoc", ExpiresAt: exp}, store.Event{Action: "host.register"}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, `UPDATE hosts SET last_heartbeat_at = now() - interval '1 hour' WHERE id = $1`, h.ID); err != nil {
		t.Fatal(err)
	}
	m := &hosts.Monitor{Store: st, Log: slog.New(slog.DiscardHandler), Interval: time.Second, Timeout: time.Second}
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	entries, err := st.AuditLog(ctx, team.TeamID, false, store.AuditFilter{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].Action != "host.unreachable" || entries[0].ResourceID != h.ID {
		t.Errorf("team's audit log: got %+v, want host.unreachable of %s first", entries, h.ID)
	}
}
