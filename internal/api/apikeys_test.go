package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestAPIKeys(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")

	created := e.call("POST", "/v1/api-keys", map[string]any{"name": "ci", "scopes": []string{"keys:manage"}}, a.bearer()...).want(t, "create key", http.StatusCreated)
	key, id := created.str("key"), created.str("id")
	if !strings.HasPrefix(key, "wrn_") || !strings.HasPrefix(key, created.str("prefix")) || created.str("prefix") == key {
		t.Fatalf("create: got key %q prefix %q, want a wrn_ key starting with a shorter prefix", key, created.str("prefix"))
	}
	var stored int
	if err := e.db.QueryRow(t.Context(), `SELECT count(*) FROM api_keys WHERE key_hash = $1 OR prefix = $1`, key).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Errorf("the key is stored in clear")
	}

	me := e.call("GET", "/v1/me", nil, "X-API-Key", key).want(t, "me with key", http.StatusOK)
	if team := me.body["team"].(map[string]any); team["id"] != a.teamID || team["name"] == "" || team["role"] != "member" ||
		me.str("auth_method") != "api_key" || len(me.body["teams"].([]any)) != 1 {
		t.Errorf("me with key: got %s, want only team %s, as member, via api_key", me.raw, a.teamID)
	}
	list := e.call("GET", "/v1/api-keys", nil, "X-API-Key", key).want(t, "list", http.StatusOK)
	if len(list.list) != 1 {
		t.Fatalf("list: got %s, want one key", list.raw)
	}
	k := list.list[0].(map[string]any)
	if k["id"] != id || k["name"] != "ci" || k["last_used_at"] == nil || k["created_by"] != a.id || k["key"] != nil ||
		fmt.Sprint(k["scopes"]) != "[keys:manage]" {
		t.Errorf("list: got %v, want key %s named ci, used, created by %s, without the secret", k, id, a.id)
	}

	e.call("DELETE", "/v1/api-keys/"+id, nil, a.bearer()...).want(t, "delete", http.StatusNoContent)
	e.call("GET", "/v1/me", nil, "X-API-Key", key).want(t, "deleted key", http.StatusUnauthorized)
	e.call("DELETE", "/v1/api-keys/"+id, nil, a.bearer()...).want(t, "delete again", http.StatusNotFound)
}

