package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/agent"
	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// counterLoop starts a shell in the capsule that counts in its own memory
// and writes each value to /tmp/counter: after a resume the count must go
// on from where it was, which only a restored process can do. The value is
// renamed into place so that a reader never sees a half-written file.
const counterLoop = `setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done' </dev/null >/dev/null 2>&1 &`

// readCounter returns the value the capsule's counter loop last wrote.
func readCounter(t *testing.T, client *envdclient.Client) int {
	t.Helper()
	r := stacktest.Run(t, client, "cat /tmp/counter")
	n, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil {
		t.Fatalf("reading the counter: %+v", r)
	}
	return n
}

// prepareCapsule starts the counter loop and writes 1 MiB of random data
// to /root/data in the capsule; it returns the data's SHA-256 once the loop
// has written its first value (up to 10 s: the loop's shell may start after
// the write on a loaded machine, and a first read would find no counter).
func prepareCapsule(t *testing.T, client *envdclient.Client) string {
	t.Helper()
	r := stacktest.Run(t, client, counterLoop+` head -c 1048576 /dev/urandom > /root/data &&
		n=0; while [ ! -s /tmp/counter ] && [ $n -lt 500 ]; do sleep 0.02; n=$((n+1)); done;
		sha256sum /root/data`)
	if r.ExitCode != 0 {
		t.Fatalf("preparing the capsule: %+v", r)
	}
	return strings.Fields(r.Stdout)[0]
}

func sha256Of(t *testing.T, client *envdclient.Client, path string) string {
	t.Helper()
	r := stacktest.Run(t, client, "sha256sum "+path)
	if r.ExitCode != 0 {
		t.Fatalf("sha256sum %s: %+v", path, r)
	}
	return strings.Fields(r.Stdout)[0]
}

func connectCode(err error) connect.Code {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Code()
	}
	return connect.CodeUnknown
}

func pause(t *testing.T, s *stacktest.Stack, id string) *hostagentv1.Capsule {
	t.Helper()
	res, err := s.CapsuleService().PauseCapsule(context.Background(), connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: id}))
	if err != nil {
		t.Fatalf("PauseCapsule: %v", err)
	}
	return res.Msg.GetCapsule()
}

func resume(t *testing.T, s *stacktest.Stack, id string) *hostagentv1.Capsule {
	t.Helper()
	res, err := s.CapsuleService().ResumeCapsule(context.Background(), connect.NewRequest(&hostagentv1.ResumeCapsuleRequest{CapsuleId: id}))
	if err != nil {
		t.Fatalf("ResumeCapsule: %v", err)
	}
	return res.Msg.GetCapsule()
}

