package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/wrenn-dev/wrenn/internal/ociimage/ocitest"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/store"
)

// buildView is a build as the API answers it.
type buildView struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Status      string  `json:"status"`
	Error       string  `json:"error"`
	StepsTotal  int     `json:"steps_total"`
	StepsDone   int     `json:"steps_done"`
	CurrentStep string  `json:"current_step"`
	Progress    float64 `json:"progress"`
	CapsuleID   *string `json:"capsule_id"`
	TemplateID  *string `json:"template_id"`
	SizeBytes   int64   `json:"size_bytes"`
}

// logLine is a line of a build's log.
type logLine struct {
	Seq    int64  `json:"seq"`
	Step   int    `json:"step"`
	Stream string `json:"stream"`
	Line   string `json:"line"`
}

// watched is what following a build's event stream saw.
type watched struct {
	lines    []logLine
	statuses []buildView
	end      buildView
}

// text is the log's lines joined.
func (w watched) text() string {
	var b strings.Builder
	for _, l := range w.lines {
		b.WriteString(l.Line + "\n")
	}
	return b.String()
}

// follow reads build id's server-sent events until "end" (or timeout).
// onStatus, when set, is called with each status event as it comes.
func follow(t *testing.T, st *stacktest.Stack, tm stacktest.Team, id string, timeout time.Duration, onStatus func(buildView)) watched {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", st.URL+"/v1/templates/builds/"+id+"/logs", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tm.APIKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("logs: %d %s", res.StatusCode, ct)
	}
	var w watched
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			switch event {
			case "log":
				var l logLine
				if err := json.Unmarshal(data, &l); err != nil {
					t.Fatal(err)
				}
				w.lines = append(w.lines, l)
			case "status":
				var b buildView
				if err := json.Unmarshal(data, &b); err != nil {
					t.Fatal(err)
				}
				w.statuses = append(w.statuses, b)
				if onStatus != nil {
					onStatus(b)
				}
			case "end":
				if err := json.Unmarshal(data, &w.end); err != nil {
					t.Fatal(err)
				}
				return w
			}
		}
	}
	t.Fatalf("build %s: the event stream ended without an end event (%v); saw %d lines:\n%s", id, sc.Err(), len(w.lines), w.text())
	return w
}

// checkSeq fails unless lines are numbered 1, 2, 3, … without gaps.
func checkSeq(t *testing.T, lines []logLine) {
	t.Helper()
	for i, l := range lines {
		if l.Seq != int64(i+1) {
			t.Fatalf("log line %d has seq %d, want %d", i, l.Seq, i+1)
		}
	}
}

// startBuild posts a recipe build and returns it.
func startBuild(t *testing.T, st *stacktest.Stack, name string, recipe map[string]any) buildView {
	t.Helper()
	var b buildView
	st.Team.JSON(t, st, "POST", "/v1/templates", map[string]any{"name": name, "recipe": recipe}, http.StatusAccepted, &b)
	if b.Status != "running" || b.ID == "" {
		t.Fatalf("new build: %+v", b)
	}
	return b
}

// templateDirs lists the agent's template directories.
func templateDirs(t *testing.T, st *stacktest.Stack) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(st.AgentConfig.Dir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

// uploadImage posts archive as a multipart image build of name.
func uploadImage(t *testing.T, st *stacktest.Stack, name, archive string) answer {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		_ = mw.WriteField("name", name)
		_ = mw.WriteField("memory_mb", "256")
		fw, err := mw.CreateFormFile("image", "image.tar")
		if err == nil {
			var f *os.File
			if f, err = os.Open(archive); err == nil {
				_, err = io.Copy(fw, f)
				_ = f.Close()
			}
		}
		if err == nil {
			err = mw.Close()
		}
		_ = pw.CloseWithError(err)
	}()
	res := st.Team.DoRaw(t, st, "POST", "/v1/templates", mw.FormDataContentType(), pr)
	defer func() { _ = res.Body.Close() }()
	return readAnswer(t, res)
}

