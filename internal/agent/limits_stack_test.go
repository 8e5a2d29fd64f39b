package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// hostTasks is the number of threads on the host, every process's
// included: the field after the load averages in /proc/loadavg.
func hostTasks(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	_, total, ok := strings.Cut(f[3], "/")
	n, err := strconv.Atoi(total)
	if !ok || err != nil {
		t.Fatalf("reading /proc/loadavg %q: %v", b, err)
	}
	return n
}

// capsulePids returns the path of pids.current of the cgroup runsc made
// for a capsule (cgroup v1 or v2).
func capsulePids(t *testing.T, runtimeID string) string {
	t.Helper()
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/pids/wrenn", runtimeID, "pids.current"),
		filepath.Join("/sys/fs/cgroup/wrenn", runtimeID, "pids.current"),
	} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no pids cgroup for capsule %s", runtimeID)
	return ""
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// timedRun runs a shell line in a capsule and returns what it printed
// and how long it took, or an error if it did not finish within limit.
func timedRun(client *envdclient.Client, shell string, limit time.Duration) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	stream, err := client.Process.Start(ctx, connect.NewRequest(&envdv1.StartRequest{
		Process: &envdv1.ProcessConfig{Shell: shell},
	}))
	if err != nil {
		return "", time.Since(start), err
	}
	defer func() { _ = stream.Close() }()
	var out bytes.Buffer
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		out.Write(ev.GetData().GetStdout())
		if ev.GetEnd() != nil {
			return out.String(), time.Since(start), nil
		}
	}
	return out.String(), time.Since(start), fmt.Errorf("no exit: %w", stream.Err())
}