// TestPauseResume pauses and resumes one capsule several times: while it is
// paused no sandbox runs and its saved state is on disk; after each resume
// it has its address, its file, and its counter going on from where it was.
func TestPauseResume(t *testing.T) {
	s := stacktest.Start(t)
	c := s.CreateCapsule(t)
	id, runtimeID := c.GetSpec().GetCapsuleId(), c.GetRuntimeId()
	client := s.Envd(t, id)
	sum := prepareCapsule(t, client)
	last := readCounter(t, client)
	saved := filepath.Join(s.AgentConfig.Dir, "snapshots", id)

	for cycle := range 5 {
		p := pause(t, s, id)
		if p.GetStatus() != "paused" || p.GetSnapshotBytes() <= 0 {
			t.Fatalf("cycle %d: PauseCapsule answered %+v; want paused with its saved size", cycle, p)
		}
		if out, err := runsc(s, "list", "--format=json"); err != nil || strings.Contains(out, runtimeID) {
			t.Fatalf("cycle %d: a paused capsule's sandbox is still in runsc (%v): %s", cycle, err, out)
		}
		if _, err := os.Stat(filepath.Join(saved, "saved.json")); err != nil {
			t.Fatalf("cycle %d: no complete saved state: %v", cycle, err)
		}
		// A paused capsule's envd cannot be reached: the proxy says why.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := client.Health(ctx)
		cancel()
		if err == nil {
			t.Fatalf("cycle %d: envd of a paused capsule answered", cycle)
		}

		r := resume(t, s, id)
		if r.GetStatus() != "running" || r.GetAddress() != c.GetAddress() {
			t.Fatalf("cycle %d: ResumeCapsule answered %+v; want running at %s", cycle, r, c.GetAddress())
		}
		if got := sha256Of(t, client, "/root/data"); got != sum {
			t.Fatalf("cycle %d: /root/data changed across the pause: %s, want %s", cycle, got, sum)
		}
		n := readCounter(t, client)
		if n < last {
			t.Fatalf("cycle %d: the counter went back from %d to %d: processes restarted", cycle, last, n)
		}
		last = n
		if _, err := os.Stat(saved); !os.IsNotExist(err) {
			t.Fatalf("cycle %d: a resumed capsule's saved state is kept: %v", cycle, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := readCounter(t, client); n <= last {
		t.Fatalf("the counter stopped at %d after the last resume", n)
	}
}

// TestLifecycleRefusals checks the calls that a capsule's state does not
// allow: each is refused with failed_precondition and changes nothing.
func TestLifecycleRefusals(t *testing.T) {
	s := stacktest.Start(t)
	c := s.CreateCapsule(t)
	id := c.GetSpec().GetCapsuleId()
	svc := s.CapsuleService()
	ctx := context.Background()

	if _, err := svc.ResumeCapsule(ctx, connect.NewRequest(&hostagentv1.ResumeCapsuleRequest{CapsuleId: id})); connectCode(err) != connect.CodeFailedPrecondition {
		t.Errorf("resuming a running capsule: %v; want failed_precondition", err)
	}
	pause(t, s, id)
	if _, err := svc.PauseCapsule(ctx, connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: id})); connectCode(err) != connect.CodeFailedPrecondition {
		t.Errorf("pausing a paused capsule: %v; want failed_precondition", err)
	}
	if got, err := svc.GetCapsule(ctx, connect.NewRequest(&hostagentv1.GetCapsuleRequest{CapsuleId: id})); err != nil || got.Msg.GetCapsule().GetStatus() != "paused" {
		t.Fatalf("after the refusals GetCapsule = %v, %v; want paused", got, err)
	}
	for name, err := range map[string]error{
		"pause unknown": func() error {
			_, err := svc.PauseCapsule(ctx, connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: uuid.NewString()}))
			return err
		}(),
		"resume unknown": func() error {
			_, err := svc.ResumeCapsule(ctx, connect.NewRequest(&hostagentv1.ResumeCapsuleRequest{CapsuleId: uuid.NewString()}))
			return err
		}(),
		"pause bad id": func() error {
			_, err := svc.PauseCapsule(ctx, connect.NewRequest(&hostagentv1.PauseCapsuleRequest{CapsuleId: "../x"}))
			return err
		}(),
		"snapshot unknown": func() error {
			_, err := svc.SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{CapsuleId: uuid.NewString(), Template: "t1"}))
			return err
		}(),
	} {
		want := connect.CodeNotFound
		if strings.Contains(name, "bad") {
			want = connect.CodeInvalidArgument
		}
		if connectCode(err) != want {
			t.Errorf("%s: %v; want %v", name, err, want)
		}
	}
	for _, bad := range []string{"", "../images", "Minimal", ".hidden", strings.Repeat("a", 70)} {
		_, err := svc.SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{CapsuleId: id, Template: bad}))
		if connectCode(err) != connect.CodeInvalidArgument {
			t.Errorf("snapshot named %q: %v; want invalid_argument", bad, err)
		}
	}
	if _, err := svc.SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{CapsuleId: id, Template: "minimal"})); connectCode(err) != connect.CodeAlreadyExists {
		t.Errorf("snapshot named like a base template: %v; want already_exists", err)
	}
	if _, err := svc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Template: "minimal"})); connectCode(err) != connect.CodeFailedPrecondition {
		t.Errorf("deleting a base template: %v; want failed_precondition", err)
	}
	if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "images", "minimal", "rootfs")); err != nil {
		t.Errorf("the base template was touched: %v", err)
	}
	// Destroying a paused capsule removes its saved state too.
	if _, err := svc.DestroyCapsule(ctx, connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id})); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "snapshots", id)); !os.IsNotExist(err) {
		t.Errorf("a destroyed capsule's saved state is left: %v", err)
	}
	if left := leftovers(t, s, c.GetRuntimeId(), "", c.GetAddress()); len(left) > 0 {
		t.Errorf("destroying a paused capsule left %v", left)
	}
}