// TestImageBuildStack builds an OCI layout in the test (busybox, then two
// layers with a whiteout, an opaque directory, hard links, a set-uid file
// of uid 1000 and an xattr), uploads it, follows the build to its end, and
// checks the template's files on disk and, with stat, inside a capsule.
func TestImageBuildStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ColdStarts: true})
	_, images := stacktest.Env(t)
	img := ocitest.Image(t, append([]v1.Layer{ocitest.BusyboxLayer(t, filepath.Join(images, "minimal", "rootfs"))}, ocitest.Layers(t)...)...)
	archive := ocitest.LayoutArchive(t, t.TempDir(), img)

	a := uploadImage(t, st, "ocitest", archive).want(t, "image build", http.StatusAccepted)
	id := a.str("id")
	if a.str("status") != "running" || a.str("source") != "image" || a.header.Get("Location") != "/v1/templates/builds/"+id {
		t.Fatalf("build: %s (Location %q)", a.raw, a.header.Get("Location"))
	}
	w := follow(t, st, st.Team, id, 2*time.Minute, nil)
	if w.end.Status != "succeeded" || w.end.TemplateID == nil || w.end.SizeBytes <= 0 || w.end.Progress != 1 {
		t.Fatalf("build ended %+v; log:\n%s", w.end, w.text())
	}
	checkSeq(t, w.lines)
	for _, want := range []string{"step 1/3", "step 2/3", "step 3/3", "layer 1/3", "layer 3/3", "added envd"} {
		if !strings.Contains(w.text(), want) {
			t.Errorf("log lacks %q:\n%s", want, w.text())
		}
	}
	// A watcher who comes late gets the whole log again.
	if again := follow(t, st, st.Team, id, 30*time.Second, nil); len(again.lines) != len(w.lines) || again.end.Status != "succeeded" {
		t.Errorf("late watcher saw %d lines and %s, want %d and succeeded", len(again.lines), again.end.Status, len(w.lines))
	}

	tid := *w.end.TemplateID
	rootfs := filepath.Join(st.AgentConfig.Dir, "images", tid, "rootfs")
	ocitest.Check(t, rootfs)
	if fi, err := os.Stat(filepath.Join(rootfs, "usr/bin/envd")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("template has no executable envd: %v", err)
	}

	var ts []struct {
		Name      string          `json:"name"`
		Kind      string          `json:"kind"`
		Public    bool            `json:"public"`
		SizeBytes int64           `json:"size_bytes"`
		BuildMS   *int64          `json:"build_ms"`
		Config    json.RawMessage `json:"config"`
	}
	st.Team.JSON(t, st, "GET", "/v1/templates", nil, http.StatusOK, &ts)
	found := false
	for _, tm := range ts {
		if tm.Name == "ocitest" {
			found = true
			if tm.Kind != "image" || tm.Public || tm.SizeBytes != w.end.SizeBytes || tm.BuildMS == nil || *tm.BuildMS <= 0 ||
				!strings.Contains(string(tm.Config), `"WRENN_IMAGE":"ocitest"`) {
				t.Errorf("template: %+v config %s", tm, tm.Config)
			}
		}
	}
	if !found {
		t.Fatalf("GET /v1/templates lacks ocitest: %+v", ts)
	}
	// Another team does not see it.
	other := st.NewTeam(t)
	if a := teamCall(t, st, other, "POST", "/v1/capsules", map[string]any{"template": "ocitest"}); a.status != http.StatusNotFound {
		t.Errorf("another team's create from ocitest: %d %s", a.status, a.raw)
	}

	c := createFrom(t, st, map[string]any{"template": "ocitest"}).want(t, "capsule from ocitest", http.StatusCreated)
	cc := &capsuleClient{t: t, st: st, tm: st.Team, id: c.str("id")}
	t.Cleanup(func() { cc.call("DELETE", "", nil) })
	out := cc.sh("stat -c '%n %a %u %g %h' /data/keep /data/orig /data/same /data/link /data/suid; stat -c '%n %a %u %g' /opq; ls -A /opq; echo $WRENN_IMAGE")
	want := "/data/keep 640 1000 1000 1\n/data/orig 600 1000 1000 3\n/data/same 600 1000 1000 3\n/data/link 600 1000 1000 3\n" +
		"/data/suid 4755 1000 1000 1\n/opq 750 0 0\nnew\nocitest\n"
	if out != want {
		t.Errorf("inside the capsule:\n%s\nwant:\n%s", out, want)
	}
	inodes := strings.Fields(cc.sh("stat -c %i /data/orig /data/same /data/link"))
	if len(inodes) != 3 || inodes[0] != inodes[1] || inodes[0] != inodes[2] {
		t.Errorf("hard links have inodes %v, want one", inodes)
	}
	if a := cc.exec(map[string]any{"cmd": "test -e /data/gone || test -e /opq/old || test -e /opq/sub"}).want(t, "whiteouts", http.StatusOK); a.num("exit_code") == 0 {
		t.Errorf("a whited-out file is visible in the capsule")
	}
	cc.call("DELETE", "", nil).want(t, "destroy", http.StatusNoContent)

	// The team deletes its template: its row and its directory go.
	deleteSnapshot(t, st, "ocitest").want(t, "delete template", http.StatusNoContent)
	if templateDirs(t, st)[tid] {
		t.Errorf("template directory %s is still on the host after the delete", tid)
	}
}

