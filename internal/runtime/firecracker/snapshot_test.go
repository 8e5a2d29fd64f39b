package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"
)

// savedState is what the fake saved in image: the snapshot type, the
// loads it went through, and the two pages of guest memory.
type savedState struct {
	Type  string
	Loads int
	Pages [2]string
}

func readSaved(t *testing.T, image string) savedState {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(image, vmstateFile))
	if err != nil {
		t.Fatal(err)
	}
	var vm fakeVM
	if err := json.Unmarshal(b, &vm); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(image, memFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem := make([]byte, 2*fakePage)
	if _, err := f.ReadAt(mem, 0); err != nil {
		t.Fatal(err)
	}
	return savedState{Type: vm.LastSnapshot, Loads: vm.Loads, Pages: [2]string{
		string(bytes.TrimRight(mem[:fakePage], "\x00")), string(bytes.TrimRight(mem[fakePage:], "\x00")),
	}}
}

// TestDiffSnapshots follows a capsule through the pauses the agent makes:
// boot and pause (a full snapshot), resume and drop the saved copy, pause
// again. With a Firecracker that merges diffs (1.6 and later) the second
// pause writes only the page the guest changed, onto the memory file it
// was loaded from, and the saved memory is whole: the boot page kept, the
// changed page new. Where that file is shared (a snapshot template holds
// it) or tracking is off (configured off, or an older Firecracker), the
// pause is full and the shared file is untouched. The fake checks what
// Firecracker checks: no diff without dirty tracking, no field a release
// does not know.
func TestDiffSnapshots(t *testing.T) {
	for _, tc := range []struct {
		name, release string
		diffOn        bool
		wantDiff      bool
	}{
		{"v1.13", "1.13.1", true, true},
		{"v1.12", "1.12.0", true, true},
		{"v1.5", "1.5.1", true, false},
		{"off", "1.13.1", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeSetup(t)
			t.Setenv(fakeVersionEnv, tc.release)
			s.cfg.DiffSnapshots = tc.diffOn
			d, err := New(s.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.version.String(); got+"." != tc.release[:len(got)+1] {
				t.Fatalf("version read as %s from a %s binary", got, tc.release)
			}
			ctx := context.Background()
			spec := s.spec(t, uuid.NewString())
			if _, err := d.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
			pause := func(image string) savedState {
				t.Helper()
				if err := d.Checkpoint(ctx, spec.ID, image); err != nil {
					t.Fatal(err)
				}
				if err := d.Destroy(ctx, spec.ID); err != nil {
					t.Fatal(err)
				}
				return readSaved(t, image)
			}
			booted := "booted " + spec.ID

			first := filepath.Join(t.TempDir(), "first")
			mustMkdir(t, first)
			if got := pause(first); got.Type != "Full" || got.Pages[0] != booted {
				t.Fatalf("first pause saved %+v, want a full snapshot of the booted guest", got)
			}

			// Resume, then drop the saved copy as the agent does: the VM's
			// root holds the only link to the memory it was loaded from.
			if _, err := d.Restore(ctx, spec, first); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(first); err != nil {
				t.Fatal(err)
			}
			second := filepath.Join(t.TempDir(), "second")
			mustMkdir(t, second)
			got := pause(second)
			wantType := "Full"
			if tc.wantDiff {
				wantType = "Diff"
			}
			if got.Type != wantType || got.Pages != [2]string{booted, "dirtied after load 1"} {
				t.Fatalf("second pause saved %+v, want a %s snapshot holding the boot page and the changed one", got, wantType)
			}

			// Resume from a state a template shares (a second link): the
			// next pause must leave the shared file as it was.
			template := filepath.Join(t.TempDir(), "template")
			mustMkdir(t, template)
			for _, f := range []string{memFile, vmstateFile, diskFile, addressFile} {
				if err := os.Link(filepath.Join(second, f), filepath.Join(template, f)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.Restore(ctx, spec, second); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(second); err != nil {
				t.Fatal(err)
			}
			third := filepath.Join(t.TempDir(), "third")
			mustMkdir(t, third)
			if got := pause(third); got.Type != "Full" || got.Pages != [2]string{booted, "dirtied after load 2"} {
				t.Fatalf("pause over a shared memory file saved %+v, want a full snapshot", got)
			}
			if got := readSaved(t, template); got.Pages != [2]string{booted, "dirtied after load 1"} {
				t.Fatalf("the template's memory became %+v: a pause wrote into a shared file", got)
			}
			leftovers(t, s.cfg)
		})
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(fmt.Errorf("making %s: %w", dir, err))
	}
}

// TestSaveTakesOnlyTheVMsOwnFiles: a jailed VMM owns its root and could
// put a symlink to a host file where its disk or state was, or keep a
// second link to them. A checkpoint then fails; it neither copies the
// host file into the saved state nor changes its owner or mode.
func TestSaveTakesOnlyTheVMsOwnFiles(t *testing.T) {
	s := newFakeSetup(t)
	d, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := s.spec(t, uuid.NewString())
	if _, err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Destroy(context.Background(), spec.ID) })
	r, err := d.readRecord(spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(r.Root, diskFile)
	if err := os.Remove(disk); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, disk); err != nil {
		t.Fatal(err)
	}
	image := t.TempDir()
	if err := d.Checkpoint(ctx, spec.ID, image); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Checkpoint over a disk swapped for a symlink = %v, want a refusal", err)
	}
	if b, err := os.ReadFile(filepath.Join(image, diskFile)); err == nil && strings.Contains(string(b), "host secret") {
		t.Fatal("the host file behind the symlink was copied into the saved state")
	}
	st, err := os.Stat(secret)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || sys.Uid != 0 {
		t.Fatalf("the host file is now %v uid %d", st.Mode(), sys.Uid)
	}

	// ownRegular refuses a symlink and a file with a second link.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	if err := ownRegular(link, 4242, 4242, 0o666); err == nil {
		t.Fatal("ownRegular followed a symlink")
	}
	hard := filepath.Join(filepath.Dir(secret), "hard")
	if err := os.Link(secret, hard); err != nil {
		t.Fatal(err)
	}
	if err := ownRegular(hard, 4242, 4242, 0o666); err == nil {
		t.Fatal("ownRegular took a file with a second link")
	}
	if st, _ := os.Stat(secret); st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("the host file is now %v uid %d", st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
	}
}