// TestSnapshotClones takes a snapshot of a running capsule and starts three
// capsules from it: each has the capsule's file and its running process,
// its own address, token and hostname, and its changes stay its own.
func TestSnapshotClones(t *testing.T) {
	s := stacktest.Start(t)
	src := s.CreateCapsule(t)
	srcID := src.GetSpec().GetCapsuleId()
	srcClient := s.Envd(t, srcID)
	sum := prepareCapsule(t, srcClient)
	name := "snap-" + uuid.NewString()[:8]
	svc := s.CapsuleService()
	ctx := context.Background()

	res, err := svc.SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{CapsuleId: srcID, Template: name, Resume: true}))
	if err != nil {
		t.Fatalf("SnapshotCapsule: %v", err)
	}
	if got := res.Msg.GetCapsule().GetStatus(); got != "running" {
		t.Fatalf("the source capsule is %s after a snapshot with resume; want running", got)
	}
	tmpl := res.Msg.GetTemplate()
	if tmpl.GetName() != name || tmpl.GetKind() != "snapshot" || tmpl.GetMemoryMb() != 256 || tmpl.GetSizeBytes() <= 0 {
		t.Fatalf("template = %+v", tmpl)
	}
	if _, err := svc.SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{CapsuleId: srcID, Template: name})); connectCode(err) != connect.CodeAlreadyExists {
		t.Errorf("a second snapshot with the same name: %v; want already_exists", err)
	}
	srcToken := s.EnvdToken(t, srcID)

	type clone struct {
		id, addr string
		client   *envdclient.Client
	}
	var clones []clone
	for range 3 {
		id := uuid.NewString()
		res, err := svc.CreateCapsule(ctx, connect.NewRequest(&hostagentv1.CreateCapsuleRequest{Spec: &hostagentv1.CapsuleSpec{
			CapsuleId: id, Template: name, Vcpus: 1, MemoryMb: 256, DiskMb: 256, Envs: map[string]string{"CLONE": id},
		}}))
		if err != nil {
			t.Fatalf("creating a capsule from the snapshot: %v", err)
		}
		t.Cleanup(func() {
			_, _ = svc.DestroyCapsule(context.Background(), connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: id}))
		})
		clones = append(clones, clone{id: id, addr: res.Msg.GetCapsule().GetAddress(), client: s.Envd(t, id)})
	}
	addrs := []string{src.GetAddress()}
	tokens := []string{srcToken}
	for i, cl := range clones {
		if got := sha256Of(t, cl.client, "/root/data"); got != sum {
			t.Errorf("clone %d: /root/data = %s, want %s", i, got, sum)
		}
		first := readCounter(t, cl.client)
		time.Sleep(150 * time.Millisecond)
		if next := readCounter(t, cl.client); next <= first {
			t.Errorf("clone %d: the counter loop does not run (%d then %d)", i, first, next)
		}
		r := stacktest.Run(t, cl.client, "hostname; echo $CLONE")
		if want := "capsule-" + cl.id[:8] + "\n" + cl.id + "\n"; r.Stdout != want {
			t.Errorf("clone %d: hostname and env = %q, want %q", i, r.Stdout, want)
		}
		addrs = append(addrs, cl.addr)
		tokens = append(tokens, s.EnvdToken(t, cl.id))
		// The source's token, which the saved envd held, no longer works.
		old := envdclient.New("http://"+net.JoinHostPort(cl.addr, "49983"), srcToken)
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := old.PreparePause(hctx)
		cancel()
		old.Close()
		if !isUnauthorized(err) {
			t.Errorf("clone %d accepts the source capsule's token: %v", i, err)
		}
	}
	slices.Sort(addrs)
	slices.Sort(tokens)
	if len(slices.Compact(addrs)) != 4 || len(slices.Compact(tokens)) != 4 {
		t.Errorf("clones share addresses or tokens: %v", addrs)
	}
	if r := stacktest.Run(t, clones[0].client, "echo changed > /root/data"); r.ExitCode != 0 {
		t.Fatal(r)
	}
	for i, cl := range append(clones[1:], clone{client: srcClient}) {
		if got := sha256Of(t, cl.client, "/root/data"); got != sum {
			t.Errorf("a change in clone 0 shows in capsule %d", i+1)
		}
	}

	// Deleting the template leaves the capsules made from it running.
	if _, err := svc.DeleteTemplate(ctx, connect.NewRequest(&hostagentv1.DeleteTemplateRequest{Template: name})); err != nil {
		t.Fatalf("DeleteTemplate: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "images", name)); !os.IsNotExist(err) {
		t.Errorf("the deleted template is still on disk: %v", err)
	}
	if got := sha256Of(t, clones[1].client, "/root/data"); got != sum {
		t.Errorf("after the template was deleted a clone's file = %s", got)
	}
	// A clone still pauses and resumes: it knows its base template itself.
	pause(t, s, clones[1].id)
	resume(t, s, clones[1].id)
	if got := sha256Of(t, clones[1].client, "/root/data"); got != sum {
		t.Errorf("after a pause and resume without its template a clone's file = %s", got)
	}
}