// TestRecipeBuildStack builds a template from a recipe on minimal and
// starts a capsule of it: files, environment and the started process are
// there, and the build capsule is gone.
func TestRecipeBuildStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ColdStarts: true})
	b := startBuild(t, st, "recipe-ok", map[string]any{
		"base": "minimal",
		"steps": []map[string]any{
			{"env": map[string]string{"GREETING": "hello from the recipe"}},
			{"workdir": "/srv/app"},
			{"copy": map[string]any{"path": "/srv/app/config.txt", "content": "port=8080\n", "mode": "0600"}},
			{"run": "echo building in $(pwd); cat config.txt; echo \"$GREETING\" > greeting; echo to-stderr >&2"},
			{"start": "while true; do date +%s > /tmp/alive; sleep 1; done"},
			{"expose": []int{8080}},
		},
	})
	var progress []float64
	w := follow(t, st, st.Team, b.ID, 3*time.Minute, func(v buildView) { progress = append(progress, v.Progress) })
	if w.end.Status != "succeeded" {
		t.Fatalf("build ended %+v; log:\n%s", w.end, w.text())
	}
	checkSeq(t, w.lines)
	for _, want := range []string{"step 1/8: start a capsule of minimal", "step 5/8: RUN", "building in /srv/app", "port=8080", "to-stderr", "step 8/8: snapshot"} {
		if !strings.Contains(w.text(), want) {
			t.Errorf("log lacks %q:\n%s", want, w.text())
		}
	}
	if len(progress) < 3 || progress[len(progress)-1] != 1 {
		t.Errorf("progress went %v, want several steps ending at 1", progress)
	}
	t.Cleanup(func() { teamCall(t, st, st.Team, "DELETE", "/v1/snapshots/recipe-ok", nil) })
	if w.end.CapsuleID == nil {
		t.Fatal("build has no capsule id")
	}
	if got := dbStatus(t, st, *w.end.CapsuleID).Status; got != "stopped" {
		t.Errorf("build capsule is %s after the build, want stopped", got)
	}

	c := createFrom(t, st, map[string]any{"template": "recipe-ok"}).want(t, "capsule from recipe-ok", http.StatusCreated)
	cc := &capsuleClient{t: t, st: st, tm: st.Team, id: c.str("id")}
	t.Cleanup(func() { cc.call("DELETE", "", nil) })
	if got := cc.sh("cat /srv/app/greeting; stat -c '%a' /srv/app/config.txt; echo $GREETING"); got != "hello from the recipe\n600\nhello from the recipe\n" {
		t.Errorf("capsule of recipe-ok: %q", got)
	}
	a1 := cc.sh("cat /tmp/alive")
	time.Sleep(1500 * time.Millisecond)
	if a2 := cc.sh("cat /tmp/alive"); a1 == a2 {
		t.Errorf("the start command does not run in a capsule of the template (%q then %q)", a1, a2)
	}
}

// TestRecipeFailingStepStack: a failing step fails the build with the
// step's output and leaves nothing: no template, no capsule, no files.
func TestRecipeFailingStepStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ColdStarts: true})
	before := templateDirs(t, st)
	b := startBuild(t, st, "recipe-bad", map[string]any{
		"base": "minimal",
		"steps": []map[string]any{
			{"run": "echo first step fine"},
			{"run": "echo about to fail; echo the cause >&2; exit 3"},
			{"run": "echo never runs"},
		},
	})
	w := follow(t, st, st.Team, b.ID, 2*time.Minute, nil)
	if w.end.Status != "failed" || !strings.Contains(w.end.Error, "step 3/5 (RUN") || !strings.Contains(w.end.Error, "exit code 3") ||
		!strings.Contains(w.end.Error, "the cause") || !strings.Contains(w.end.Error, "about to fail") {
		t.Fatalf("build ended %+v", w.end)
	}
	if strings.Contains(w.text(), "never runs") || !strings.Contains(w.text(), "first step fine") {
		t.Errorf("log:\n%s", w.text())
	}
	if names := templateNames(t, st); strings.Contains(strings.Join(names, " "), "recipe-bad") {
		t.Errorf("templates after a failed build: %v", names)
	}
	if w.end.CapsuleID == nil || dbStatus(t, st, *w.end.CapsuleID).Status != "stopped" {
		t.Errorf("build capsule not destroyed: %+v", w.end)
	}
	if left := leftoversOf(t, st, *w.end.CapsuleID, nil); len(left) > 0 {
		t.Errorf("the failed build left on the host: %v", left)
	}
	for d := range templateDirs(t, st) {
		if !before[d] {
			t.Errorf("the failed build left template directory %s", d)
		}
	}
	// The name is free again; the platform admin (the stack's first
	// user) builds it public this time: every team sees it.
	var b2 buildView
	st.Team.JSON(t, st, "POST", "/v1/templates", map[string]any{"name": "recipe-bad", "public": true,
		"recipe": map[string]any{"base": "minimal", "steps": []map[string]any{{"run": "echo public > /root/p"}}}}, http.StatusAccepted, &b2)
	if w2 := follow(t, st, st.Team, b2.ID, 2*time.Minute, nil); w2.end.Status != "succeeded" {
		t.Fatalf("second build of the name: %+v", w2.end)
	}
	other := st.NewTeam(t)
	var ts []struct {
		Name   string `json:"name"`
		Public bool   `json:"public"`
	}
	other.JSON(t, st, "GET", "/v1/templates", nil, http.StatusOK, &ts)
	seen := false
	for _, tm := range ts {
		seen = seen || (tm.Name == "recipe-bad" && tm.Public)
	}
	if !seen {
		t.Errorf("another team does not see the public template: %+v", ts)
	}
	a := teamCall(t, st, other, "POST", "/v1/templates", map[string]any{"name": "x", "public": true,
		"recipe": map[string]any{"base": "minimal", "steps": []map[string]any{{"run": "true"}}}})
	a.wantError(t, "public build by a member", http.StatusForbidden, "forbidden")
}

