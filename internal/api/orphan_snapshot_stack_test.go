package api_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// TestOrphanSnapshotRemovedStack leaves on the host what a snapshot whose
// recording failed leaves — a snapshot directory with no template row — next
// to one of a snapshot still under way and one that was recorded: the
// heartbeats have the host remove the first, and only the first.
func TestOrphanSnapshotRemovedStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{})
	cc := newCapsuleClient(t, st)
	ctx := context.Background()
	snapshot := func(name string) {
		t.Helper()
		_, err := st.CapsuleService().SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{
			CapsuleId: cc.id, Template: name, Resume: true,
		}))
		if err != nil {
			t.Fatalf("SnapshotCapsule(%s): %v", name, err)
		}
	}
	orphan, underWay := uuid.NewString(), uuid.NewString()
	snapshot(orphan)
	if err := st.Store.BeginSnapshot(ctx, underWay, st.HostID); err != nil {
		t.Fatal(err)
	}
	snapshot(underWay)
	teamCall(t, st, st.Team, "POST", "/v1/snapshots", map[string]any{"capsule_id": cc.id, "name": "kept"}).
		want(t, "snapshot", 201)
	recorded, err := st.Store.Template(ctx, st.Team.ID, "kept")
	if err != nil {
		t.Fatal(err)
	}

	dir := func(name string) string { return filepath.Join(st.AgentConfig.Dir, "images", name) }
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(dir(orphan)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a snapshot directory that no template owns is still on the host after 10 s of heartbeats")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A few more heartbeats, then the others must still be there.
	time.Sleep(1500 * time.Millisecond)
	for what, name := range map[string]string{"under way": underWay, "recorded": recorded.AgentName} {
		if _, err := os.Stat(dir(name)); err != nil {
			t.Errorf("the snapshot %s was removed from the host: %v", what, err)
		}
	}
	// Once its request ends without a row, the one under way is an orphan too.
	if err := st.Store.EndSnapshot(ctx, underWay); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(dir(underWay)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an abandoned snapshot's directory is still on the host after 10 s of heartbeats")
		}
		time.Sleep(100 * time.Millisecond)
	}
	teamCall(t, st, st.Team, "POST", "/v1/capsules", map[string]any{"template": "kept"}).want(t, "create from the kept snapshot", 201)
}