// TestPausedSurvivesRestart restarts the capsule manager (as an agent
// restart does) with one capsule paused and one frozen half-way through a
// pause whose saved state was never completed: the first stays paused and
// resumes intact, the second runs on.
func TestPausedSurvivesRestart(t *testing.T) {
	s := stacktest.Start(t)
	paused := s.CreateCapsule(t)
	pausedID := paused.GetSpec().GetCapsuleId()
	sum := prepareCapsule(t, s.Envd(t, pausedID))
	pause(t, s, pausedID)

	half := s.CreateCapsule(t)
	halfID := half.GetSpec().GetCapsuleId()
	halfClient := s.Envd(t, halfID)
	halfSum := prepareCapsule(t, halfClient)
	// What a pause leaves when the agent dies during the checkpoint: the
	// sandbox frozen, the record saying pausing, no complete saved state.
	if out, err := runsc(s, "pause", half.GetRuntimeId()); err != nil {
		t.Fatalf("runsc pause: %v %s", err, out)
	}
	recPath := filepath.Join(s.AgentConfig.Dir, "sandboxes", half.GetRuntimeId(), "capsule.json")
	b, err := os.ReadFile(recPath)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	rec["status"] = "pausing"
	b, _ = json.Marshal(rec)
	if err := os.WriteFile(recPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.AgentConfig.Dir, "snapshots", halfID, "image"), 0o700); err != nil {
		t.Fatal(err)
	}

	cfg := s.AgentConfig
	cfg.WarmPool = 0
	restarted, err := stacktest.OpenCapsules(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("reopening capsules: %v", err)
	}
	defer func() { _ = restarted.Close() }()
	ctx := context.Background()
	if info, err := restarted.Get(ctx, halfID); err != nil || info.Status != "running" {
		t.Fatalf("the half-paused capsule after restart: %+v, %v; want running", info, err)
	}
	direct := envdclient.New("http://"+net.JoinHostPort(half.GetAddress(), "49983"), s.EnvdToken(t, halfID))
	defer direct.Close()
	if got := sha256Of(t, direct, "/root/data"); got != halfSum {
		t.Errorf("the half-paused capsule's file changed")
	}
	if _, err := os.Stat(filepath.Join(s.AgentConfig.Dir, "snapshots", halfID)); !os.IsNotExist(err) {
		t.Errorf("the unfinished saved state was kept: %v", err)
	}

	info, err := restarted.Get(ctx, pausedID)
	if err != nil || info.Status != "paused" || info.SnapshotBytes <= 0 {
		t.Fatalf("the paused capsule after restart: %+v, %v; want paused", info, err)
	}
	if info, err = restarted.Resume(ctx, pausedID); err != nil || info.Status != "running" {
		t.Fatalf("resuming after restart: %+v, %v", info, err)
	}
	pc := envdclient.New("http://"+net.JoinHostPort(paused.GetAddress(), "49983"), s.EnvdToken(t, pausedID))
	defer pc.Close()
	if got := sha256Of(t, pc, "/root/data"); got != sum {
		t.Errorf("the paused capsule's file changed across the restart")
	}
	// The restarted manager owns the capsules now; destroy them through
	// it so that the original one's clean-up finds nothing.
	for _, id := range []string{pausedID, halfID} {
		if err := restarted.Destroy(ctx, id); err != nil {
			t.Error(err)
		}
	}
}

