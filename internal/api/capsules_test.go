package api_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/hostauth"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
	"github.com/wrenn-dev/wrenn/proto/hostagent/v1/hostagentv1connect"
)

// onlineHost registers a regular host at address with cpus and memoryMB and
// reports templates in a heartbeat, the way an agent does. Nothing needs to
// answer at address for requests that are refused before any agent call.
func (e *env) onlineHost(admin account, address string, cpus int, memoryMB int64, templates ...string) string {
	e.t.Helper()
	reg := e.createHost(admin)
	body := registerBody(reg.token)
	body["address"], body["cpus"], body["memory_mb"] = address, cpus, memoryMB
	r := e.call("POST", "/v1/hosts/register", body).want(e.t, "register", http.StatusCreated)
	hb := heartbeatBody()
	hb["templates"] = templates
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", hb, "Authorization", "Bearer "+r.str("credential")).
		want(e.t, "heartbeat", http.StatusOK)
	return reg.hostID
}

func TestHeartbeatTemplates(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	id := e.onlineHost(admin, "127.0.0.1:1", 8, 32000, "minimal", "base", "minimal")
	h := e.call("GET", "/v1/hosts/"+id, nil, admin.bearer()...).want(t, "get host", http.StatusOK)
	if got := fmt.Sprint(h.body["templates"]); got != "[base minimal]" {
		t.Errorf("templates: got %s, want [base minimal] (sorted, once each)", got)
	}
	if h.body["allocated_vcpus"] != float64(0) || h.body["allocated_memory_mb"] != float64(0) {
		t.Errorf("allocation of an empty host: got %v and %v, want 0 and 0", h.body["allocated_vcpus"], h.body["allocated_memory_mb"])
	}

	reg := e.createHost(admin)
	cred := e.call("POST", "/v1/hosts/register", registerBody(reg.token)).want(t, "register", http.StatusCreated).str("credential")
	hostAuth := []string{"Authorization", "Bearer " + cred}
	tooMany := make([]string, 10001)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("t%d", i)
	}
	for _, bad := range []any{tooMany, []string{"Minimal"}, []string{""}, []string{"-x"}, []string{strings.Repeat("a", 64)}, []string{"a/b"}, []int{1}} {
		before := e.fingerprint()
		r := e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", with(heartbeatBody(), "templates", bad), hostAuth...)
		if r.status != http.StatusBadRequest || r.errCode() != "invalid_request" {
			t.Errorf("templates %v: got %d %s, want 400 invalid_request", bad, r.status, r.raw)
		}
		if e.fingerprint() != before {
			t.Errorf("templates %v: a refused heartbeat changed the database", bad)
		}
	}
	// A heartbeat without templates says the host has none.
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", with(heartbeatBody(), "templates", []string{"minimal"}), hostAuth...).want(t, "heartbeat", http.StatusOK)
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", heartbeatBody(), hostAuth...).want(t, "heartbeat", http.StatusOK)
	h = e.call("GET", "/v1/hosts/"+reg.hostID, nil, admin.bearer()...).want(t, "get host", http.StatusOK)
	if got := fmt.Sprint(h.body["templates"]); got != "[]" {
		t.Errorf("after a heartbeat without templates: got %s, want []", got)
	}
}

func TestTemplates(t *testing.T) {
	e := newEnv(t)
	a := e.signup("a@example.com")
	b := e.signup("b@example.com")
	e.exec(`INSERT INTO templates (name, team_id, kind, default_vcpus, default_memory_mb, default_disk_mb)
		VALUES ('mine', $1, 'snapshot', 2, 1024, 2048)`, a.teamID)
	names := func(acc account) string {
		r := e.call("GET", "/v1/templates", nil, acc.bearer()...).want(t, "templates", http.StatusOK)
		var out []string
		for _, v := range r.list {
			out = append(out, v.(map[string]any)["name"].(string))
		}
		return strings.Join(out, ",")
	}
	if got := names(a); got != "base,mine,minimal" {
		t.Errorf("team A: got %s, want base,mine,minimal", got)
	}
	if got := names(b); got != "base,minimal" {
		t.Errorf("team B: got %s, want base,minimal (not A's snapshot)", got)
	}
}

