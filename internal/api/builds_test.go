package api_test

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
)

// imageForm returns a form of fields (in order, name then value) and,
// when image is not nil, a part "image" holding it.
func imageForm(t *testing.T, image []byte, fields ...string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		if err := mw.WriteField(fields[i], fields[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if image != nil {
		fw, err := mw.CreateFormFile("image", "image.tar")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(image)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

// TestBuildBadInput: every malformed build request is a 4xx in the error
// shape, and none leaves a build, a template or a staged upload behind.
func TestBuildBadInput(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the control plane stages uploads
	e := newEnv(t)
	admin := e.signup("admin@example.com")
	user := e.signup("user@example.com")
	steps := func(s ...map[string]any) map[string]any { return map[string]any{"base": "minimal", "steps": s} }
	run := map[string]any{"run": "true"}
	cases := []struct {
		name   string
		who    account
		body   any
		status int
		code   string
		want   string
	}{
		{"empty", user, map[string]any{"name": "x"}, 400, "invalid_request", "give a recipe"},
		{"unknown field", user, map[string]any{"name": "x", "recipe": steps(run), "colour": "red"}, 400, "invalid_request", "colour"},
		{"bad name", user, map[string]any{"name": "Not A Name!", "recipe": steps(run)}, 400, "invalid_request", "not a template name"},
		{"no name", user, map[string]any{"recipe": steps(run)}, 400, "invalid_request", "name is required"},
		{"taken name", user, map[string]any{"name": "minimal", "recipe": steps(run)}, 409, "name_taken", "already exists"},
		{"no base", user, map[string]any{"name": "x", "recipe": map[string]any{"steps": []any{run}}}, 400, "invalid_request", "recipe.base is required"},
		{"unknown base", user, map[string]any{"name": "x", "recipe": map[string]any{"base": "nope", "steps": []any{run}}}, 400, "invalid_request", "no template called"},
		{"no steps", user, map[string]any{"name": "x", "recipe": steps()}, 400, "invalid_request", "at least one step"},
		{"two keys", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"run": "a", "user": "b"})}, 400, "invalid_request", "exactly one"},
		{"unknown step", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"from": "debian"})}, 400, "invalid_request", "from"},
		{"bad env", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"env": map[string]string{"1X": "y"}})}, 400, "invalid_request", "not a variable name"},
		{"relative copy", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"copy": map[string]any{"path": "etc/x", "content": "y"}})}, 400, "invalid_request", "absolute"},
		{"bad mode", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"copy": map[string]any{"path": "/x", "content": "y", "mode": "rwx"}})}, 400, "invalid_request", "octal"},
		{"bad base64", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"copy": map[string]any{"path": "/x", "content_base64": "!!"}})}, 400, "invalid_request", "content_base64"},
		{"bad port", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"expose": []int{70000}})}, 400, "invalid_request", "70000"},
		{"bad timeout", user, map[string]any{"name": "x", "recipe": steps(map[string]any{"run": "true", "timeout_sec": 99999})}, 400, "invalid_request", "timeout_sec"},
		{"public by member", user, map[string]any{"name": "x", "public": true, "recipe": steps(run)}, 403, "forbidden", "platform admins"},
		{"path by member", user, map[string]any{"name": "x", "image_path": "/etc/passwd"}, 403, "forbidden", "platform admins"},
		{"relative path", admin, map[string]any{"name": "x", "image_path": "image.tar"}, 400, "invalid_request", "absolute"},
		{"missing path", admin, map[string]any{"name": "x", "image_path": "/nonexistent/image.tar"}, 400, "invalid_request", "image_path"},
		{"not an image", admin, map[string]any{"name": "x", "image_path": "/etc/passwd"}, 400, "invalid_request", "not a tar file"},
		{"both", admin, map[string]any{"name": "x", "image_path": "/etc/passwd", "recipe": steps(run)}, 400, "invalid_request", "give one of"},
		{"reference and recipe", admin, map[string]any{"name": "x", "image": "python:3", "recipe": steps(run)}, 400, "invalid_request", "give one of"},
		{"reference without pulls", admin, map[string]any{"name": "x", "image": "python:3"}, 400, "invalid_request", "pulls no images"},
		{"not JSON", user, "{", 400, "invalid_request", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.call("POST", "/v1/templates", c.body, c.who.bearer()...)
			if r.status != c.status || r.errCode() != c.code || !strings.Contains(r.str("error")+string(r.raw), c.want) {
				t.Errorf("got %d %s, want %d %s with %q", r.status, r.raw, c.status, c.code, c.want)
			}
		})
	}

	dir := t.TempDir()
	good, err := os.ReadFile(ocitest.LayoutArchive(t, dir, ocitest.Image(t, ocitest.Layers(t)...)))
	if err != nil {
		t.Fatal(err)
	}
	emptyTar := filepath.Join(dir, "empty.tar")
	if err := ocitest.TarDir(t.TempDir(), emptyTar); err != nil {
		t.Fatal(err)
	}
	empty, _ := os.ReadFile(emptyTar)
	uploads := []struct {
		name   string
		image  []byte
		fields []string
		status int
		want   string
	}{
		{"no image part", nil, []string{"name", "x"}, 400, "no part"},
		{"not a tar", []byte("plain text, not an archive at all........"), []string{"name", "x"}, 400, "not a tar file"},
		{"tar without image", empty, []string{"name", "x"}, 400, "neither oci-layout"},
		{"unknown field", good, []string{"name", "x", "colour", "red"}, 400, "unknown form field"},
		{"bad public", good, []string{"name", "x", "public", "maybe"}, 400, "true or false"},
		{"public by member", good, []string{"name", "x", "public", "true"}, 403, "platform admins"},
		{"bad vcpus", good, []string{"name", "x", "vcpus", "many"}, 400, "integer"},
		{"too small", good, []string{"name", "x", "memory_mb", "1"}, 400, "memory_mb"},
		{"bad name", good, []string{"name", "../x"}, 400, "not a template name"},
		{"taken", good, []string{"name", "minimal"}, 409, "already exists"},
	}
	for _, u := range uploads {
		t.Run("upload "+u.name, func(t *testing.T) {
			ct, body := imageForm(t, u.image, u.fields...)
			r := e.call("POST", "/v1/templates", body, append(user.bearer(), "Content-Type", ct)...)
			if r.status != u.status || !strings.Contains(string(r.raw), u.want) {
				t.Errorf("got %d %s, want %d with %q", r.status, r.raw, u.status, u.want)
			}
		})
	}
	// YAML requests go the JSON way, with its checks.
	bomb := "a: &a [x, x, x, x, x, x, x, x, x]\n"
	for i, prev := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		next := string(rune('b' + i))
		bomb += next + ": &" + next + " [" + strings.Repeat("*"+prev+", ", 8) + "*" + prev + "]\n"
	}
	for _, y := range []struct{ name, body, want string }{
		{"not YAML", "name: [unclosed", "not YAML"},
		{"a list", "- name: x\n", "mapping"},
		{"unknown field", "name: x\nrecipe:\n  base: minimal\n  steps:\n    - run: 'true'\ncolour: red\n", "colour"},
		{"bad name", "name: Not A Name!\nrecipe:\n  base: minimal\n  steps:\n    - run: 'true'\n", "not a template name"},
		{"alias bomb", bomb, "not YAML"},
	} {
		t.Run("yaml "+y.name, func(t *testing.T) {
			r := e.call("POST", "/v1/templates", []byte(y.body), append(user.bearer(), "Content-Type", "application/yaml")...)
			if r.status != 400 || r.errCode() != "invalid_request" || !strings.Contains(string(r.raw), y.want) {
				t.Errorf("got %d %s, want 400 with %q", r.status, r.raw, y.want)
			}
		})
	}
	r := e.call("POST", "/v1/templates", "x", append(user.bearer(), "Content-Type", "text/plain")...)
	if r.status != 400 || r.errCode() != "invalid_request" {
		t.Errorf("text/plain: %d %s", r.status, r.raw)
	}
	for _, p := range []string{"/v1/templates/builds/nope", "/v1/templates/builds/6f1d1a5e-3a4b-4c5d-8e9f-0a1b2c3d4e5f",
		"/v1/templates/builds/6f1d1a5e-3a4b-4c5d-8e9f-0a1b2c3d4e5f/logs"} {
		if r := e.call("GET", p, nil, user.bearer()...); r.status != 404 || r.errCode() != "not_found" {
			t.Errorf("GET %s: %d %s", p, r.status, r.raw)
		}
	}
	if r := e.call("POST", "/v1/templates/builds/nope/cancel", nil, user.bearer()...); r.status != 404 {
		t.Errorf("cancel unknown: %d %s", r.status, r.raw)
	}

	if n := e.count("template_builds"); n != 0 {
		t.Errorf("%d builds recorded by bad requests", n)
	}
	if n := e.count("templates WHERE kind <> 'base'"); n != 0 {
		t.Errorf("%d templates made by bad requests", n)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "wrenn-image-*")); len(left) > 0 {
		t.Errorf("staged uploads left behind: %v", left)
	}
}

