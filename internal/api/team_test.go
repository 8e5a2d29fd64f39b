package api_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// team sets up alice's team: alice (owner), olga (owner), adam (admin),
// mia (member), and nina, who has signed up but is in no team of alice's.
type teamFixture struct {
	alice, olga, adam, mia, nina account
}

func (e *env) team() teamFixture {
	e.t.Helper()
	f := teamFixture{
		alice: e.signup("alice@example.com"), olga: e.signup("olga@example.com"),
		adam: e.signup("adam@example.com"), mia: e.signup("mia@example.com"), nina: e.signup("nina@example.com"),
	}
	for _, m := range []struct {
		a    account
		role string
	}{{f.olga, "owner"}, {f.adam, "admin"}, {f.mia, "member"}} {
		e.call("POST", "/v1/team/members", map[string]string{"email": m.a.email, "role": m.role}, f.alice.bearer()...).
			want(e.t, "add "+m.a.email, http.StatusCreated)
	}
	return f
}

// in returns a's headers acting in alice's team.
func (f teamFixture) in(a account) []string {
	return append(a.bearer(), "X-Team-ID", f.alice.teamID)
}

func (e *env) roles(f teamFixture) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, m := range e.call("GET", "/v1/team/members", nil, f.alice.bearer()...).want(e.t, "list members", http.StatusOK).list {
		mm := m.(map[string]any)
		out[mm["email"].(string)] = mm["role"].(string)
	}
	return out
}

func TestTeamMembersList(t *testing.T) {
	e := newEnv(t)
	f := e.team()
	key := e.createKey("k", []string{"team"}, f.in(f.mia)...)
	for name, h := range map[string][]string{"member": f.in(f.mia), "API key": {"X-API-Key", key}} {
		r := e.call("GET", "/v1/team/members", nil, h...).want(t, "list as "+name, http.StatusOK)
		if len(r.list) != 4 {
			t.Fatalf("%s: got %d members, want 4: %s", name, len(r.list), r.raw)
		}
		first := r.list[0].(map[string]any)
		for _, k := range []string{"user_id", "email", "name", "role", "joined_at"} {
			if _, ok := first[k]; !ok {
				t.Errorf("%s: member lacks %s: %v", name, k, first)
			}
		}
		if first["role"] != "owner" {
			t.Errorf("%s: got first member %v, want an owner first", name, first)
		}
	}
	e.call("GET", "/v1/team/members", nil).want(t, "unauthenticated", http.StatusUnauthorized)
}

