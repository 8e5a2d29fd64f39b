package api_test

import (
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
)

// fingerprint digests every table, so that a test can assert a refused
// request wrote nothing at all.
func (e *env) fingerprint() string {
	e.t.Helper()
	var b strings.Builder
	for _, table := range []string{"users", "teams", "team_members", "api_keys", "hosts",
		"host_registration_tokens", "host_credentials", "host_refresh_tokens", "cp_signing_keys", "audit_log"} {
		var sum string
		err := e.db.QueryRow(e.t.Context(), `SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM `+table+` x`).Scan(&sum)
		if err != nil {
			e.t.Fatal(err)
		}
		b.WriteString(table + "=" + sum + " ")
	}
	return b.String()
}

// with returns a copy of m with the given key set (or deleted when v is nil).
func with(m map[string]any, k string, v any) map[string]any {
	c := maps.Clone(m)
	if v == nil {
		delete(c, k)
	} else {
		c[k] = v
	}
	return c
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	member := e.signup("member@example.com")
	pending := e.createHost(admin)
	registered := e.createHost(admin)
	reg := e.call("POST", "/v1/hosts/register", registerBody(registered.token)).want(t, "register", http.StatusCreated)
	hostAuth := []string{"Authorization", "Bearer " + reg.str("credential")}
	adminAuth := admin.bearer()
	const unknownID = "7a0e7d8c-3c1f-4d0e-9d55-5d3b9d6b1a11"
	huge := `{"name":"` + strings.Repeat("x", 70<<10) + `"}`
	hugeHeartbeat := `{"free_cpus":1,"free_memory_mb":1,"free_disk_mb":1,"capsules":[{"x":"` + strings.Repeat("x", 8<<20) + `"}]}`

	type tc struct {
		name    string
		method  string
		path    string
		body    any
		headers []string
		status  int
		code    string
	}
	var cases []tc

	// Shapes of broken JSON every endpoint with a body must refuse.
	bodyEndpoints := []struct {
		method, path string
		headers      []string
		valid        map[string]any
		wrongType    map[string]any
		oversized    string
	}{
		{"POST", "/v1/auth/signup", nil, map[string]any{"email": "new@example.com", "password": "longenough"}, map[string]any{"email": 5, "password": "longenough"}, huge},
		{"POST", "/v1/auth/login", nil, map[string]any{"email": "admin@example.com", "password": "correct horse"}, map[string]any{"email": true, "password": "correct horse"}, huge},
		{"POST", "/v1/api-keys", adminAuth, map[string]any{"name": "k"}, map[string]any{"name": []int{1}}, huge},
		{"POST", "/v1/hosts", adminAuth, map[string]any{"type": "regular"}, map[string]any{"type": 1}, huge},
		{"POST", "/v1/hosts/register", nil, registerBody(pending.token), with(registerBody(pending.token), "cpus", "eight"), huge},
		{"POST", "/v1/hosts/" + registered.hostID + "/heartbeat", hostAuth, heartbeatBody(), with(heartbeatBody(), "free_cpus", "6"), hugeHeartbeat},
		{"POST", "/v1/hosts/auth/refresh", nil, map[string]any{"refresh_token": reg.str("refresh_token")}, map[string]any{"refresh_token": 7}, huge},
	}
	for _, ep := range bodyEndpoints {
		p := ep.method + " " + ep.path
		cases = append(cases,
			tc{p + " malformed JSON", ep.method, ep.path, `{"email": `, ep.headers, 400, "invalid_request"},
			tc{p + " not JSON", ep.method, ep.path, `email=a`, ep.headers, 400, "invalid_request"},
			tc{p + " empty body", ep.method, ep.path, ``, ep.headers, 400, "invalid_request"},
			tc{p + " array body", ep.method, ep.path, `[]`, ep.headers, 400, "invalid_request"},
			tc{p + " trailing data", ep.method, ep.path, `{} {}`, ep.headers, 400, "invalid_request"},
			tc{p + " wrong type", ep.method, ep.path, ep.wrongType, ep.headers, 400, "invalid_request"},
			tc{p + " unknown field", ep.method, ep.path, with(ep.valid, "bogus", 1), ep.headers, 400, "invalid_request"},
			tc{p + " oversized", ep.method, ep.path, ep.oversized, ep.headers, 413, "payload_too_large"},
		)
	}

	// Missing and invalid fields, endpoint by endpoint.
	signup := map[string]any{"email": "new@example.com", "password": "longenough"}
	rb := registerBody(pending.token)
	hb := heartbeatBody()
	cases = append(cases,
		tc{"signup without email", "POST", "/v1/auth/signup", with(signup, "email", nil), nil, 400, "invalid_request"},
		tc{"signup without password", "POST", "/v1/auth/signup", with(signup, "password", nil), nil, 400, "invalid_request"},
		tc{"signup short password", "POST", "/v1/auth/signup", with(signup, "password", "short"), nil, 400, "invalid_request"},
		tc{"signup long password", "POST", "/v1/auth/signup", with(signup, "password", strings.Repeat("p", 73)), nil, 400, "invalid_request"},
		tc{"signup bad email", "POST", "/v1/auth/signup", with(signup, "email", "not-an-email"), nil, 400, "invalid_request"},
		tc{"signup display-name email", "POST", "/v1/auth/signup", with(signup, "email", "Bob <bob@example.com>"), nil, 400, "invalid_request"},
		tc{"signup long name", "POST", "/v1/auth/signup", with(signup, "name", strings.Repeat("n", 101)), nil, 400, "invalid_request"},
		tc{"signup taken email", "POST", "/v1/auth/signup", with(signup, "email", "MEMBER@example.com"), nil, 409, "conflict"},
		tc{"login empty", "POST", "/v1/auth/login", map[string]any{}, nil, 400, "invalid_request"},
		tc{"login wrong password", "POST", "/v1/auth/login", map[string]any{"email": "admin@example.com", "password": "nope nope"}, nil, 401, "invalid_credentials"},

		tc{"api key without name", "POST", "/v1/api-keys", map[string]any{}, adminAuth, 400, "invalid_request"},
		tc{"api key blank name", "POST", "/v1/api-keys", map[string]any{"name": "   "}, adminAuth, 400, "invalid_request"},
		tc{"api key long name", "POST", "/v1/api-keys", map[string]any{"name": strings.Repeat("n", 101)}, adminAuth, 400, "invalid_request"},
		tc{"delete unknown api key", "DELETE", "/v1/api-keys/" + unknownID, nil, adminAuth, 404, "not_found"},
		tc{"delete non-uuid api key", "DELETE", "/v1/api-keys/nope", nil, adminAuth, 404, "not_found"},

		tc{"host without type", "POST", "/v1/hosts", map[string]any{}, adminAuth, 400, "invalid_request"},
		tc{"host unknown type", "POST", "/v1/hosts", map[string]any{"type": "gpu"}, adminAuth, 400, "invalid_request"},
		tc{"byoc host without team", "POST", "/v1/hosts", map[string]any{"type": "byoc"}, adminAuth, 400, "invalid_request"},
		tc{"byoc host unknown team", "POST", "/v1/hosts", map[string]any{"type": "byoc", "team_id": unknownID}, adminAuth, 400, "invalid_request"},
		tc{"regular host with team", "POST", "/v1/hosts", map[string]any{"type": "regular", "team_id": member.teamID}, adminAuth, 400, "invalid_request"},
		tc{"host by non-admin", "POST", "/v1/hosts", map[string]any{"type": "regular"}, member.bearer(), 403, "forbidden"},
		tc{"get unknown host", "GET", "/v1/hosts/" + unknownID, nil, adminAuth, 404, "not_found"},
		tc{"get non-uuid host", "GET", "/v1/hosts/nope", nil, adminAuth, 404, "not_found"},
		tc{"delete unknown host", "DELETE", "/v1/hosts/" + unknownID, nil, adminAuth, 404, "not_found"},
		tc{"delete non-uuid host", "DELETE", "/v1/hosts/nope", nil, adminAuth, 404, "not_found"},
		tc{"token for unknown host", "POST", "/v1/hosts/" + unknownID + "/token", nil, adminAuth, 404, "not_found"},
		tc{"token for non-uuid host", "POST", "/v1/hosts/nope/token", nil, adminAuth, 404, "not_found"},

		tc{"register without token", "POST", "/v1/hosts/register", with(rb, "token", nil), nil, 400, "invalid_request"},
		tc{"register without address", "POST", "/v1/hosts/register", with(rb, "address", nil), nil, 400, "invalid_request"},
		tc{"register address without port", "POST", "/v1/hosts/register", with(rb, "address", "10.0.0.5"), nil, 400, "invalid_request"},
		tc{"register address port 0", "POST", "/v1/hosts/register", with(rb, "address", "10.0.0.5:0"), nil, 400, "invalid_request"},
		tc{"register without arch", "POST", "/v1/hosts/register", with(rb, "arch", nil), nil, 400, "invalid_request"},
		tc{"register zero cpus", "POST", "/v1/hosts/register", with(rb, "cpus", 0), nil, 400, "invalid_request"},
		// Beyond the 32-bit cpus column: was a 500 from the database.
		tc{"register 2^31 cpus", "POST", "/v1/hosts/register", with(rb, "cpus", int64(1)<<31), nil, 400, "invalid_request"},
		tc{"register huge memory", "POST", "/v1/hosts/register", with(rb, "memory_mb", int64(1)<<62), nil, 400, "invalid_request"},
		tc{"register negative memory", "POST", "/v1/hosts/register", with(rb, "memory_mb", -1), nil, 400, "invalid_request"},
		tc{"register without disk", "POST", "/v1/hosts/register", with(rb, "disk_mb", nil), nil, 400, "invalid_request"},
		tc{"register unknown runtime", "POST", "/v1/hosts/register", with(rb, "runtime", "docker"), nil, 400, "invalid_request"},
		tc{"register unknown token", "POST", "/v1/hosts/register", with(rb, "token", "wrnreg_"+strings.Repeat("A", 43)), nil, 401, "invalid_registration_token"},
		tc{"register garbage token", "POST", "/v1/hosts/register", with(rb, "token", "hello"), nil, 401, "invalid_registration_token"},
		tc{"register used token", "POST", "/v1/hosts/register", registerBody(registered.token), nil, 401, "invalid_registration_token"},

		tc{"heartbeat without free_cpus", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "free_cpus", nil), hostAuth, 400, "invalid_request"},
		tc{"heartbeat negative memory", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "free_memory_mb", -5), hostAuth, 400, "invalid_request"},
		tc{"heartbeat 2^31 free cpus", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "free_cpus", int64(1)<<31), hostAuth, 400, "invalid_request"},
		tc{"heartbeat capsules not objects", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "capsules", []int{1}), hostAuth, 400, "invalid_request"},
		tc{"heartbeat address without host", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "address", ":50051"), hostAuth, 400, "invalid_request"},
		tc{"heartbeat address port 0", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "address", "10.0.0.5:0"), hostAuth, 400, "invalid_request"},
		tc{"heartbeat address not host:port", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "address", "10.0.0.5"), hostAuth, 400, "invalid_request"},
		tc{"heartbeat address not a string", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "address", 5), hostAuth, 400, "invalid_request"},
		tc{"heartbeat snapshot page too long", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "snapshots", manyNames(1001)), hostAuth, 400, "invalid_request"},
		tc{"heartbeat bad snapshot name", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "snapshots", []string{"../etc"}), hostAuth, 400, "invalid_request"},
		tc{"heartbeat capsules not a list", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", with(hb, "capsules", "none"), hostAuth, 400, "invalid_request"},
		tc{"heartbeat without credential", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", hb, nil, 401, "invalid_host_credential"},
		tc{"heartbeat with user session", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", hb, adminAuth, 401, "invalid_host_credential"},
		tc{"heartbeat unknown credential", "POST", "/v1/hosts/" + registered.hostID + "/heartbeat", hb, []string{"Authorization", "Bearer wrnh_" + strings.Repeat("A", 43)}, 401, "invalid_host_credential"},
		tc{"heartbeat for another host", "POST", "/v1/hosts/" + pending.hostID + "/heartbeat", hb, hostAuth, 403, "forbidden"},
		tc{"heartbeat for non-uuid host", "POST", "/v1/hosts/nope/heartbeat", hb, hostAuth, 403, "forbidden"},

		tc{"refresh without token", "POST", "/v1/hosts/auth/refresh", map[string]any{}, nil, 400, "invalid_request"},
		tc{"refresh unknown token", "POST", "/v1/hosts/auth/refresh", map[string]any{"refresh_token": "wrnr_" + strings.Repeat("A", 43)}, nil, 401, "invalid_refresh_token"},
		tc{"refresh with credential", "POST", "/v1/hosts/auth/refresh", map[string]any{"refresh_token": reg.str("credential")}, nil, 401, "invalid_refresh_token"},

		tc{"unknown route", "GET", "/v1/nothing", nil, adminAuth, 404, "not_found"},
		tc{"wrong method", "PUT", "/v1/hosts", nil, adminAuth, 405, "method_not_allowed"},
	)

	// Bad authentication on every route that needs a user or key.
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/me"}, {"POST", "/v1/api-keys"}, {"GET", "/v1/api-keys"},
		{"DELETE", "/v1/api-keys/" + unknownID}, {"POST", "/v1/hosts"}, {"GET", "/v1/hosts"},
		{"GET", "/v1/hosts/" + registered.hostID}, {"DELETE", "/v1/hosts/" + registered.hostID},
		{"POST", "/v1/hosts/" + registered.hostID + "/token"}, {"GET", "/v1/audit-log"},
	} {
		p := rt.method + " " + rt.path
		cases = append(cases,
			tc{p + " no auth", rt.method, rt.path, nil, nil, 401, "unauthenticated"},
			tc{p + " garbage bearer", rt.method, rt.path, nil, []string{"Authorization", "Bearer nope"}, 401, "unauthenticated"},
			tc{p + " basic auth", rt.method, rt.path, nil, []string{"Authorization", "Basic YTpi"}, 401, "unauthenticated"},
			tc{p + " host credential", rt.method, rt.path, nil, hostAuth, 401, "unauthenticated"},
			tc{p + " garbage key", rt.method, rt.path, nil, []string{"X-API-Key", "wrn_nope"}, 401, "unauthenticated"},
			tc{p + " unknown key", rt.method, rt.path, nil, []string{"X-API-Key", "wrn_" + strings.Repeat("A", 43)}, 401, "unauthenticated"},
			tc{p + " token signed by another secret", rt.method, rt.path, nil, []string{"Authorization", "Bearer " + foreignToken(t, admin.id)}, 401, "unauthenticated"},
		)
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.fingerprint()
			got := e.call(c.method, c.path, c.body, c.headers...)
			if got.status != c.status || got.errCode() != c.code {
				t.Fatalf("got %d %.300s, want %d %s", got.status, got.raw, c.status, c.code)
			}
			if !strings.HasPrefix(got.header.Get("Content-Type"), "application/json") {
				t.Errorf("got Content-Type %q, want application/json", got.header.Get("Content-Type"))
			}
			if msg, _ := got.body["error"].(map[string]any)["message"].(string); msg == "" {
				t.Errorf("got no error message in %s", got.raw)
			}
			if after := e.fingerprint(); after != before {
				t.Errorf("a refused request changed the database")
			}
		})
	}
}

// manyNames returns n distinct template names.
func manyNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("s%05d", i)
	}
	return out
}
