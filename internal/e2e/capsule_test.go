package e2e_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/testdb"
)

// TestCapsuleStory is a user's first session, against the real binaries:
// create a capsule, run `echo hello`, write a file, read it back, list its
// directory, destroy the capsule — and nothing of it is left on the host.
func TestCapsuleStory(t *testing.T) {
	u := startUserStack(t)
	api, env, agentDir := u.api, u.agentEnv, u.agentDir

	// Create.
	began := time.Now()
	var c struct {
		ID       string `json:"id"`
		Status   string `json:"status"`
		Template string `json:"template"`
	}
	api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal"}, &c)
	if c.Status != "running" || c.Template != "minimal" {
		t.Fatalf("created capsule = %+v, want a running minimal capsule", c)
	}
	t.Logf("capsule %s running %v after POST", c.ID, time.Since(began).Round(time.Millisecond))

	// Exec.
	var out struct {
		Stdout   string `json:"stdout"`
		ExitCode int    `json:"exit_code"`
	}
	api.must(http.StatusOK, "POST", "/v1/capsules/"+c.ID+"/exec", map[string]any{"cmd": "echo hello"}, &out)
	if out.Stdout != "hello\n" || out.ExitCode != 0 {
		t.Fatalf("echo hello = %+v", out)
	}

	// Write a file (multipart, as SDKs send it), read it back, list it.
	data := make([]byte, 3<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	if err := mw.WriteField("path", "/root/data.bin"); err != nil {
		t.Fatal(err)
	}
	fw, err := mw.CreateFormFile("file", "data.bin")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = mw.Close()
	res := rawCall(t, api, "POST", "/v1/capsules/"+c.ID+"/files/write", mw.FormDataContentType(), &form)
	if res.status != http.StatusOK && res.status != http.StatusCreated {
		t.Fatalf("files/write = %d %s", res.status, res.body)
	}
	res = rawCall(t, api, "POST", "/v1/capsules/"+c.ID+"/files/read", "application/json", strings.NewReader(`{"path": "/root/data.bin"}`))
	if res.status != http.StatusOK || sha256.Sum256(res.body) != sha256.Sum256(data) {
		t.Fatalf("files/read = %d, %d bytes; want the %d bytes written, same checksum", res.status, len(res.body), len(data))
	}
	var list struct {
		Entries []struct {
			Name string `json:"name"`
			Size int64  `json:"size"`
		} `json:"entries"`
	}
	api.must(http.StatusOK, "POST", "/v1/capsules/"+c.ID+"/files/list", map[string]any{"path": "/root"}, &list)
	if !slices.ContainsFunc(list.Entries, func(e struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}) bool {
		return e.Name == "data.bin" && e.Size == int64(len(data))
	}) {
		t.Fatalf("files/list /root = %+v, lacks data.bin of %d bytes", list.Entries, len(data))
	}

	// Destroy: the capsule is stopped, and its namespace, processes and
	// files are gone from the host.
	rec, ok := stacktest.FindRecord(t, agentDir, c.ID)
	if !ok || rec.RuntimeID == "" {
		t.Fatalf("the agent has no record of capsule %s", c.ID)
	}
	if _, err := os.Stat(filepath.Join(agentDir, "netns", env["WRENN_NETWORK_PREFIX"]+"-"+rec.RuntimeID)); err != nil {
		t.Fatalf("the running capsule's network namespace is not where the check below looks: %v", err)
	}
	api.must(http.StatusNoContent, "DELETE", "/v1/capsules/"+c.ID, nil, nil)
	api.must(http.StatusOK, "GET", "/v1/capsules/"+c.ID, nil, &c)
	if c.Status != "stopped" {
		t.Fatalf("after DELETE the capsule is %q, want stopped", c.Status)
	}
	if _, err := os.Stat(filepath.Join(agentDir, "netns", env["WRENN_NETWORK_PREFIX"]+"-"+rec.RuntimeID)); err == nil {
		t.Error("the capsule's network namespace is still there")
	}
	if _, err := os.Stat(filepath.Join(agentDir, "sandboxes", rec.RuntimeID)); err == nil {
		t.Error("the capsule's directory is still there")
	}
	if pids := stacktest.ProcessesNaming(t, rec.RuntimeID); len(pids) > 0 {
		t.Errorf("processes of the capsule still run: %v", pids)
	}
}