// TestForkBombBounded runs a fork bomb in one capsule for a few seconds
// while another capsule on the host is asked to run a command every
// 100 ms: the bomb's host tasks must stay within the capsule's pids limit
// (the sandbox's stub processes are host processes), the host's thread
// count must not grow by much more, and the other capsule must answer
// every time within a second.
func TestForkBombBounded(t *testing.T) {
	// A small limit, so that the bomb passes it early even without one.
	const limit = 256
	s := stacktest.Start(t, stacktest.Options{ColdStarts: true, CapsulePids: limit})
	bomb := s.CreateCapsule(t)
	other := s.CreateCapsule(t)
	bombID := bomb.GetSpec().GetCapsuleId()
	otherClient := s.Envd(t, other.GetSpec().GetCapsuleId())
	if _, _, err := timedRun(otherClient, "true", 10*time.Second); err != nil {
		t.Fatalf("the other capsule before the bomb: %v", err)
	}
	pidsFile := capsulePids(t, bomb.GetRuntimeId())
	idle := readInt(pidsFile)
	base := hostTasks(t)

	// The bomb: every function call forks two more, in the background.
	r := stacktest.Run(t, s.Envd(t, bombID), `(f() { f | f & }; f) </dev/null >/dev/null 2>&1 &`)
	if r.ExitCode != 0 {
		t.Fatalf("starting the fork bomb: %+v", r)
	}

	const run = 3 * time.Second
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var (
		mu       sync.Mutex
		worst    time.Duration
		answers  int
		failures []string
	)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			out, took, err := timedRun(otherClient, "echo alive", 5*time.Second)
			mu.Lock()
			answers++
			worst = max(worst, took)
			if err != nil || strings.TrimSpace(out) != "alive" || took > time.Second {
				failures = append(failures, fmt.Sprintf("after %d answers: %q in %v (%v)", answers, out, took.Round(time.Millisecond), err))
			}
			mu.Unlock()
		}
	})
	peakCapsule, peakHost := idle, base
	deadline := time.Now().Add(run)
	for time.Now().Before(deadline) {
		peakCapsule = max(peakCapsule, readInt(pidsFile))
		peakHost = max(peakHost, hostTasks(t))
		// Without a limit the bomb would run the host out of pids for
		// everybody on this machine: stop it well before.
		if peakCapsule > 4*limit || peakHost-base > 4*limit {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// Not asserted: the bombed capsule may or may not still answer.
	_, took, err := timedRun(s.Envd(t, bombID), "echo alive", 3*time.Second)
	t.Logf("the bombed capsule answered in %v: err %v", took.Round(time.Millisecond), err)
	start := time.Now()
	if _, err := s.CapsuleService().DestroyCapsule(context.Background(), connect.NewRequest(&hostagentv1.DestroyCapsuleRequest{CapsuleId: bombID})); err != nil {
		t.Errorf("destroying the bombed capsule: %v", err)
	}
	t.Logf("fork bomb: capsule's host tasks idle %d, peak %d (limit %d); host threads before %d, peak %d (+%d); other capsule answered %d times, slowest %v; destroy took %v",
		idle, peakCapsule, limit, base, peakHost, peakHost-base, answers, worst.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if peakCapsule > limit {
		t.Errorf("the bombed capsule had %d host tasks, more than its limit %d", peakCapsule, limit)
	}
	// Other work on the machine moves the host's count too; the bomb's
	// share is what the capsule's cgroup holds.
	if peakHost-base > limit+512 {
		t.Errorf("the host's threads grew by %d during the bomb, want at most the capsule's limit %d (+512 for the rest of the machine)", peakHost-base, limit)
	}
	if answers < 10 || len(failures) > 0 {
		t.Errorf("the other capsule answered %d times during the bomb; slow or failed: %v", answers, failures)
	}
}

// overlayBytes sums the host disk blocks of the files a capsule's sandbox
// holds open under its overlay directory: runsc's file-backed writable
// layer, which it unlinks once open, so only its descriptors find it.
func overlayBytes(t *testing.T, agentDir, runtimeID string) int64 {
	t.Helper()
	dir := filepath.Join(agentDir, "sandboxes", runtimeID, "overlay") + "/"
	seen := map[uint64]bool{}
	var total int64
	for _, pid := range stacktest.ProcessesNaming(t, runtimeID) {
		fds, _ := os.ReadDir(filepath.Join("/proc", pid, "fd"))
		for _, fd := range fds {
			p := filepath.Join("/proc", pid, "fd", fd.Name())
			if target, err := os.Readlink(p); err != nil || !strings.HasPrefix(target, dir) {
				continue
			}
			var st syscall.Stat_t
			if syscall.Stat(p, &st) != nil || seen[st.Ino] {
				continue
			}
			seen[st.Ino] = true
			total += st.Blocks * 512
		}
	}
	return total
}

// TestDiskFillBounded writes past a capsule's disk_mb: the write must fail
// with ENOSPC inside the capsule, the host must hold no more than disk_mb
// of its writable layer, and the capsule must go on working.
func TestDiskFillBounded(t *testing.T) {
	s := stacktest.Start(t, stacktest.Options{ColdStarts: true})
	c := s.CreateCapsule(t) // disk_mb 256
	const diskMB = 256
	if got := c.GetSpec().GetDiskMb(); got != diskMB {
		t.Fatalf("capsule has disk_mb %d, want %d", got, diskMB)
	}
	client := s.Envd(t, c.GetSpec().GetCapsuleId())
	// By the way: processes envd starts have the agent's open-files limit.
	if r := stacktest.Run(t, client, "ulimit -n; ulimit -Hn"); strings.Join(strings.Fields(r.Stdout), " ") != "65536 65536" {
		t.Errorf("open files limit of a process in the capsule (soft, hard) = %q, want the default 65536 65536", r.Stdout)
	}
	start := time.Now()
	r := stacktest.Run(t, client, `dd if=/dev/urandom of=/root/fill bs=1M count=400 2>&1; echo "rc=$?"; ls -l /root/fill`)
	used := overlayBytes(t, s.AgentConfig.Dir, c.GetRuntimeId())
	t.Logf("dd of 400 MiB in a %d MiB capsule took %v: %q; writable layer on the host: %d MiB",
		diskMB, time.Since(start).Round(time.Millisecond), r.Stdout, used>>20)
	if !strings.Contains(r.Stdout, "No space left on device") || strings.Contains(r.Stdout, "rc=0") {
		t.Errorf("writing 400 MiB into a %d MiB capsule did not fail with ENOSPC: %q", diskMB, r.Stdout)
	}
	if used == 0 {
		t.Fatal("found no writable layer of the capsule on the host")
	}
	if used > (diskMB+16)<<20 {
		t.Errorf("the capsule's writable layer takes %d MiB on the host, more than disk_mb %d", used>>20, diskMB)
	}
	// Its saved state holds the full layer and memory, no more: it is
	// bounded by disk_mb and memory_mb.
	id := c.GetSpec().GetCapsuleId()
	pause(t, s, id)
	saved := treeBytes(t, filepath.Join(s.AgentConfig.Dir, "snapshots", id))
	t.Logf("saved state of the full capsule: %d MiB (disk_mb %d, memory_mb %d)", saved>>20, diskMB, c.GetSpec().GetMemoryMb())
	if limit := int64(diskMB+c.GetSpec().GetMemoryMb()+16) << 20; saved > limit {
		t.Errorf("the saved state takes %d MiB, more than disk_mb + memory_mb", saved>>20)
	}
	resume(t, s, id)
	// Full, the capsule still runs; freeing space makes writes work again.
	if r := stacktest.Run(t, client, `rm /root/fill && echo ok > /root/after && cat /root/after`); strings.TrimSpace(r.Stdout) != "ok" {
		t.Errorf("the capsule after its disk was full: %+v", r)
	}
}

// treeBytes sums the disk blocks of the regular files under dir.
func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			return err
		}
		total += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}