func TestCreateCapsuleBadInput(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	other := e.signup("other@example.com")
	// Nothing answers at the host's address: every case below must be
	// refused before the agent would be called.
	e.onlineHost(admin, "127.0.0.1:1", 4, 8000, "minimal", "base")
	e.exec(`INSERT INTO capsules (team_id, template, status, vcpus, memory_mb, disk_mb)
		VALUES ($1, 'minimal', 'running', 1, 256, 1024)`, other.teamID)
	var otherID string
	if err := e.db.QueryRow(t.Context(), `SELECT id::text FROM capsules`).Scan(&otherID); err != nil {
		t.Fatal(err)
	}
	auth := admin.bearer()
	ok := map[string]any{"template": "minimal"}
	manyEnvs, manyMeta := map[string]string{}, map[string]string{}
	for i := range 101 {
		manyEnvs[fmt.Sprintf("E%d", i)] = "x"
	}
	for i := range 51 {
		manyMeta[fmt.Sprintf("k%d", i)] = "x"
	}
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"unknown template", "POST", "/v1/capsules", with(ok, "template", "nope"), 404, "template_not_found"},
		{"template not a name", "POST", "/v1/capsules", with(ok, "template", "../etc"), 404, "template_not_found"},
		{"another team's template", "POST", "/v1/capsules", with(ok, "template", "theirs"), 404, "template_not_found"},
		{"no template", "POST", "/v1/capsules", map[string]any{"vcpus": 1}, 400, "invalid_request"},
		{"vcpus 0", "POST", "/v1/capsules", with(ok, "vcpus", 0), 400, "invalid_request"},
		{"vcpus beyond any host", "POST", "/v1/capsules", with(ok, "vcpus", 5), 400, "invalid_request"},
		{"vcpus not an integer", "POST", "/v1/capsules", with(ok, "vcpus", 1.5), 400, "invalid_request"},
		{"memory too small", "POST", "/v1/capsules", with(ok, "memory_mb", 127), 400, "invalid_request"},
		{"memory beyond any host", "POST", "/v1/capsules", with(ok, "memory_mb", 7201), 400, "invalid_request"},
		{"disk too small", "POST", "/v1/capsules", with(ok, "disk_mb", 1), 400, "invalid_request"},
		{"disk beyond any host", "POST", "/v1/capsules", with(ok, "disk_mb", 500001), 400, "invalid_request"},
		{"negative timeout", "POST", "/v1/capsules", with(ok, "timeout_sec", -1), 400, "invalid_request"},
		{"timeout over a day", "POST", "/v1/capsules", with(ok, "timeout_sec", 86401), 400, "invalid_request"},
		{"env name", "POST", "/v1/capsules", with(ok, "envs", map[string]string{"1A": "x"}), 400, "invalid_request"},
		{"env name with =", "POST", "/v1/capsules", with(ok, "envs", map[string]string{"A=B": "x"}), 400, "invalid_request"},
		{"env value too long", "POST", "/v1/capsules", with(ok, "envs", map[string]string{"A": strings.Repeat("x", 32<<10+1)}), 400, "invalid_request"},
		{"too many envs", "POST", "/v1/capsules", with(ok, "envs", manyEnvs), 400, "invalid_request"},
		{"env value not a string", "POST", "/v1/capsules", with(ok, "envs", map[string]any{"A": 1}), 400, "invalid_request"},
		{"metadata value not a string", "POST", "/v1/capsules", with(ok, "metadata", map[string]any{"a": 1}), 400, "invalid_request"},
		{"metadata not an object", "POST", "/v1/capsules", with(ok, "metadata", []string{"a"}), 400, "invalid_request"},
		{"metadata empty key", "POST", "/v1/capsules", with(ok, "metadata", map[string]string{"": "x"}), 400, "invalid_request"},
		{"metadata long key", "POST", "/v1/capsules", with(ok, "metadata", map[string]string{strings.Repeat("k", 65): "x"}), 400, "invalid_request"},
		{"metadata long value", "POST", "/v1/capsules", with(ok, "metadata", map[string]string{"k": strings.Repeat("v", 513)}), 400, "invalid_request"},
		{"too much metadata", "POST", "/v1/capsules", with(ok, "metadata", manyMeta), 400, "invalid_request"},
		{"wait not a boolean", "POST", "/v1/capsules", with(ok, "wait", "no"), 400, "invalid_request"},
		{"malformed JSON", "POST", "/v1/capsules", `{"template": `, 400, "invalid_request"},
		{"array body", "POST", "/v1/capsules", `[]`, 400, "invalid_request"},
		{"trailing data", "POST", "/v1/capsules", `{"template": "minimal"} {}`, 400, "invalid_request"},
		{"unknown field", "POST", "/v1/capsules", with(ok, "cpu", 1), 400, "invalid_request"},
		{"oversized", "POST", "/v1/capsules", `{"template": "` + strings.Repeat("x", 1<<20) + `"}`, 413, "payload_too_large"},

		{"get another team's capsule", "GET", "/v1/capsules/" + otherID, nil, 404, "capsule_not_found"},
		{"delete another team's capsule", "DELETE", "/v1/capsules/" + otherID, nil, 404, "capsule_not_found"},
		{"get malformed id", "GET", "/v1/capsules/nope", nil, 404, "capsule_not_found"},
		{"delete malformed id", "DELETE", "/v1/capsules/nope", nil, 404, "capsule_not_found"},
		{"get unknown id", "GET", "/v1/capsules/7a0e7d8c-3c1f-4d0e-9d55-5d3b9d6b1a11", nil, 404, "capsule_not_found"},

		{"list unknown status", "GET", "/v1/capsules?status=running,sleeping", nil, 400, "invalid_request"},
		{"list empty status", "GET", "/v1/capsules?status=", nil, 400, "invalid_request"},
		{"list metadata without =", "GET", "/v1/capsules?metadata=k", nil, 400, "invalid_request"},
		{"list metadata empty key", "GET", "/v1/capsules?metadata==v", nil, 400, "invalid_request"},
		{"list metadata contradiction", "GET", "/v1/capsules?metadata=k=a&metadata=k=b", nil, 400, "invalid_request"},
		{"list limit 0", "GET", "/v1/capsules?limit=0", nil, 400, "invalid_request"},
		{"list limit 1001", "GET", "/v1/capsules?limit=1001", nil, 400, "invalid_request"},
		{"list limit not a number", "GET", "/v1/capsules?limit=ten", nil, 400, "invalid_request"},
		{"list bad cursor", "GET", "/v1/capsules?cursor=zzz", nil, 400, "invalid_request"},
		{"list forged cursor", "GET", "/v1/capsules?cursor=" + url.QueryEscape("eyJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMFoiLCJpZCI6Im5vcGUifQ"), nil, 400, "invalid_request"},
	}
	e.exec(`INSERT INTO templates (name, team_id, default_vcpus, default_memory_mb, default_disk_mb) VALUES ('theirs', $1, 1, 256, 1024)`, other.teamID)
	for _, c := range cases {
		before := e.fingerprint() + fmt.Sprint(e.count("capsules"))
		r := e.call(c.method, c.path, c.body, auth...)
		if r.status != c.status || r.errCode() != c.code {
			t.Errorf("%s: got %d %s, want %d %s", c.name, r.status, r.raw, c.status, c.code)
		}
		if after := e.fingerprint() + fmt.Sprint(e.count("capsules")); after != before {
			t.Errorf("%s: a refused request changed the database", c.name)
		}
	}
	if n := e.count("capsules"); n != 1 {
		t.Errorf("got %d capsules, want only the other team's", n)
	}
	got := e.call("GET", "/v1/capsules", nil, auth...).want(t, "list", http.StatusOK)
	if cs, _ := got.body["capsules"].([]any); len(cs) != 0 || got.body["next_cursor"] != nil {
		t.Errorf("list: got %s, want no capsules and a null next_cursor", got.raw)
	}
}

