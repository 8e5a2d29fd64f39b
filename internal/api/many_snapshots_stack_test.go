package api_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/wrenn-dev/wrenn/internal/stacktest"
	"github.com/wrenn-dev/wrenn/internal/store"
	hostagentv1 "github.com/wrenn-dev/wrenn/proto/hostagent/v1"
)

// linkTree recreates directory src at dst with hard links, as snapshots of
// a paused capsule share its saved state.
func linkTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		return os.Link(p, filepath.Join(dst, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestManySnapshotsKeepHostOnlineStack puts 10,001 snapshot directories on
// a host — what 10,001 snapshots of one paused capsule cost: hard links —
// which once made its heartbeat list more templates than the control plane
// accepts, so that the host went unreachable and every capsule on it
// missing. Heartbeats now report them a page at a time: the host stays
// online, its capsules keep working, and the pages reach the last
// directory, which (no template owning it) is removed.
func TestManySnapshotsKeepHostOnlineStack(t *testing.T) {
	t.Parallel()
	st := startStack(t, stacktest.Options{HostTimeout: 3 * time.Second})
	cc := newCapsuleClient(t, st)
	ctx := context.Background()
	// The seed is protected as a snapshot under way; the clones are not.
	seed := uuid.NewString()
	if err := st.Store.BeginSnapshot(ctx, seed, st.HostID); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CapsuleService().SnapshotCapsule(ctx, connect.NewRequest(&hostagentv1.SnapshotCapsuleRequest{
		CapsuleId: cc.id, Template: seed, Resume: true,
	})); err != nil {
		t.Fatalf("SnapshotCapsule: %v", err)
	}
	images := filepath.Join(st.AgentConfig.Dir, "images")
	// Every clone but the one named last is owned (as a snapshot under
	// way, which protects it as a template row does): the heartbeats must
	// carry 10,000 names the host keeps, and reach the last to remove it.
	const clones = 10001
	names := make([]string, clones)
	for i := range names {
		names[i] = uuid.NewString()
	}
	slices.Sort(names)
	last := names[len(names)-1]
	for _, name := range names[:len(names)-1] {
		if err := st.Store.BeginSnapshot(ctx, name, st.HostID); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		linkTree(t, filepath.Join(images, seed), filepath.Join(images, name))
	}

	// Over 40 heartbeats (20 s) at most, with a host timeout of 3 s: the
	// host stays online, the capsule answers, and the last page comes.
	start := time.Now()
	for {
		h, err := st.Store.Host(ctx, st.HostID)
		if err != nil {
			t.Fatal(err)
		}
		if h.Status != store.HostOnline {
			t.Fatalf("host is %s %v after the snapshots were added; want online", h.Status, time.Since(start).Round(time.Millisecond))
		}
		if _, err := os.Stat(filepath.Join(images, last)); os.IsNotExist(err) {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the snapshot directory named last of %d is still on the host after 20 s of heartbeats", clones)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if out := cc.sh("echo alive"); out != "alive\n" {
		t.Errorf("exec in the host's capsule: %q", out)
	}
	left, _ := os.ReadDir(images)
	t.Logf("with %d snapshot directories, the host stayed online and the last page came in %v; %d entries in images/",
		clones, time.Since(start).Round(time.Millisecond), len(left))
	if len(left) < clones {
		t.Errorf("%d entries left in images/, want the %d owned snapshots kept", len(left), clones-1)
	}
}
