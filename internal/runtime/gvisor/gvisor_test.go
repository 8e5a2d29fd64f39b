package gvisor_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/runtime"
	"github.com/wrenn-dev/wrenn/internal/runtime/gvisor"
	"github.com/wrenn-dev/wrenn/internal/runtime/runtimetest"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

func TestConformance(t *testing.T) {
	runsc, images := stacktest.Env(t)
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: filepath.Join(stacktest.ScratchDir(t), "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	runtimetest.Run(t, d, func(t *testing.T, id string) runtime.Spec {
		dir := filepath.Join(stacktest.ScratchDir(t), id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return runtime.Spec{
			ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "conformance",
			VCPUs: 1, MemoryMB: 256, DiskMB: 256,
		}
	})
}

// TestCreateCancelledLeavesNothing cancels Creates at points through
// `runsc run --detach`: whatever runsc had started by then must be gone
// once Create returns, as the agent does when a caller gives up or the
// warm pool closes.
func TestCreateCancelledLeavesNothing(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: filepath.Join(scratch, "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []time.Duration{10, 20, 30, 40, 50, 60, 70, 80} {
		id := uuid.NewString()
		dir := filepath.Join(scratch, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), after*time.Millisecond)
		_, err := d.Create(ctx, runtime.Spec{
			ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "cancelled",
			VCPUs: 1, MemoryMB: 256, DiskMB: 256,
		})
		cancel()
		if err == nil {
			if err := d.Destroy(context.Background(), id); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if procs := stacktest.ProcessesNaming(t, id); len(procs) > 0 {
			t.Errorf("Create cancelled after %d ms failed (%v) but left runsc processes %v", after, err, procs)
			for _, p := range procs {
				if pid, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}

// TestLeftoverLockFile leaves what a `runsc list` running during a Destroy
// leaves — the container's .lock file, re-created after runsc deleted it —
// and starts a capsule with the same id again, as a resume does: the lock
// file must not make the id look taken.
func TestLeftoverLockFile(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	state := filepath.Join(scratch, "runsc")
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	dir := filepath.Join(scratch, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "lock", VCPUs: 1, MemoryMB: 256, DiskMB: 256}
	ctx := context.Background()
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, id+"_sandbox:"+id+".lock"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Info(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("Info with only a lock file left = %v, want ErrNotFound", err)
	}
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatalf("Create again with a lock file left: %v", err)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// TestDestroyDuringStart destroys a capsule while `runsc run` is still
// starting it, as an agent restarted after a crash does with a start the
// dead agent left under way: once both calls return nothing of the capsule
// may run.
func TestDestroyDuringStart(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: filepath.Join(scratch, "runsc")})
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []time.Duration{0, 10, 30} {
		id := uuid.NewString()
		dir := filepath.Join(scratch, id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		created := make(chan error, 1)
		go func() {
			_, err := d.Create(context.Background(), runtime.Spec{
				ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "racing",
				VCPUs: 1, MemoryMB: 256, DiskMB: 256,
			})
			created <- err
		}()
		// The start must have begun: a Destroy before runsc is even
		// running is not a start under way.
		deadline := time.Now().Add(10 * time.Second)
		for len(stacktest.ProcessesNaming(t, id)) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("runsc run did not start")
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(after * time.Millisecond)
		if err := d.Destroy(context.Background(), id); err != nil {
			t.Fatalf("Destroy %d ms after runsc run began: %v", after, err)
		}
		// The start may have finished before the Destroy or been overtaken
		// by it: either way nothing may be left.
		if err := <-created; err != nil {
			t.Logf("Create %d ms before the Destroy: %v", after, err)
		}
		if procs := stacktest.ProcessesNaming(t, id); len(procs) > 0 {
			t.Errorf("destroyed %d ms after runsc run began, the capsule still has processes %v", after, procs)
			for _, p := range procs {
				if pid, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}

// TestDestroyKillsStrays leaves what a runsc killed half-way through a start
// leaves — a sandbox process of the capsule and no runsc state — and
// destroys the capsule: the process must be gone.
func TestDestroyKillsStrays(t *testing.T) {
	runsc, _ := stacktest.Env(t)
	state := filepath.Join(stacktest.ScratchDir(t), "runsc")
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	// A shell standing in for runsc-sandbox: same name, same --root, the
	// capsule id last, as runsc's sandbox processes have.
	stray := exec.Command("bash", "-c", `exec -a runsc-sandbox bash -c "sleep 600; true" x --root=`+state+` boot `+id)
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = stray.Wait(); close(exited) }()
	t.Cleanup(func() { _ = stray.Process.Kill() })
	// Until bash has exec'd, the process is not yet named runsc-sandbox.
	cmdline := filepath.Join("/proc", strconv.Itoa(stray.Process.Pid), "cmdline")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(cmdline); err == nil && strings.HasPrefix(string(b), "runsc-sandbox\x00") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stand-in sandbox process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := d.Destroy(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("Destroy left a sandbox process of the capsule running")
	}
}

// TestConsoleFloodStaysBounded has a capsule write 64 MiB to its own
// stdout (/proc/1/fd/1, envd's console) while the driver keeps 256 KiB: the
// host files of the console must stay within the bound, the write must
// finish (the drainer keeps the capsule from blocking), and the end of what
// it wrote must be kept.
func TestConsoleFloodStaysBounded(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	state := filepath.Join(scratch, "runsc")
	const bound = 256 << 10
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: state, ConsoleBytes: bound})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	dir := filepath.Join(scratch, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := d.Create(ctx, runtime.Spec{ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "flood", VCPUs: 1, MemoryMB: 256, DiskMB: 256}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), id) })

	ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ectx, runsc, "--root", state, "exec", id, "/bin/sh", "-c",
		"head -c 67108864 /dev/zero > /proc/1/fd/1 && echo flood-end > /proc/1/fd/1").CombinedOutput()
	if err != nil {
		t.Fatalf("flooding the console: %v: %s", err, out)
	}
	t.Logf("capsule wrote 64 MiB to its console in %v", time.Since(start).Round(time.Millisecond))

	var total int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		total = 0
		var tail []byte
		for _, name := range []string{"console.log", "console.log.1"} {
			if st, err := os.Stat(filepath.Join(dir, name)); err == nil {
				total += st.Size()
			}
		}
		tail, _ = os.ReadFile(filepath.Join(dir, "console.log"))
		if strings.Contains(string(tail), "flood-end") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the end of the flood never reached console.log (%d bytes kept)", total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("console files on the host after 64 MiB written: %d bytes (bound %d)", total, bound)
	if total > bound {
		t.Errorf("console files on the host hold %d bytes, want at most %d", total, bound)
	}
	// The capsule still runs and its console still drains.
	if out, err := exec.CommandContext(ectx, runsc, "--root", state, "exec", id, "/bin/sh", "-c", "echo still-here > /proc/1/fd/1").CombinedOutput(); err != nil {
		t.Fatalf("writing to the console after the flood: %v: %s", err, out)
	}
}