// TestBuildWithoutHost: a good upload with no host online becomes a build
// that fails with a reason; its staged upload is removed.
func TestBuildWithoutHost(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	e := newEnv(t)
	user := e.signup("user@example.com")
	good, err := os.ReadFile(ocitest.LayoutArchive(t, t.TempDir(), ocitest.Image(t, ocitest.Layers(t)...)))
	if err != nil {
		t.Fatal(err)
	}
	ct, body := imageForm(t, good, "name", "lonely")
	r := e.call("POST", "/v1/templates", body, append(user.bearer(), "Content-Type", ct)...).want(t, "build", http.StatusAccepted)
	id := r.str("id")
	var b response
	for range 100 {
		b = e.call("GET", "/v1/templates/builds/"+id, nil, user.bearer()...)
		if b.str("status") != "running" {
			break
		}
		waitABit()
	}
	if b.str("status") != "failed" || !strings.Contains(b.str("error"), "no host is online") {
		t.Fatalf("build: %s", b.raw)
	}
	logs := e.call("GET", "/v1/templates/builds/"+id+"/logs", nil, user.bearer()...).want(t, "logs as JSON", http.StatusOK)
	if lines, _ := logs.body["logs"].([]any); len(lines) < 2 {
		t.Errorf("logs: %s", logs.raw)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "wrenn-image-*")); len(left) > 0 {
		t.Errorf("staged uploads left behind: %v", left)
	}
	if r := e.call("GET", "/v1/templates/builds", nil, user.bearer()...); r.status != 200 || len(r.list) != 1 {
		t.Errorf("list builds: %d %s", r.status, r.raw)
	}
}

// waitABit is how long polls of a build's status wait between reads.
func waitABit() { time.Sleep(50 * time.Millisecond) }