func TestCreateCapsuleNoHost(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	r := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...)
	if r.status != http.StatusServiceUnavailable || r.errCode() != "no_host" {
		t.Errorf("no host: got %d %s, want 503 no_host", r.status, r.raw)
	}
	e.onlineHost(admin, "127.0.0.1:1", 4, 8000, "base")
	r = e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...)
	if r.status != http.StatusServiceUnavailable || r.errCode() != "no_host" {
		t.Errorf("no host with the template: got %d %s, want 503 no_host", r.status, r.raw)
	}
	if n := e.count("capsules"); n != 0 {
		t.Errorf("got %d capsules, want none", n)
	}
}

// fakeAgent is an agent's CapsuleService that keeps capsules in memory, for
// the control plane's side of their lifecycle where no real agent can run.
// It checks the control plane's call tokens like the real one. Safe for
// concurrent use.
type fakeAgent struct {
	// Pause, resume and snapshots are tested against the real agent only.
	hostagentv1connect.UnimplementedCapsuleServiceHandler

	templates []string
	url       string
	srv       *httptest.Server
	// mux serves the CapsuleService; tests add other routes of the agent.
	mux *http.ServeMux

	mu       sync.Mutex
	capsules map[string]*hostagentv1.Capsule
	next     int
	// destroyErr, when set, is DestroyCapsule's answer.
	destroyErr error
}

