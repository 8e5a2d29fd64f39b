package agent

import (
	"testing"
	"time"
)

// TestClaimWaitsOutTheHeartbeatCheck: an operation on a capsule that the
// heartbeat is checking waits for the check, while one that meets another
// operation fails at once.
func TestClaimWaitsOutTheHeartbeatCheck(t *testing.T) {
	c := &Capsules{busy: map[string]bool{}, checking: map[string]bool{}}
	if !c.claimCheck("a") {
		t.Fatal("claimCheck of a free capsule failed")
	}
	if c.claimCheck("a") {
		t.Fatal("two checks of one capsule at once")
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		c.release("a")
	}()
	start := time.Now()
	if !c.claim("a") {
		t.Fatal("an operation failed on a capsule the heartbeat was checking")
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("the operation claimed after %v, before the check ended", waited)
	}
	start = time.Now()
	if c.claim("a") || c.claimCheck("a") {
		t.Fatal("a capsule under an operation was claimed again")
	}
	if waited := time.Since(start); waited > time.Second {
		t.Fatalf("a claim against an operation waited %v instead of failing at once", waited)
	}
	c.release("a")
	if !c.claim("a") {
		t.Fatal("a released capsule could not be claimed")
	}
}
