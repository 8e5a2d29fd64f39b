package e2e_test

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/scheduler"
	"github.com/wrenn-dev/wrenn/internal/stacktest"
)

// TestTemplateReachesHostThatLacksIt: host A has the base template and no
// room left; host B has room but not the template. Creating a base capsule
// copies the template from A to B, through the control plane, and places
// the capsule on B, where it runs as on A: set-uid sudo, python. The copy
// is exact and leaves nothing half-made; the next capsule goes straight to B.
func TestTemplateReachesHostThatLacksIt(t *testing.T) {
	u := startUserStack(t, stackOptions{templates: []string{"minimal", "base"}})
	type capsuleView struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		HostID string `json:"host_id"`
	}
	// Host A is made full by the memory its capsules are given (the
	// scheduler's own accounting; gVisor takes memory as it is used): a
	// filler gets 60% of what A gives capsules, a base capsule asks 50%.
	var hostA struct {
		MemoryMB int64 `json:"memory_mb"`
	}
	u.api.must(http.StatusOK, "GET", "/v1/hosts/"+u.hostID, nil, &hostA)
	usable := scheduler.UsableMemoryMB(hostA.MemoryMB)
	var filler capsuleView
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", map[string]any{"template": "minimal", "memory_mb": usable * 6 / 10}, &filler)
	if filler.HostID != u.hostID {
		t.Fatalf("the first capsule went to %s, want host A %s", filler.HostID, u.hostID)
	}
	hostB, dirB, _, _ := u.startAgent(t, stackOptions{})

	began := time.Now()
	var c capsuleView
	big := map[string]any{"template": "base", "memory_mb": usable * 5 / 10}
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", big, &c)
	copied := time.Since(began)
	if c.Status != "running" || c.HostID != hostB {
		t.Fatalf("base capsule = %+v, want it running on host B %s", c, hostB)
	}
	run := func(id, cmd string) string {
		t.Helper()
		var out struct {
			Stdout   string `json:"stdout"`
			Stderr   string `json:"stderr"`
			ExitCode int    `json:"exit_code"`
		}
		u.api.must(http.StatusOK, "POST", "/v1/capsules/"+id+"/exec", map[string]any{"cmd": cmd}, &out)
		if out.ExitCode != 0 {
			t.Fatalf("%q exited %d: %s", cmd, out.ExitCode, out.Stderr)
		}
		return strings.TrimSpace(out.Stdout)
	}
	if got := run(c.ID, `python3 -c 'print(6*7)'`); got != "42" {
		t.Errorf("python3 on host B printed %q", got)
	}
	if got := run(c.ID, "id -un; sudo -n id -u; stat -c %a /usr/bin/sudo"); got != "user\n0\n4755" {
		t.Errorf("user, sudo and its mode on host B: %q, want user, 0, 4755", got)
	}
	var h struct {
		Templates []string `json:"templates"`
	}
	u.api.must(http.StatusOK, "GET", "/v1/hosts/"+hostB, nil, &h)
	if !slices.Contains(h.Templates, "base") {
		t.Errorf("host B's templates are %v, want base among them", h.Templates)
	}

	// On B's disk: a directory of its own, the same files as A's.
	fi, err := os.Lstat(filepath.Join(dirB, "images", "base"))
	if err != nil || !fi.IsDir() {
		t.Fatalf("host B's images/base: %v %v, want a directory", fi, err)
	}
	for _, p := range []string{"template.json", "rootfs/usr/bin/sudo", "rootfs/usr/bin/envd", "rootfs/etc/passwd"} {
		if a, b := stacktest.FileSum(t, filepath.Join(u.agentDir, "images", "base", p)), stacktest.FileSum(t, filepath.Join(dirB, "images", "base", p)); a != b {
			t.Errorf("%s differs between host A and host B", p)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dirB, "images"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("host B's images directory keeps %s", e.Name())
		}
	}

	// The next one needs no copy.
	began = time.Now()
	var c2 capsuleView
	u.api.must(http.StatusCreated, "POST", "/v1/capsules", big, &c2)
	t.Logf("base capsule on a host without the template: %v (copy included); the next one: %v", copied.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if c2.HostID != hostB {
		t.Errorf("second base capsule went to %s, want host B", c2.HostID)
	}
	for _, id := range []string{c.ID, c2.ID, filler.ID} {
		u.api.must(http.StatusNoContent, "DELETE", "/v1/capsules/"+id, nil, nil)
	}
}