func newFakeAgent(t *testing.T, pub ed25519.PublicKey, hostID string, templates ...string) *fakeAgent {
	t.Helper()
	f := &fakeAgent{templates: templates, capsules: map[string]*hostagentv1.Capsule{}}
	mux := http.NewServeMux()
	mux.Handle(hostagentv1connect.NewCapsuleServiceHandler(f,
		connect.WithInterceptors(hostauth.NewVerifier(pub, hostID).Interceptor())))
	f.mux = mux
	f.srv, f.url = newAgentServer(t, mux)
	return f
}

func (f *fakeAgent) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.capsules)
}

func (f *fakeAgent) CreateCapsule(_ context.Context, req *connect.Request[hostagentv1.CreateCapsuleRequest]) (*connect.Response[hostagentv1.CreateCapsuleResponse], error) {
	spec := req.Msg.GetSpec()
	if !slices.Contains(f.templates, spec.GetTemplate()) {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("template %s is not on this host", spec.GetTemplate()))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.capsules[spec.GetCapsuleId()] != nil {
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("capsule %s exists", spec.GetCapsuleId()))
	}
	f.next++
	c := &hostagentv1.Capsule{Spec: spec, Status: "running", Address: fmt.Sprintf("10.88.0.%d", f.next),
		StartedAtUnixMs: time.Now().UnixMilli()}
	f.capsules[spec.GetCapsuleId()] = c
	return connect.NewResponse(&hostagentv1.CreateCapsuleResponse{Capsule: c}), nil
}

