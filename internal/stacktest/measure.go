package stacktest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn/internal/envd/envdclient"
	envdv1 "github.com/wrenn-dev/wrenn/proto/envd/v1"
)

// Measures of what a capsule takes of its host, for the tests that attack
// the host from inside a capsule (fork bombs, disk fills).

// HostTasks is the number of threads on the host, every process's
// included: the field after the load averages in /proc/loadavg.
func HostTasks(t testing.TB) int {
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

// CapsulePidsFile returns the path of pids.current of the cgroup runsc made
// for a capsule (cgroup v1 or v2).
func CapsulePidsFile(t testing.TB, runtimeID string) string {
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

// ReadInt reads a file holding one integer (a cgroup counter); -1 when it
// cannot.
func ReadInt(path string) int {
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

// TimedRun runs a shell line in a capsule and returns what it printed
// and how long it took, or an error if it did not finish within limit.
func TimedRun(client *envdclient.Client, shell string, limit time.Duration) (string, time.Duration, error) {
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

// OverlayBytes sums the host disk blocks of the files a capsule's sandbox
// holds open under its overlay directory: runsc's file-backed writable
// layer, which it unlinks once open, so only its descriptors find it.
func OverlayBytes(t testing.TB, agentDir, runtimeID string) int64 {
	t.Helper()
	dir := filepath.Join(agentDir, "sandboxes", runtimeID, "overlay") + "/"
	seen := map[uint64]bool{}
	var total int64
	for _, pid := range ProcessesNaming(t, runtimeID) {
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

// FileSum returns the hex SHA-256 of the file at path.
func FileSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
