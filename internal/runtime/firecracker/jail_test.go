package firecracker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"
)

// jailedDriver is a driver configured for the jailer with uid range
// base … base+count-1 and group gid, over a fresh state directory. Nothing
// here starts the jailer, so its binaries need not exist.
func jailedDriver(t *testing.T, base, count, gid int) *Driver {
	t.Helper()
	// Short, unlike t.TempDir: the API socket path in the jail must fit.
	dir, err := os.MkdirTemp("", "fcj")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg := Config{
		Firecracker: "/usr/local/bin/firecracker", Jailer: "/usr/local/bin/jailer",
		UIDBase: base, UIDCount: count, GID: gid,
		StateDir: dir, ChrootBase: filepath.Join(dir, "jail"),
		Kernel: filepath.Join(dir, "vmlinux"),
	}
	if err := os.MkdirAll(cfg.ChrootBase, 0o700); err != nil {
		t.Fatal(err)
	}
	return &Driver{cfg: cfg, log: slog.New(slog.DiscardHandler), reserved: map[int]bool{}}
}

// TestReserveUID: each VM takes the lowest free uid of the range, whether
// another VM holds it by its record or by a launch still under way; the
// uid of a destroyed VM (record removed) is taken again; a full range is
// an error that says so; concurrent launches never share a uid.
func TestReserveUID(t *testing.T) {
	const base = 1500000000
	d := jailedDriver(t, base, 3, 1400000000)
	take := func(want int) func() {
		t.Helper()
		uid, release, err := d.reserveUID()
		if err != nil {
			t.Fatalf("reserveUID: %v", err)
		}
		if uid != want {
			t.Fatalf("reserveUID = %d, want %d", uid, want)
		}
		return release
	}
	write := func(id string, uid int) {
		t.Helper()
		if err := d.writeRecord(record{ID: id, UID: uid}); err != nil {
			t.Fatal(err)
		}
	}
	// Two VMs, two uids: the first by its record, once its launch is done.
	release := take(base)
	write("a", base)
	release()
	release = take(base + 1)
	write("b", base+1)
	release()
	// A launch under way holds its uid before it has a record.
	pending := take(base + 2)
	_, _, err := d.reserveUID()
	if err == nil || !strings.Contains(err.Error(), "all 3 uids from 1500000000") {
		t.Fatalf("reserveUID with every uid held = %v, want an error saying the range is full", err)
	}
	// That launch failed: its uid is free again.
	pending()
	release = take(base + 2)
	release()
	// VM a is destroyed: its uid goes to the next VM, the lowest free.
	if err := os.Remove(d.recordPath("a")); err != nil {
		t.Fatal(err)
	}
	release = take(base)
	release()

	// Without a jailer Firecracker runs as root: no uid is taken.
	d.cfg.Jailer = ""
	if uid, release, err := d.reserveUID(); err != nil || uid != 0 {
		t.Fatalf("reserveUID without a jailer = %d, %v; want 0", uid, err)
	} else {
		release()
	}

	// Launches at the same time: each takes a uid and writes its record
	// before releasing it, as launch does; none shares a uid.
	d = jailedDriver(t, base, 64, 1400000000)
	var wg sync.WaitGroup
	uids := make([]int, 64)
	errs := make([]error, 64)
	for i := range uids {
		wg.Go(func() {
			uid, release, err := d.reserveUID()
			if err != nil {
				errs[i] = err
				return
			}
			defer release()
			uids[i] = uid
			errs[i] = d.writeRecord(record{ID: fmt.Sprintf("vm-%d", i), UID: uid})
		})
	}
	wg.Wait()
	seen := map[int]int{}
	for i, uid := range uids {
		if errs[i] != nil {
			t.Fatalf("launch %d: %v", i, errs[i])
		}
		if j, dup := seen[uid]; dup {
			t.Fatalf("launches %d and %d both took uid %d", j, i, uid)
		}
		seen[uid] = i
		if uid < base || uid >= base+64 {
			t.Fatalf("launch %d took uid %d, outside the range", i, uid)
		}
	}
}

// owner is a file's owner, group and permissions.
type owner struct {
	uid, gid int
	mode     os.FileMode
}

func ownerOf(t *testing.T, path string) owner {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return owner{int(sys.Uid), int(sys.Gid), st.Mode().Perm()}
}