func (f *fakeAgent) DestroyCapsule(_ context.Context, req *connect.Request[hostagentv1.DestroyCapsuleRequest]) (*connect.Response[hostagentv1.DestroyCapsuleResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.destroyErr != nil {
		return nil, f.destroyErr
	}
	delete(f.capsules, req.Msg.GetCapsuleId())
	return connect.NewResponse(&hostagentv1.DestroyCapsuleResponse{}), nil
}

func (f *fakeAgent) GetCapsule(_ context.Context, req *connect.Request[hostagentv1.GetCapsuleRequest]) (*connect.Response[hostagentv1.GetCapsuleResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.capsules[req.Msg.GetCapsuleId()]
	if c == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no capsule %s", req.Msg.GetCapsuleId()))
	}
	return connect.NewResponse(&hostagentv1.GetCapsuleResponse{Capsule: c}), nil
}

func (f *fakeAgent) ListCapsules(context.Context, *connect.Request[hostagentv1.ListCapsulesRequest]) (*connect.Response[hostagentv1.ListCapsulesResponse], error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &hostagentv1.ListCapsulesResponse{}
	for _, c := range f.capsules {
		out.Capsules = append(out.Capsules, c)
	}
	return connect.NewResponse(out), nil
}

// agentHost registers a host whose agent is a fakeAgent with
// agentTemplates, while the host reports reported in its heartbeat.
func (e *env) agentHost(admin account, cpus int, memoryMB int64, agentTemplates, reported []string) (string, *fakeAgent) {
	e.t.Helper()
	reg := e.createHost(admin)
	ag := newFakeAgent(e.t, e.key.Public().(ed25519.PublicKey), reg.hostID, agentTemplates...)
	body := registerBody(reg.token)
	body["address"], body["cpus"], body["memory_mb"] = ag.url, cpus, memoryMB
	r := e.call("POST", "/v1/hosts/register", body).want(e.t, "register", http.StatusCreated)
	e.call("POST", "/v1/hosts/"+reg.hostID+"/heartbeat", with(heartbeatBody(), "templates", reported),
		"Authorization", "Bearer "+r.str("credential")).want(e.t, "heartbeat", http.StatusOK)
	return reg.hostID, ag
}

func TestCapsuleAgentFailures(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	// The host claims base but its agent does not have it.
	hostID, ag := e.agentHost(admin, 4, 8000, []string{"minimal"}, []string{"minimal", "base"})

	r := e.call("POST", "/v1/capsules", map[string]any{"template": "base", "envs": map[string]string{"SECRET": "s3cr3t"}}, admin.bearer()...)
	if r.status != http.StatusConflict || r.errCode() != "template_unavailable" {
		t.Errorf("template missing on the host: got %d %s, want 409 template_unavailable", r.status, r.raw)
	}
	list := e.call("GET", "/v1/capsules?status=error", nil, admin.bearer()...).want(t, "list errors", http.StatusOK)
	cs, _ := list.body["capsules"].([]any)
	if len(cs) != 1 {
		t.Fatalf("after a refused start: got %s, want one capsule in error", list.raw)
	}
	failed := cs[0].(map[string]any)
	if reason, _ := failed["status_reason"].(string); !strings.Contains(reason, "not on this host") {
		t.Errorf("status_reason: got %q, want the agent's reason", reason)
	}
	if failed["host_id"] != hostID {
		t.Errorf("host_id: got %v, want %s", failed["host_id"], hostID)
	}
	var audit string
	if err := e.db.QueryRow(t.Context(), `SELECT string_agg(metadata::text, ' ') FROM audit_log WHERE action LIKE 'capsule.%'`).Scan(&audit); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(audit, "s3cr3t") || strings.Contains(audit, "SECRET") {
		t.Errorf("audit rows hold the envs: %s", audit)
	}
	// A capsule in error takes no capacity and can be destroyed.
	h := e.call("GET", "/v1/hosts/"+hostID, nil, admin.bearer()...).want(t, "host", http.StatusOK)
	if h.body["allocated_memory_mb"] != float64(0) {
		t.Errorf("allocated memory with only a failed capsule: got %v, want 0", h.body["allocated_memory_mb"])
	}
	e.call("DELETE", "/v1/capsules/"+failed["id"].(string), nil, admin.bearer()...).want(t, "delete failed capsule", http.StatusNoContent)

	// A running capsule whose agent went away: DELETE is 502 and the
	// capsule stays running.
	c := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...).want(t, "create", http.StatusCreated)
	ag.srv.Close()
	r = e.call("DELETE", "/v1/capsules/"+c.str("id"), nil, admin.bearer()...)
	if r.status != http.StatusBadGateway || r.errCode() != "agent_error" || strings.Contains(r.str("message"), "127.0.0.1") {
		t.Errorf("delete with the agent down: got %d %s, want 502 agent_error without the address", r.status, r.raw)
	}
	got := e.call("GET", "/v1/capsules/"+c.str("id"), nil, admin.bearer()...).want(t, "get", http.StatusOK)
	if got.str("status") != "running" {
		t.Errorf("after a failed destroy: got status %s, want running", got.str("status"))
	}
	// Creating with the agent down: 502 and the capsule is in error.
	r = e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...)
	if r.status != http.StatusBadGateway || r.errCode() != "agent_error" {
		t.Errorf("create with the agent down: got %d %s, want 502 agent_error", r.status, r.raw)
	}
	list = e.call("GET", "/v1/capsules?status=error", nil, admin.bearer()...).want(t, "list errors", http.StatusOK)
	if cs, _ := list.body["capsules"].([]any); len(cs) != 1 {
		t.Errorf("after a start with the agent down: got %s, want one capsule in error", list.raw)
	}
}

