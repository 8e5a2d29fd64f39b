// Package testhost holds test helpers that change the host itself and
// undo it. It imports nothing of Wrenn's, so that every package's tests
// (network's own included) can use it.
package testhost

import (
	"os/exec"
	"testing"
)

// IPNetnsAdd runs `ip netns add name`, as an operator or a CNI plugin
// would, and removes the namespace when the test ends. The first `ip netns
// add` on a host also bind-mounts /run/netns onto itself, which `ip netns
// del` leaves; scripts/test.sh undoes that after the whole run, when no
// test of any package can still be using it.
func IPNetnsAdd(t testing.TB, name string) {
	t.Helper()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal("iproute2's ip is not installed (scripts/test.sh installs it)")
	}
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
}