func TestTeamMembersAdd(t *testing.T) {
	e := newEnv(t)
	f := e.team()
	// Even with the team scope, a key never changes the membership.
	key := e.createKey("k", []string{"team"}, f.alice.bearer()...)
	tests := []struct {
		name    string
		headers []string
		body    any
		status  int
	}{
		{"member cannot add", f.in(f.mia), map[string]string{"email": "nina@example.com", "role": "member"}, http.StatusForbidden},
		{"API key cannot add", []string{"X-API-Key", key}, map[string]string{"email": "nina@example.com", "role": "member"}, http.StatusForbidden},
		{"admin cannot add an owner", f.in(f.adam), map[string]string{"email": "nina@example.com", "role": "owner"}, http.StatusForbidden},
		{"bad role", f.alice.bearer(), map[string]string{"email": "nina@example.com", "role": "god"}, http.StatusBadRequest},
		{"no role", f.alice.bearer(), map[string]string{"email": "nina@example.com"}, http.StatusBadRequest},
		{"bad email", f.alice.bearer(), map[string]string{"email": "nina", "role": "member"}, http.StatusBadRequest},
		{"unknown field", f.alice.bearer(), map[string]string{"email": "nina@example.com", "role": "member", "x": "y"}, http.StatusBadRequest},
		{"no such account", f.alice.bearer(), map[string]string{"email": "ghost@example.com", "role": "member"}, http.StatusNotFound},
		{"already a member", f.alice.bearer(), map[string]string{"email": "MIA@example.com", "role": "admin"}, http.StatusConflict},
		{"admin adds a member", f.in(f.adam), map[string]string{"email": "Nina@Example.com", "role": "member"}, http.StatusCreated},
	}
	for _, tt := range tests {
		r := e.call("POST", "/v1/team/members", tt.body, tt.headers...)
		if r.status != tt.status {
			t.Errorf("%s: got %d %s, want %d", tt.name, r.status, r.raw, tt.status)
		}
		if tt.status == http.StatusCreated && (r.str("email") != "nina@example.com" || r.str("role") != "member" || r.str("user_id") != f.nina.id) {
			t.Errorf("%s: got %s", tt.name, r.raw)
		}
	}
	if got := e.roles(f)["nina@example.com"]; got != "member" {
		t.Errorf("nina: got role %q, want member", got)
	}
	e.call("GET", "/v1/me", nil, f.in(f.nina)...).want(t, "nina acts in alice's team", http.StatusOK)
	var n int
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'team.member.add' AND team_id = $1`, f.alice.teamID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("got %d team.member.add audit rows, want 4", n)
	}
}

func TestTeamMembersUpdate(t *testing.T) {
	e := newEnv(t)
	f := e.team()
	patch := func(who []string, target account, role string) response {
		return e.call("PATCH", "/v1/team/members/"+target.id, map[string]string{"role": role}, who...)
	}
	tests := []struct {
		name   string
		who    []string
		target account
		role   string
		status int
	}{
		{"member cannot change roles", f.in(f.mia), f.mia, "admin", http.StatusForbidden},
		{"admin cannot make an owner", f.in(f.adam), f.mia, "owner", http.StatusForbidden},
		{"admin cannot demote an owner", f.in(f.adam), f.olga, "member", http.StatusForbidden},
		{"bad role", f.alice.bearer(), f.mia, "chief", http.StatusBadRequest},
		{"not in the team", f.alice.bearer(), f.nina, "admin", http.StatusNotFound},
		{"admin promotes a member to admin", f.in(f.adam), f.mia, "admin", http.StatusOK},
		{"owner demotes an owner", f.alice.bearer(), f.olga, "member", http.StatusOK},
		{"last owner cannot step down", f.alice.bearer(), f.alice, "admin", http.StatusConflict},
		{"owner makes an owner", f.alice.bearer(), f.olga, "owner", http.StatusOK},
		{"owner steps down when another is left", f.alice.bearer(), f.alice, "admin", http.StatusOK},
	}
	for _, tt := range tests {
		if r := patch(tt.who, tt.target, tt.role); r.status != tt.status {
			t.Errorf("%s: got %d %s, want %d", tt.name, r.status, r.raw, tt.status)
		}
	}
	e.call("PATCH", "/v1/team/members/not-a-uuid", map[string]string{"role": "admin"}, f.in(f.olga)...).want(t, "bad user id", http.StatusNotFound)
	want := map[string]string{"alice@example.com": "admin", "olga@example.com": "owner", "adam@example.com": "admin", "mia@example.com": "admin"}
	got := e.roles(f)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got role %q, want %q", k, got[k], v)
		}
	}
}

func TestTeamMembersRemove(t *testing.T) {
	e := newEnv(t)
	f := e.team()
	del := func(who []string, target account) int {
		return e.call("DELETE", "/v1/team/members/"+target.id, nil, who...).status
	}
	// A key mia made for the team, and one she made for her own.
	teamKey := e.call("POST", "/v1/api-keys", map[string]string{"name": "mia's"}, f.in(f.mia)...).want(t, "mia's key", http.StatusCreated).body["key"].(string)
	ownKey := e.call("POST", "/v1/api-keys", map[string]string{"name": "mia's own"}, f.mia.bearer()...).want(t, "mia's own key", http.StatusCreated).body["key"].(string)
	e.call("GET", "/v1/capsules", nil, "X-API-Key", teamKey).want(t, "mia's key before she leaves", http.StatusOK)
	tests := []struct {
		name   string
		who    []string
		target account
		status int
	}{
		{"member cannot remove another", f.in(f.mia), f.adam, http.StatusForbidden},
		{"admin cannot remove an owner", f.in(f.adam), f.olga, http.StatusForbidden},
		{"not in the team", f.alice.bearer(), f.nina, http.StatusNotFound},
		{"member leaves", f.in(f.mia), f.mia, http.StatusNoContent},
		{"owner removes an owner", f.alice.bearer(), f.olga, http.StatusNoContent},
		{"last owner cannot leave", f.alice.bearer(), f.alice, http.StatusConflict},
		{"admin leaves", f.in(f.adam), f.adam, http.StatusNoContent},
	}
	for _, tt := range tests {
		if got := del(tt.who, tt.target); got != tt.status {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.status)
		}
	}
	e.call("GET", "/v1/me", nil, f.in(f.mia)...).want(t, "mia after leaving", http.StatusForbidden)
	e.call("GET", "/v1/capsules", nil, "X-API-Key", teamKey).want(t, "mia's key for the team she left", http.StatusUnauthorized)
	e.call("GET", "/v1/capsules", nil, "X-API-Key", ownKey).want(t, "mia's key for her own team", http.StatusOK)
	if got := e.roles(f); len(got) != 1 || got["alice@example.com"] != "owner" {
		t.Errorf("got members %v, want only alice", got)
	}
	var n int
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'team.member.remove'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("got %d team.member.remove audit rows, want 3", n)
	}
}

// TestTeamLastOwnerConcurrent: two owners demote each other at once; only
// one may succeed, so that the team keeps an owner.
func TestTeamLastOwnerConcurrent(t *testing.T) {
	e := newEnv(t)
	f := e.team()
	for round := range 10 {
		var (
			wg       sync.WaitGroup
			statuses [2]int
		)
		pairs := [2][2]account{{f.alice, f.olga}, {f.olga, f.alice}}
		for i, p := range pairs {
			wg.Go(func() {
				statuses[i] = e.call("PATCH", "/v1/team/members/"+p[1].id, map[string]string{"role": "admin"}, f.in(p[0])...).status
			})
		}
		wg.Wait()
		owners := 0
		for _, role := range e.roles(f) {
			if role == "owner" {
				owners++
			}
		}
		if owners != 1 {
			t.Fatalf("round %d: got %d owners after %v, want 1", round, owners, statuses)
		}
		ok, refused := 0, 0
		for _, s := range statuses {
			switch s {
			case http.StatusOK:
				ok++
			case http.StatusConflict, http.StatusForbidden: // the loser may no longer be an owner
				refused++
			}
		}
		if ok != 1 || refused != 1 {
			t.Fatalf("round %d: got statuses %v, want one 200 and one refusal", round, statuses)
		}
		// Make both owners again for the next round.
		e.exec(`UPDATE team_members SET role = 'owner' WHERE team_id = $1 AND user_id IN ($2, $3)`, f.alice.teamID, f.alice.id, f.olga.id)
	}
}

// TestTeamStaleCallerRole: a change is judged by the caller's role at the
// time the team's membership is locked, not the role read when the request
// was authenticated. Olga's request is authenticated as an owner and then
// waits for the lock while she is demoted to member; it must then be
// refused, not grant ownership.
func TestTeamStaleCallerRole(t *testing.T) {
	e := newEnv(t)
	f := e.team()
	e.signup("newbie@example.com")
	ctx := context.Background()
	// demotedWhileWaiting sends olga's request while the team's lock is
	// held, demotes her to member once the request waits for the lock, and
	// returns its answer.
	demotedWhileWaiting := func(method, path string, body any) response {
		t.Helper()
		conn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SELECT 1 FROM teams WHERE id = $1 FOR UPDATE`, f.alice.teamID); err != nil {
			t.Fatal(err)
		}
		done := make(chan response, 1)
		go func() { done <- e.call(method, path, body, f.in(f.olga)...) }()
		// Wait until olga's request is authenticated and blocked on the lock.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var waiting int
			if err := e.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FROM teams%FOR UPDATE%'`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if waiting > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("olga's request never waited for the team's lock")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := tx.Exec(ctx, `UPDATE team_members SET role = 'member' WHERE team_id = $1 AND user_id = $2`, f.alice.teamID, f.olga.id); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		r := <-done
		// Olga is an owner again for the next case.
		e.exec(`UPDATE team_members SET role = 'owner' WHERE team_id = $1 AND user_id = $2`, f.alice.teamID, f.olga.id)
		return r
	}

	if r := demotedWhileWaiting("PATCH", "/v1/team/members/"+f.mia.id, map[string]string{"role": "owner"}); r.status != http.StatusForbidden {
		t.Errorf("promotion by a demoted owner: got %d %s, want 403", r.status, r.raw)
	}
	if got := e.roles(f)["mia@example.com"]; got != "member" {
		t.Errorf("mia's role: got %s, want member", got)
	}
	if r := demotedWhileWaiting("POST", "/v1/team/members", map[string]string{"email": "newbie@example.com", "role": "owner"}); r.status != http.StatusForbidden {
		t.Errorf("an owner added by a demoted owner: got %d %s, want 403", r.status, r.raw)
	}
	if got, ok := e.roles(f)["newbie@example.com"]; ok {
		t.Errorf("newbie was added (as %s) by a demoted owner", got)
	}
}