func TestCapsuleNoCapacity(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	e.agentHost(admin, 2, 1000, []string{"minimal"}, []string{"minimal"})
	// 900 MB usable: two capsules of 400 fit, a third does not.
	for range 2 {
		e.call("POST", "/v1/capsules", map[string]any{"template": "minimal", "memory_mb": 400}, admin.bearer()...).want(t, "create", http.StatusCreated)
	}
	r := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal", "memory_mb": 400}, admin.bearer()...)
	if r.status != http.StatusServiceUnavailable || r.errCode() != "no_capacity" {
		t.Fatalf("third: got %d %s, want 503 no_capacity", r.status, r.raw)
	}
	msg, _ := r.body["error"].(map[string]any)["message"].(string)
	if !strings.Contains(msg, "400 MB") || !strings.Contains(msg, "100 MB") {
		t.Errorf("no_capacity message %q: want what was asked (400 MB) and what is free (100 MB)", msg)
	}
}

func TestCapsuleLifecycle(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	_, ag := e.agentHost(admin, 4, 16000, []string{"minimal", "base"}, []string{"minimal", "base"})
	capsuleFlow(t, e, admin, e.signup("b@example.com"), "minimal")
	if n := ag.running(); n != 0 {
		t.Errorf("the agent still runs %d capsules after every one was destroyed", n)
	}
}

