package api_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/testhost"
)

// hostLeftovers lists what the stack's agent has on the host: namespace
// files (in its own directory and in /run/netns) and host veths named with
// its prefix.
func hostLeftovers(t *testing.T, st *stacktest.Stack) []string {
	t.Helper()
	prefix := st.AgentConfig.NetworkPrefix + "-"
	var left []string
	for _, dir := range []string{filepath.Join(st.AgentConfig.Dir, "netns"), "/run/netns"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				left = append(left, "netns "+filepath.Join(dir, e.Name()))
			}
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		if strings.HasPrefix(i.Name, prefix) {
			left = append(left, "veth "+i.Name)
		}
	}
	return left
}

func runtimeIDOf(t *testing.T, st *stacktest.Stack, id string) string {
	t.Helper()
	rec, ok := stacktest.FindRecord(t, st.AgentConfig.Dir, id)
	if !ok || rec.RuntimeID == "" {
		t.Fatalf("the agent has no record of capsule %s", id)
	}
	return rec.RuntimeID
}

// TestIPNetnsAddWhileCapsulesRunStack is issue 12's production scenario:
// someone on the host runs `ip netns add` (iproute2 then bind-mounts
// /run/netns onto itself) while capsules run. Destroying them, creating new
// ones and destroying those all succeed, and nothing is left.
func TestIPNetnsAddWhileCapsulesRunStack(t *testing.T) {
	t.Parallel()
	// No warm pool: every namespace and veth on the host is one of the
	// capsules below.
	st := startStack(t, stacktest.Options{ColdStarts: true})
	running := []*capsuleClient{newCapsuleClient(t, st), newCapsuleClient(t, st)}
	var rids []string
	for _, cc := range running {
		rids = append(rids, runtimeIDOf(t, st, cc.id))
	}

	testhost.IPNetnsAdd(t, st.AgentConfig.NetworkPrefix+"ipx")

	for i, cc := range running {
		if got := cc.sh("echo still here"); got != "still here\n" {
			t.Errorf("capsule %d after ip netns add: %q", i, got)
		}
		cc.call("DELETE", "", nil).want(t, "destroy after ip netns add", http.StatusNoContent)
		if left := leftoversOf(t, st, cc.id, []string{rids[i]}); len(left) > 0 {
			t.Errorf("capsule %d destroyed after ip netns add left %v", i, left)
		}
	}
	for i := range 2 {
		cc := newCapsuleClient(t, st)
		rid := runtimeIDOf(t, st, cc.id)
		if got := cc.sh("echo new"); got != "new\n" {
			t.Errorf("new capsule %d: %q", i, got)
		}
		cc.call("DELETE", "", nil).want(t, "destroy a new capsule", http.StatusNoContent)
		if left := leftoversOf(t, st, cc.id, []string{rid}); len(left) > 0 {
			t.Errorf("new capsule %d left %v", i, left)
		}
	}
	if left := hostLeftovers(t, st); len(left) > 0 {
		t.Errorf("left on the host after every capsule was destroyed: %v", left)
	}
}

// TestDestroyLeftoversRetriedStack makes a capsule's namespace file
// impossible to remove (the netns directory immutable) and destroys it: the
// sandbox is gone, so the user's DELETE succeeds and the capsule is
// stopped, while the agent keeps its record and reports it. Once the file
// can be removed, the heartbeat's clean-up of finished capsules removes
// the rest.
func TestDestroyLeftoversRetriedStack(t *testing.T) {
	t.Parallel()
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		t.Fatal("chattr (e2fsprogs) is not installed")
	}
	st := startStack(t, stacktest.Options{ColdStarts: true})
	cc := newCapsuleClient(t, st)
	rid := runtimeIDOf(t, st, cc.id)
	netnsDir := filepath.Join(st.AgentConfig.Dir, "netns")
	nsFile := filepath.Join(netnsDir, st.AgentConfig.NetworkPrefix+"-"+rid)
	if _, err := os.Stat(nsFile); err != nil {
		t.Fatalf("the capsule's namespace is not where this test looks: %v", err)
	}
	setImmutable := func(on bool) error {
		flag := "-i"
		if on {
			flag = "+i"
		}
		if out, err := exec.Command(chattr, flag, netnsDir).CombinedOutput(); err != nil {
			return fmt.Errorf("chattr %s %s: %w: %s", flag, netnsDir, err, out)
		}
		return nil
	}
	if err := setImmutable(true); err != nil {
		t.Skipf("chattr +i on %s does not work on this file system: %v", netnsDir, err)
	}
	t.Cleanup(func() { _ = setImmutable(false) })

	cc.call("DELETE", "", nil).want(t, "destroy with an unremovable namespace file", http.StatusNoContent)
	if got := dbStatus(t, st, cc.id).Status; got != "stopped" {
		t.Fatalf("after DELETE the capsule is %s, want stopped", got)
	}
	// The sandbox's last processes (its gofer, say) may still be exiting
	// when the answer comes: they must be gone within a few seconds, not
	// live on.
	procs := stacktest.ProcessesNaming(t, rid)
	for deadline := time.Now().Add(5 * time.Second); len(procs) > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		procs = stacktest.ProcessesNaming(t, rid)
	}
	if len(procs) > 0 {
		t.Errorf("the sandbox still runs 5 s after its destroy: %v", procs)
	}
	if _, ok := stacktest.FindRecord(t, st.AgentConfig.Dir, cc.id); !ok {
		t.Fatal("the agent dropped its record of a capsule it could not fully remove")
	}
	if _, err := os.Stat(nsFile); err != nil {
		t.Fatalf("the namespace file is gone although its directory is immutable: %v", err)
	}
	// Heartbeats keep retrying meanwhile, and keep failing.
	time.Sleep(3 * st.AgentConfig.HeartbeatInterval)
	if _, ok := stacktest.FindRecord(t, st.AgentConfig.Dir, cc.id); !ok {
		t.Fatal("the record went while the namespace file could not be removed")
	}

	if err := setImmutable(false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, recorded := stacktest.FindRecord(t, st.AgentConfig.Dir, cc.id)
		left := leftoversOf(t, st, cc.id, []string{rid})
		if !recorded && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeats did not finish the destroy: record %v, left %v", recorded, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := dbStatus(t, st, cc.id).Status; got != "stopped" {
		t.Errorf("after the clean-up the capsule is %s, want stopped", got)
	}
	if left := hostLeftovers(t, st); len(left) > 0 {
		t.Errorf("left on the host after the clean-up: %v", left)
	}
}