// TestListDuringResume lists the capsules, as every heartbeat does, while a
// capsule resumes on a host where `runsc list` is slow (a loaded host): the
// list's view of the sandboxes is older than the capsule's record, and the
// capsule must not be reported stopped for that. The control plane takes
// a stopped report as the truth when it settles a capsule (one whose
// resume's answer was lost, one marked missing) and then destroys it, so a
// false one loses a live capsule.
func TestListDuringResume(t *testing.T) {
	runscPath, _ := stacktest.Env(t)
	// The real runsc, whose list answers 500 ms after it looked.
	slow := filepath.Join(stacktest.ScratchDir(t), "runsc")
	script := "#!/bin/sh\nfor a; do if [ \"$a\" = list ]; then out=$(" + runscPath + " \"$@\"); rc=$?; sleep 0.5; printf '%s\\n' \"$out\"; exit $rc; fi; done\nexec " + runscPath + " \"$@\"\n"
	if err := os.WriteFile(slow, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("WRENN_TEST_RUNSC", slow)
	s := stacktest.Start(t, stacktest.Options{ColdStarts: true})
	c := s.CreateCapsule(t)
	id := c.GetSpec().GetCapsuleId()
	pause(t, s, id)
	listed := make(chan []agent.CapsuleInfo, 1)
	go func() {
		list, _ := s.Capsules.List(context.Background())
		listed <- list
	}()
	// The list has asked runsc (no sandbox yet) before the resume ends.
	time.Sleep(100 * time.Millisecond)
	resume(t, s, id)
	for _, info := range <-listed {
		if info.Spec.ID == id && info.Status != "running" && info.Status != "resuming" && info.Status != "paused" {
			t.Fatalf("a capsule listed while it resumed was reported %s", info.Status)
		}
	}
}

// TestFrozenRunningCapsuleThawed: a capsule recorded running whose sandbox
// is frozen, which is what a pause leaves when its checkpoint and then its
// thaw failed, is thawed the next time the agent looks at it, as an agent
// restart would, instead of being reported stopped: the control plane
// would record it in error, or stop and destroy it, though nothing of it
// was lost.
func TestFrozenRunningCapsuleThawed(t *testing.T) {
	s := stacktest.Start(t)
	c := s.CreateCapsule(t)
	id := c.GetSpec().GetCapsuleId()
	client := s.Envd(t, id)
	if out, err := runsc(s, "pause", c.GetRuntimeId()); err != nil {
		t.Fatalf("runsc pause: %v %s", err, out)
	}
	res, err := s.CapsuleService().GetCapsule(context.Background(), connect.NewRequest(&hostagentv1.GetCapsuleRequest{CapsuleId: id}))
	if err != nil || res.Msg.GetCapsule().GetStatus() != "running" {
		t.Fatalf("GetCapsule of a capsule left frozen = %v, %v; want running", res, err)
	}
	list, err := s.Capsules.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range list {
		if info.Spec.ID == id && info.Status != "running" {
			t.Fatalf("a capsule left frozen was listed %s", info.Status)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Health(ctx); err != nil {
		t.Fatalf("envd of the thawed capsule: %v", err)
	}
}