// capsuleFlow exercises a capsule's life through the API: team a creates,
// reads, lists and destroys capsules of template; team b sees none of them.
// It destroys every capsule it made.
func capsuleFlow(t *testing.T, e *env, a, b account, template string) {
	t.Helper()
	create := func(body map[string]any, status int) response {
		t.Helper()
		return e.call("POST", "/v1/capsules", body, a.bearer()...).want(t, "create", status)
	}
	c := create(map[string]any{"template": template, "metadata": map[string]string{"app": "flow", "n": "0"},
		"envs": map[string]string{"GREETING": "hello"}, "timeout_sec": 0}, http.StatusCreated)
	id := c.str("id")
	if c.str("status") != "running" || c.str("template") != template || c.body["timeout_sec"] != float64(0) ||
		c.body["started_at"] == nil || c.body["host_id"] == nil {
		t.Errorf("create: got %s, want a running %s capsule with started_at and host_id", c.raw, template)
	}
	for _, secret := range []string{"address", "envs", "GREETING", "token", "10.88."} {
		if strings.Contains(string(c.raw), secret) {
			t.Errorf("create: the answer holds %q: %s", secret, c.raw)
		}
	}
	got := e.call("GET", "/v1/capsules/"+id, nil, a.bearer()...).want(t, "get", http.StatusOK)
	if got.str("id") != id || got.str("status") != "running" || got.body["metadata"].(map[string]any)["app"] != "flow" {
		t.Errorf("get: got %s, want %s running with its metadata", got.raw, id)
	}

	// Ten at once: all start, each its own capsule.
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[string]bool{id: true}
	)
	for i := range 10 {
		wg.Go(func() {
			r := e.call("POST", "/v1/capsules", map[string]any{"template": template,
				"metadata": map[string]string{"app": "flow", "n": fmt.Sprint(i + 1)}}, a.bearer()...)
			mu.Lock()
			defer mu.Unlock()
			if r.status != http.StatusCreated || r.str("status") != "running" {
				t.Errorf("concurrent create %d: got %d %s, want 201 running", i, r.status, r.raw)
				return
			}
			ids[r.str("id")] = true
		})
	}
	wg.Wait()
	if len(ids) != 11 {
		t.Fatalf("got %d distinct capsules, want 11", len(ids))
	}

	// Without waiting: 202 starting, then running.
	nw := create(map[string]any{"template": template, "wait": false, "metadata": map[string]string{"app": "nowait"}}, http.StatusAccepted)
	if nw.str("status") != "starting" {
		t.Errorf("wait false: got status %s, want starting", nw.str("status"))
	}
	ids[nw.str("id")] = true
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := e.call("GET", "/v1/capsules/"+nw.str("id"), nil, a.bearer()...).want(t, "poll", http.StatusOK)
		if st := r.str("status"); st == "running" {
			break
		} else if st != "starting" || time.Now().After(deadline) {
			t.Fatalf("wait false: got %s, want starting until running", r.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Listing: everything, filters, pages.
	listIDs := func(query string) ([]string, string) {
		t.Helper()
		r := e.call("GET", "/v1/capsules"+query, nil, a.bearer()...).want(t, "list "+query, http.StatusOK)
		var out []string
		for _, v := range r.body["capsules"].([]any) {
			out = append(out, v.(map[string]any)["id"].(string))
		}
		next, _ := r.body["next_cursor"].(string)
		return out, next
	}
	all, next := listIDs("")
	if len(all) != 12 || next != "" {
		t.Errorf("list: got %d capsules and cursor %q, want 12 and none", len(all), next)
	}
	var paged []string
	for cursor, pages := "", 0; ; pages++ {
		q := "?limit=5"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		page, next := listIDs(q)
		paged = append(paged, page...)
		if next == "" {
			if pages != 2 {
				t.Errorf("12 capsules in pages of 5: got %d pages, want 3", pages+1)
			}
			break
		}
		cursor = next
	}
	if fmt.Sprint(paged) != fmt.Sprint(all) {
		t.Errorf("pages: got %v, want %v", paged, all)
	}
	if got, _ := listIDs("?metadata=app=flow&metadata=n=3"); len(got) != 1 {
		t.Errorf("metadata app=flow,n=3: got %d capsules, want 1", len(got))
	}
	if got, _ := listIDs("?metadata=app=flow"); len(got) != 11 {
		t.Errorf("metadata app=flow: got %d capsules, want 11", len(got))
	}
	if got, _ := listIDs("?status=paused,stopped"); len(got) != 0 {
		t.Errorf("status paused,stopped: got %d capsules, want 0", len(got))
	}

	// Team b sees nothing of team a's.
	if r := e.call("GET", "/v1/capsules", nil, b.bearer()...).want(t, "b lists", http.StatusOK); len(r.body["capsules"].([]any)) != 0 {
		t.Errorf("team b lists %s, want nothing", r.raw)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if r := e.call(m, "/v1/capsules/"+id, nil, b.bearer()...); r.status != http.StatusNotFound || r.errCode() != "capsule_not_found" {
			t.Errorf("team b %s a's capsule: got %d %s, want 404 capsule_not_found", m, r.status, r.raw)
		}
	}

	// Destroy: 204, stopped with stopped_at, and again 204.
	for cid := range ids {
		e.call("DELETE", "/v1/capsules/"+cid, nil, a.bearer()...).want(t, "destroy", http.StatusNoContent)
	}
	e.call("DELETE", "/v1/capsules/"+id, nil, a.bearer()...).want(t, "destroy again", http.StatusNoContent)
	got = e.call("GET", "/v1/capsules/"+id, nil, a.bearer()...).want(t, "get destroyed", http.StatusOK)
	if got.str("status") != "stopped" || got.body["stopped_at"] == nil {
		t.Errorf("destroyed: got %s, want stopped with stopped_at", got.raw)
	}
	if stopped, _ := listIDs("?status=stopped&limit=1000"); len(stopped) != 12 {
		t.Errorf("status stopped: got %d, want 12", len(stopped))
	}
	audit := e.call("GET", "/v1/audit-log?limit=1000", nil, a.bearer()...).want(t, "audit log", http.StatusOK)
	actions := map[string]int{}
	for _, v := range audit.list {
		ev := v.(map[string]any)
		actions[ev["action"].(string)]++
		if strings.Contains(fmt.Sprint(ev["metadata"]), "GREETING") {
			t.Errorf("audit event %v holds the envs", ev)
		}
	}
	if actions["capsule.create"] != 12 || actions["capsule.destroy"] != 12 {
		t.Errorf("audit: got %d capsule.create and %d capsule.destroy, want 12 each", actions["capsule.create"], actions["capsule.destroy"])
	}
}

// TestCapsuleAgentBusy checks that an agent busy with another operation on
// a capsule (aborted) makes DELETE a 409 to retry, not an agent failure,
// and that the capsule keeps its status.
func TestCapsuleAgentBusy(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	_, ag := e.agentHost(admin, 4, 8000, []string{"minimal"}, []string{"minimal"})
	c := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...).want(t, "create", http.StatusCreated)
	ag.mu.Lock()
	ag.destroyErr = connect.NewError(connect.CodeAborted, fmt.Errorf("capsule %s is busy", c.str("id")))
	ag.mu.Unlock()
	r := e.call("DELETE", "/v1/capsules/"+c.str("id"), nil, admin.bearer()...)
	if r.status != http.StatusConflict || r.errCode() != "conflict" {
		t.Errorf("delete while the agent is busy: got %d %s, want 409 conflict", r.status, r.raw)
	}
	got := e.call("GET", "/v1/capsules/"+c.str("id"), nil, admin.bearer()...).want(t, "get", http.StatusOK)
	if got.str("status") != "running" {
		t.Errorf("after a refused destroy: got status %s, want running", got.str("status"))
	}
}