// The first user of a userStack: the platform admin, who registers its host.
const (
	adaEmail    = "ada@example.com"
	adaPassword = "correct horse battery staple"
)

// userStack is a control plane and a registered agent, started from the
// real binaries, and an API client of a user of it.
type userStack struct {
	api      *client
	cp       *process
	dbURL    string
	cpAddr   string
	agent    *process
	agentEnv map[string]string
	agentDir string
	hostID   string
}

// stackOptions adjust the agent of a userStack before it starts.
type stackOptions struct {
	// templates are the templates of WRENN_TEST_IMAGES it has (default:
	// minimal).
	templates []string
	// env changes its environment.
	env func(map[string]string)
}

// startUserStack starts a control plane on a fresh database, signs a user
// up, creates an API key, and registers an agent whose templates are the
// ones `make test` built; it returns once the host is online.
func startUserStack(t *testing.T, opts ...stackOptions) *userStack {
	t.Helper()
	stacktest.Env(t)
	dbURL := testdb.New(t)
	migrate := start(t, "wrenn-cp-migrate", bin.cp, map[string]string{"DATABASE_URL": dbURL}, "migrate", "up")
	if code := migrate.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("wrenn-cp migrate up exited %d:\n%s", code, migrate.logs())
	}
	cpAddr := freeAddr(t)
	cpURL := "http://" + cpAddr
	cp := startControlPlane(t, dbURL, cpAddr)

	anon := &client{t: t, base: cpURL}
	var session struct {
		Token string `json:"token"`
	}
	anon.must(http.StatusCreated, "POST", "/v1/auth/signup",
		map[string]string{"email": adaEmail, "password": adaPassword, "name": "Ada", "bootstrap_token": bootstrapToken}, &session)
	user := &client{t: t, base: cpURL, header: http.Header{"Authorization": {"Bearer " + session.Token}}}
	var key struct {
		Key string `json:"key"`
	}
	user.must(http.StatusCreated, "POST", "/v1/api-keys", map[string]any{"name": "e2e", "scopes": adminScopes}, &key)
	api := &client{t: t, base: cpURL, header: http.Header{"X-Api-Key": {key.Key}}}

	u := &userStack{api: api, cp: cp, dbURL: dbURL, cpAddr: cpAddr}
	var o stackOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	u.hostID, u.agentDir, u.agentEnv, u.agent = u.startAgent(t, o)
	return u
}

// startAgent registers a new host of u's control plane and starts its
// agent, with images from `make test` and options o; it returns once the
// host is online.
func (u *userStack) startAgent(t *testing.T, o stackOptions) (hostID, dir string, env map[string]string, agent *process) {
	t.Helper()
	_, images := stacktest.Env(t)
	hostID, regToken := createHost(t, u.api)
	dir = stacktest.ScratchDir(t)
	stacktest.LinkImages(t, images, filepath.Join(dir, "images"), o.templates...)
	addr := freeAddr(t)
	env = agentEnv(t, "http://"+u.cpAddr, dir, addr)
	if o.env != nil {
		o.env(env)
	}
	agent = start(t, "wrenn-agent", bin.agent, env, "--register", regToken, "--address", addr)
	eventually(t, 15*time.Second, "host online with the minimal template", func() error {
		if agent.exited() {
			t.Fatalf("wrenn-agent exited:\n%s", agent.logs())
		}
		var h struct {
			Status    string   `json:"status"`
			Templates []string `json:"templates"`
		}
		u.api.must(http.StatusOK, "GET", "/v1/hosts/"+hostID, nil, &h)
		if h.Status != "online" || !slices.Contains(h.Templates, "minimal") {
			return errorString("host is " + h.Status + " with templates " + strings.Join(h.Templates, ","))
		}
		return nil
	})
	return hostID, dir, env, agent
}

type errorString string

func (e errorString) Error() string { return string(e) }

type rawResult struct {
	status int
	body   []byte
}

// rawCall sends body with contentType and returns the raw answer.
func rawCall(t *testing.T, c *client, method, path, contentType string, body io.Reader) rawResult {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	for k, v := range c.header {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResult{res.StatusCode, b}
}
