package network

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/testhost"
)

// mountsUnder returns the mount points at or below dir in this process's
// mount namespace, with their file system types ("nsfs" for a namespace).
func mountsUnder(t *testing.T, dir string) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent dev root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		point := fields[4]
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if point == dir || strings.HasPrefix(point, dir+"/") {
			if prev, ok := out[point]; ok {
				out[point] = prev + "," + fields[sep+1]
			} else {
				out[point] = fields[sep+1]
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// coverLikeIproute2 does to dir what `ip netns add` does to /run/netns the
// first time: bind-mount it onto itself (recursively when rec) and make the
// new mount shared. The cleanup registered takes the cover away again.
func coverLikeIproute2(t *testing.T, dir string, rec bool) {
	t.Helper()
	flags := uintptr(unix.MS_BIND)
	if rec {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(dir, dir, "", flags, ""); err != nil {
		t.Fatalf("covering %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("uncovering %s: %v", dir, err)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("making the cover of %s shared: %v", dir, err)
	}
}

// TestDeleteNetnsCovered reproduces issue 12: a namespace mounted in a
// directory that something then bind-mounts onto itself can no longer be
// unmounted by path, and its file cannot be removed; deleteNetns must still
// remove both and leave no namespace mounted anywhere below the directory.
func TestDeleteNetnsCovered(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		rec  bool
	}{{"bind", false}, {"rbind", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "netns")
			if err := prepareNetnsDir(dir); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := releaseNetnsDir(dir); err != nil {
					t.Errorf("releasing %s: %v", dir, err)
				}
			})
			path := filepath.Join(dir, "covered")
			if err := createNetns(path); err != nil {
				t.Fatal(err)
			}
			coverLikeIproute2(t, dir, tc.rec)
			// The bug as it was: what the old deleteNetns did now fails.
			_ = unix.Unmount(path, unix.MNT_DETACH)
			if err := unix.Unlink(path); err != unix.EBUSY {
				t.Fatalf("unlink of the covered netns file = %v, want EBUSY (the cover did not reproduce the bug)", err)
			}

			if err := deleteNetns(path); err != nil {
				t.Fatalf("deleteNetns: %v", err)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Errorf("netns file still there: %v", err)
			}
			for point, fstype := range mountsUnder(t, dir) {
				if strings.Contains(fstype, "nsfs") {
					t.Errorf("namespace still mounted at %s", point)
				}
			}
			if err := deleteNetns(path); err != nil {
				t.Errorf("second deleteNetns: %v", err)
			}
		})
	}
}

// TestIPNetnsAddDoesNotBreakTeardown is the production scenario of issue
// 12: an operator's (or a CNI plugin's) `ip netns add` while capsules run.
func TestIPNetnsAddDoesNotBreakTeardown(t *testing.T) {
	requireRoot(t)
	cfg := newTestConfig(t)
	m := newTestManager(t, cfg)
	ctx := context.Background()
	slots := setupMany(t, m, 3)

	testhost.IPNetnsAdd(t, cfg.Prefix+"ipx")

	for _, s := range slots[:2] {
		if err := m.Teardown(ctx, s.CapsuleID); err != nil {
			t.Fatalf("Teardown %s after ip netns add: %v", s.CapsuleID, err)
		}
		if exists(s.NetnsPath) {
			t.Errorf("%s: netns file %s left", s.CapsuleID, s.NetnsPath)
		}
	}
	fresh, err := m.Setup(ctx, "after-ip-netns-add")
	if err != nil {
		t.Fatalf("Setup after ip netns add: %v", err)
	}
	addr := serve(t, fresh.NetnsPath, net.JoinHostPort(fresh.Address.Addr().String(), envdPort))
	if err := dial("", addr); err != nil {
		t.Errorf("host to new capsule: %v", err)
	}
	for _, id := range []string{fresh.CapsuleID, slots[2].CapsuleID} {
		if err := m.Teardown(ctx, id); err != nil {
			t.Errorf("Teardown %s: %v", id, err)
		}
	}
	for point, fstype := range mountsUnder(t, cfg.NetnsDir) {
		if point != cfg.NetnsDir {
			t.Errorf("left mounted in the netns directory: %s (%s)", point, fstype)
		}
	}
}

// TestLegacyNetnsMigration: an agent upgraded from one that mounted
// capsule namespaces in /run/netns (here a stand-in directory) re-adopts its
// running capsules; their namespaces move into Config.NetnsDir without the
// capsules noticing, even when the old directory has been covered since.
func TestLegacyNetnsMigration(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	legacy := filepath.Join(t.TempDir(), "run-netns")

	// What the older agent left: a slot mounted in the legacy directory
	// and a record without the namespace's place.
	old := cfg
	old.NetnsDir = legacy
	m1 := newTestManager(t, old)
	slots := setupMany(t, m1, 2)
	m1.Close()
	t.Cleanup(func() {
		// The legacy stand-in is not the new manager's own directory.
		_ = releaseNetnsDir(legacy)
	})
	for _, s := range slots {
		data, err := json.Marshal(map[string]string{"capsule_id": s.CapsuleID, "address": s.Address.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(recordPath(cfg.StateDir, s.CapsuleID), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The capsule is serving, and then someone runs `ip netns add`.
	addr := serve(t, slots[0].NetnsPath, net.JoinHostPort(slots[0].Address.Addr().String(), envdPort))
	coverLikeIproute2(t, legacy, false)

	cfg.legacyDir = legacy
	m2 := newTestManager(t, cfg)
	for _, s := range slots {
		got, ok := m2.Lookup(s.CapsuleID)
		if !ok {
			t.Fatalf("%s not re-adopted", s.CapsuleID)
		}
		want := filepath.Join(cfg.NetnsDir, s.NetnsName)
		if got.NetnsPath != want || !netnsMounted(want) {
			t.Errorf("%s: netns at %s (mounted %v), want %s", s.CapsuleID, got.NetnsPath, netnsMounted(want), want)
		}
		if exists(s.NetnsPath) {
			t.Errorf("%s: old netns file %s left", s.CapsuleID, s.NetnsPath)
		}
		recs, err := readRecords(cfg.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.CapsuleID == s.CapsuleID && r.Netns != want {
				t.Errorf("%s: record says netns %q, want %q", s.CapsuleID, r.Netns, want)
			}
		}
	}
	if err := dial("", addr); err != nil {
		t.Errorf("host to migrated capsule (same namespace, same listener): %v", err)
	}
	for point, fstype := range mountsUnder(t, legacy) {
		if strings.Contains(fstype, "nsfs") {
			t.Errorf("namespace still mounted in the legacy directory at %s", point)
		}
	}
	for _, s := range slots {
		if err := m2.Teardown(context.Background(), s.CapsuleID); err != nil {
			t.Errorf("Teardown %s: %v", s.CapsuleID, err)
		}
	}
	for point, fstype := range mountsUnder(t, cfg.NetnsDir) {
		if point != cfg.NetnsDir {
			t.Errorf("left mounted in the netns directory: %s (%s)", point, fstype)
		}
	}
}