func TestTeamIsolation(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com") // first user: platform admin
	other := e.signup("other@example.com")
	all := []string{"capsules", "exec", "files", "snapshots", "templates", "hosts", "team", "keys:manage"}
	adminKey := e.call("POST", "/v1/api-keys", map[string]any{"name": "admin", "scopes": append([]string{"platform:admin"}, all...)}, admin.bearer()...).want(t, "admin key", http.StatusCreated)
	otherKey := e.call("POST", "/v1/api-keys", map[string]any{"name": "other", "scopes": all}, other.bearer()...).want(t, "other key", http.StatusCreated)
	regular := e.createHost(admin)
	byoc := e.call("POST", "/v1/hosts", map[string]string{"type": "byoc", "team_id": other.teamID}, admin.bearer()...).
		want(t, "create byoc host", http.StatusCreated)

	for _, creds := range []struct {
		name    string
		headers []string
	}{
		{"session", other.bearer()},
		{"api key", []string{"X-API-Key", otherKey.str("key")}},
	} {
		t.Run(creds.name, func(t *testing.T) {
			tests := []struct {
				method, path string
				body         any
				status       int
			}{
				{"DELETE", "/v1/api-keys/" + adminKey.str("id"), nil, http.StatusNotFound},
				{"GET", "/v1/hosts/" + regular.hostID, nil, http.StatusNotFound},
				{"DELETE", "/v1/hosts/" + regular.hostID, nil, http.StatusNotFound},
				{"POST", "/v1/hosts/" + regular.hostID + "/token", nil, http.StatusNotFound},
				{"POST", "/v1/hosts", map[string]string{"type": "regular"}, http.StatusForbidden},
				{"POST", "/v1/hosts", map[string]string{"type": "byoc", "team_id": other.teamID}, http.StatusForbidden},
				{"GET", "/v1/hosts/" + byoc.str("id"), nil, http.StatusOK},
				{"DELETE", "/v1/hosts/" + byoc.str("id"), nil, http.StatusForbidden},
				{"POST", "/v1/hosts/" + byoc.str("id") + "/token", nil, http.StatusForbidden},
			}
			for _, tt := range tests {
				got := e.call(tt.method, tt.path, tt.body, creds.headers...)
				if got.status != tt.status {
					t.Errorf("%s %s: got %d %s, want %d", tt.method, tt.path, got.status, got.raw, tt.status)
				}
			}
			keys := e.call("GET", "/v1/api-keys", nil, creds.headers...).want(t, "list keys", http.StatusOK)
			if len(keys.list) != 1 || keys.list[0].(map[string]any)["name"] != "other" {
				t.Errorf("list keys: got %s, want only the team's own key", keys.raw)
			}
			hosts := e.call("GET", "/v1/hosts", nil, creds.headers...).want(t, "list hosts", http.StatusOK)
			if len(hosts.list) != 1 || hosts.list[0].(map[string]any)["id"] != byoc.str("id") {
				t.Errorf("list hosts: got %s, want only the team's byoc host", hosts.raw)
			}
		})
	}
	if n := e.count("hosts"); n != 2 {
		t.Errorf("got %d hosts, want 2", n)
	}
	if n := e.count("api_keys WHERE deleted_at IS NULL"); n != 2 {
		t.Errorf("got %d live API keys, want 2", n)
	}
	hosts := e.call("GET", "/v1/hosts", nil, "X-API-Key", adminKey.str("key")).want(t, "admin lists hosts", http.StatusOK)
	if len(hosts.list) != 2 {
		t.Errorf("admin list: got %d hosts, want 2", len(hosts.list))
	}
}

func TestAPIKeyAsBearer(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	key := e.call("POST", "/v1/api-keys", map[string]string{"name": "sdk"}, a.bearer()...).want(t, "create key", http.StatusCreated).str("key")
	me := e.call("GET", "/v1/me", nil, "Authorization", "Bearer "+key).want(t, "me with bearer key", http.StatusOK)
	if me.str("auth_method") != "api_key" {
		t.Errorf("got auth_method %q, want api_key", me.str("auth_method"))
	}
}

func TestAPIKeyFollowsCreatorStanding(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	key := e.createKey("ops", []string{"hosts", "platform:admin"}, admin.bearer()...)
	e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, "X-API-Key", key).want(t, "create host as admin's key", http.StatusCreated)

	e.exec(`UPDATE users SET is_platform_admin = false WHERE id = $1`, admin.id)
	e.call("POST", "/v1/hosts", map[string]string{"type": "regular"}, "X-API-Key", key).want(t, "create host after demotion", http.StatusForbidden)

	e.exec(`DELETE FROM users WHERE id = $1`, admin.id)
	me := e.call("GET", "/v1/me", nil, "X-API-Key", key).want(t, "me after the creator is gone", http.StatusOK)
	if me.body["user"] != nil || me.body["is_platform_admin"] != false {
		t.Errorf("me after the creator is gone: got %s, want no user and no admin rights", me.raw)
	}
}

func TestAPIKeyTeamHeader(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	b := e.signup("b@example.com")
	key := e.call("POST", "/v1/api-keys", map[string]string{"name": "k"}, a.bearer()...).want(t, "create key", http.StatusCreated).str("key")
	for _, tt := range []struct {
		name, team string
		status     int
	}{
		{"own team", a.teamID, http.StatusOK},
		{"own team, upper case", strings.ToUpper(a.teamID), http.StatusOK},
		{"another team", b.teamID, http.StatusForbidden},
		{"not a uuid", "nope", http.StatusBadRequest},
	} {
		e.call("GET", "/v1/me", nil, "X-API-Key", key, "X-Team-ID", tt.team).want(t, tt.name, tt.status)
	}
}