// floodConsole has capsule id write n MiB and then marker to its console.
func floodConsole(t *testing.T, runsc, state, id string, n int, marker string) {
	t.Helper()
	// An undrained console blocks the writer: give up after a while.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, runsc, "--root", state, "exec", id, "/bin/sh", "-c",
		fmt.Sprintf("head -c %d /dev/zero > /proc/1/fd/1 && echo %s > /proc/1/fd/1", n<<20, marker))
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flooding the console of %s: %v: %s", id, err, out)
	}
}

// consoleKept waits until marker is in dir's console.log and returns the
// bytes the console files hold on the host.
func consoleKept(t *testing.T, dir, marker string) int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var total int64
		for _, name := range []string{"console.log", "console.log.1"} {
			if st, err := os.Stat(filepath.Join(dir, name)); err == nil {
				total += st.Size()
			}
		}
		b, _ := os.ReadFile(filepath.Join(dir, "console.log"))
		if strings.Contains(string(b), marker) {
			return total
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached console.log (%d bytes kept)", marker, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConsoleBoundAcrossRestoreAndRestart floods a capsule's console after
// a checkpoint and restore (a pause and resume) and after its driver is
// replaced by a new one that found it through List (an agent restart): the
// console must be drained again each time, within the bound.
func TestConsoleBoundAcrossRestoreAndRestart(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	state := filepath.Join(scratch, "runsc")
	const bound = 256 << 10
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: state, ConsoleBytes: bound})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	dir := filepath.Join(scratch, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	spec := runtime.Spec{ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "console", VCPUs: 1, MemoryMB: 256, DiskMB: 256}
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), id) })

	// Pause and resume: checkpoint, destroy, restore in the same dir.
	image := filepath.Join(scratch, "image-"+id)
	if err := os.MkdirAll(image, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.Checkpoint(ctx, id, image); err != nil {
		t.Fatal(err)
	}
	if err := d.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Restore(ctx, spec, image); err != nil {
		t.Fatal(err)
	}
	floodConsole(t, runsc, state, id, 8, "after-restore")
	if kept := consoleKept(t, dir, "after-restore"); kept > bound {
		t.Errorf("after a restore the console files hold %d bytes, want at most %d", kept, bound)
	}

	// An agent restart: the old driver's drainers are gone with it; a new
	// driver finds the capsule through List and drains it again.
	d.StopDrainers()
	d2, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: state, ConsoleBytes: bound})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d2.Destroy(context.Background(), id) })
	if infos, err := d2.List(ctx); err != nil || len(infos) != 1 {
		t.Fatalf("List after the restart = %v, %v; want the capsule", infos, err)
	}
	floodConsole(t, runsc, state, id, 8, "after-restart")
	if kept := consoleKept(t, dir, "after-restart"); kept > bound {
		t.Errorf("after a restart the console files hold %d bytes, want at most %d", kept, bound)
	}
}