// TestBuildCancelStack cancels a build in the middle of a long step.
func TestBuildCancelStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ColdStarts: true})
	b := startBuild(t, st, "recipe-cancel", map[string]any{
		"base":  "minimal",
		"steps": []map[string]any{{"run": "echo sleeping; sleep 300"}, {"run": "echo never"}},
	})
	cancelled := false
	w := follow(t, st, st.Team, b.ID, 2*time.Minute, func(v buildView) {
		if !cancelled && strings.HasPrefix(v.CurrentStep, "RUN echo sleeping") {
			cancelled = true
			teamCall(t, st, st.Team, "POST", "/v1/templates/builds/"+b.ID+"/cancel", nil).want(t, "cancel", http.StatusAccepted)
		}
	})
	if w.end.Status != "cancelled" || w.end.Error != "cancelled" {
		t.Fatalf("build ended %+v", w.end)
	}
	teamCall(t, st, st.Team, "POST", "/v1/templates/builds/"+b.ID+"/cancel", nil).wantError(t, "cancel again", http.StatusConflict, "conflict")
	if w.end.CapsuleID == nil || dbStatus(t, st, *w.end.CapsuleID).Status != "stopped" {
		t.Errorf("build capsule not destroyed: %+v", w.end)
	}
	if names := templateNames(t, st); strings.Contains(strings.Join(names, " "), "recipe-cancel") {
		t.Errorf("templates after a cancelled build: %v", names)
	}
	other := st.NewTeam(t)
	teamCall(t, st, other, "POST", "/v1/templates/builds/"+b.ID+"/cancel", nil).wantError(t, "another team's cancel", http.StatusNotFound, "not_found")
	teamCall(t, st, other, "GET", "/v1/templates/builds/"+b.ID, nil).wantError(t, "another team's build", http.StatusNotFound, "not_found")
}

// TestBuildReaperStack: a build that a dead control plane left running (its
// heartbeat stale) is failed by the build reaper with a reason, and its
// capsule is destroyed.
func TestBuildReaperStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{ReaperInterval: 200 * time.Millisecond, BuildStaleAfter: 5 * time.Second})
	cc := newCapsuleClient(t, st)
	// What a control plane that died in the middle of a build leaves: a
	// running build that nobody touches any more, with its capsule.
	ctx := context.Background()
	b, err := st.Store.CreateBuild(ctx, store.NewBuild{TeamID: st.Team.ID, Name: "orphaned", Source: store.BuildFromRecipe,
		StepsTotal: 3, Runner: "dead-cp"}, store.Event{TeamID: st.Team.ID, ActorType: store.ActorSystem, Action: "template.build.start"})
	if err != nil {
		t.Fatal(err)
	}
	step, capsuleID := "RUN make", cc.id
	if _, err := st.Store.UpdateBuild(ctx, b.ID, store.BuildProgress{CurrentStep: &step, CapsuleID: &capsuleID}); err != nil {
		t.Fatal(err)
	}
	id := b.ID
	w := follow(t, st, st.Team, id, 30*time.Second, nil)
	if w.end.Status != "failed" || !strings.Contains(w.end.Error, "control plane running this build stopped") || !strings.Contains(w.end.Error, "RUN make") {
		t.Fatalf("orphaned build: %+v", w.end)
	}
	deadline := time.Now().Add(30 * time.Second)
	for dbStatus(t, st, cc.id).Status != "stopped" {
		if time.Now().After(deadline) {
			t.Fatalf("the orphaned build's capsule is %s, want stopped", dbStatus(t, st, cc.id).Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