// TestEnvdProxyRedirect checks that the control plane follows no redirect
// from an agent's envd proxy: an agent (a BYOC team's own machine) must not
// be able to send the control plane's requests, with their answers passed
// back to the user, to another address.
func TestEnvdProxyRedirect(t *testing.T) {
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	var hits sync.Map
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		_, _ = w.Write([]byte("internal secret"))
	}))
	t.Cleanup(inner.Close)
	_, ag := e.agentHost(admin, 4, 8000, []string{"minimal"}, []string{"minimal"})
	ag.mux.HandleFunc("/capsules/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/internal"+r.URL.Path, http.StatusTemporaryRedirect)
	})
	c := e.call("POST", "/v1/capsules", map[string]any{"template": "minimal"}, admin.bearer()...).want(t, "create", http.StatusCreated)
	for _, rq := range []struct {
		method, sub string
		body        any
	}{
		{"GET", "/files?path=/etc/hostname", nil},
		{"POST", "/files/read", map[string]any{"path": "/etc/hostname"}},
		{"GET", "/processes", nil},
	} {
		r := e.call(rq.method, "/v1/capsules/"+c.str("id")+rq.sub, rq.body, admin.bearer()...)
		if r.status != http.StatusBadGateway || r.errCode() != "capsule_unreachable" || strings.Contains(string(r.raw), "internal secret") {
			t.Errorf("%s %s through a redirecting agent: got %d %s, want 502 capsule_unreachable", rq.method, rq.sub, r.status, r.raw)
		}
	}
	hits.Range(func(k, _ any) bool {
		t.Errorf("the control plane followed the agent's redirect to %v", k)
		return true
	})
}