// TestLimitsApplied starts a capsule with a pids and an open-files limit
// of its own: the host cgroup runsc made for it must carry the pids limit,
// and a shell inside must see the open-files limit.
func TestLimitsApplied(t *testing.T) {
	runsc, images := stacktest.Env(t)
	scratch := stacktest.ScratchDir(t)
	state := filepath.Join(scratch, "runsc")
	for _, bad := range []gvisor.Config{{PidsLimit: 10}, {PidsLimit: -1}, {NoFile: 10}, {NoFile: 1 << 21}, {ConsoleBytes: -1}} {
		bad.Runsc, bad.StateDir = runsc, state
		if _, err := gvisor.New(bad); err == nil {
			t.Errorf("New accepted %+v", bad)
		}
	}
	d, err := gvisor.New(gvisor.Config{Runsc: runsc, StateDir: state, PidsLimit: 300, NoFile: 1000})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	dir := filepath.Join(scratch, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := d.Create(ctx, runtime.Spec{ID: id, Dir: dir, Image: filepath.Join(images, "minimal"), Hostname: "limits", VCPUs: 1, MemoryMB: 256, DiskMB: 256}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), id) })
	var pidsMax []byte
	for _, p := range []string{"/sys/fs/cgroup/pids/wrenn/" + id + "/pids.max", "/sys/fs/cgroup/wrenn/" + id + "/pids.max"} {
		if b, err := os.ReadFile(p); err == nil {
			pidsMax = b
		}
	}
	if got := strings.TrimSpace(string(pidsMax)); got != "300" {
		t.Errorf("pids.max of the capsule's cgroup = %q, want 300", got)
	}
	out, err := exec.Command(runsc, "--root", state, "exec", id, "/bin/sh", "-c", "ulimit -n; ulimit -Hn").CombinedOutput()
	if err != nil {
		t.Fatalf("runsc exec: %v: %s", err, out)
	}
	// runsc exec starts the shell with the bundle's rlimits, as envd's
	// children inherit them from envd.
	if got := strings.Fields(string(out)); len(got) != 2 || got[0] != "1000" || got[1] != "1000" {
		t.Errorf("open files limit in the capsule (soft, hard) = %q, want 1000 1000", out)
	}
}