// TestPrepareRootJailed makes a jailed VM's root for a boot and for a
// restore and checks who owns what: the root and the disk are the VM's
// uid's (0700, 0600); the kernel and the saved state, hard links to files
// outside the jail (the host's kernel, a saved state other capsules may
// restore from), are root:GID 0440 — and so are the files they link to,
// which never belong to the VM's uid, even when another VM's uid wrote
// them (a saved state is written by the VM saved).
func TestPrepareRootJailed(t *testing.T) {
	s := newFakeSetup(t)
	const (
		base, gid = 1500000000, 1400000000
		writer    = 1500000099 // the uid of the VM that wrote a saved state
	)
	d := jailedDriver(t, base, 8, gid)
	d.cfg.Kernel = s.cfg.Kernel
	if err := os.Chmod(d.cfg.Kernel, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	check := func(t *testing.T, path string, want owner) {
		t.Helper()
		if got := ownerOf(t, path); got != want {
			t.Errorf("%s: %d:%d %v, want %d:%d %v", path, got.uid, got.gid, got.mode, want.uid, want.gid, want.mode)
		}
	}
	// sameFile says path is a hard link to src, and src is not the VM's.
	linked := func(t *testing.T, path, src string, uid int) {
		t.Helper()
		a, errA := os.Stat(path)
		b, errB := os.Stat(src)
		if errA != nil || errB != nil || !os.SameFile(a, b) {
			t.Errorf("%s is not a hard link to %s (%v, %v)", path, src, errA, errB)
		}
		if got := ownerOf(t, src); got.uid == uid || got.uid != 0 || got.mode&0o222 != 0 {
			t.Errorf("%s, outside the jail: %d:%d %v; want root's, writable by nobody else", src, got.uid, got.gid, got.mode)
		}
	}

	t.Run("boot", func(t *testing.T) {
		spec := s.spec(t, uuid.NewString())
		l, err := layoutOf(d.cfg, spec)
		if err != nil {
			t.Fatal(err)
		}
		l.UID = base + 3
		if err := d.prepareRoot(ctx, spec, l, ""); err != nil {
			t.Fatal(err)
		}
		check(t, l.Root, owner{base + 3, gid, 0o700})
		check(t, filepath.Join(l.Root, diskFile), owner{base + 3, gid, 0o600})
		check(t, filepath.Join(l.Root, l.Kernel), owner{0, gid, 0o440})
		linked(t, filepath.Join(l.Root, l.Kernel), d.cfg.Kernel, l.UID)
		// The template's image is the template's, untouched.
		if got := ownerOf(t, ImagePath(spec.Image)); got.uid != 0 || got.gid != 0 {
			t.Errorf("the template image is owned by %d:%d", got.uid, got.gid)
		}
	})

	t.Run("restore", func(t *testing.T) {
		saved := t.TempDir()
		for _, f := range []string{memFile, vmstateFile, diskFile} {
			p := filepath.Join(saved, f)
			if err := os.WriteFile(p, []byte(f), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, writer, gid); err != nil {
				t.Fatal(err)
			}
		}
		spec := s.spec(t, uuid.NewString())
		l, err := layoutOf(d.cfg, spec)
		if err != nil {
			t.Fatal(err)
		}
		l.UID = base + 5
		if err := d.prepareRoot(ctx, spec, l, saved); err != nil {
			t.Fatal(err)
		}
		check(t, l.Root, owner{base + 5, gid, 0o700})
		check(t, filepath.Join(l.Root, diskFile), owner{base + 5, gid, 0o600})
		for _, f := range []string{memFile, vmstateFile} {
			check(t, filepath.Join(l.Root, f), owner{0, gid, 0o440})
			linked(t, filepath.Join(l.Root, f), filepath.Join(saved, f), l.UID)
		}
		check(t, filepath.Join(l.Root, l.Kernel), owner{0, gid, 0o440})
		linked(t, filepath.Join(l.Root, l.Kernel), d.cfg.Kernel, l.UID)
		// The saved disk is copied, not linked: the VM writes its own.
		a, _ := os.Stat(filepath.Join(l.Root, diskFile))
		b, _ := os.Stat(filepath.Join(saved, diskFile))
		if os.SameFile(a, b) {
			t.Error("the restored disk is a link to the saved one")
		}
	})
}
