package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	ops "github.com/firecracker-microvm/firecracker-go-sdk/client/operations"
	openapi "github.com/go-openapi/runtime"
	"github.com/go-openapi/strfmt"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn/internal/durable"
)

// mergingFile is the name a VM's loaded memory file takes while a diff
// snapshot is written back onto it (see save): under that name it is never
// taken for a whole, loadable memory file again.
const mergingFile = "snapshot.mem.merging"

// version is a Firecracker release, as `firecracker --version` reports it.
type version struct{ major, minor int }

func (v version) atLeast(major, minor int) bool {
	return v.major > major || (v.major == major && v.minor >= minor)
}

func (v version) String() string {
	if v == (version{}) {
		return "unknown"
	}
	return fmt.Sprintf("%d.%d", v.major, v.minor)
}

var versionRe = regexp.MustCompile(`Firecracker v(\d+)\.(\d+)`)

// binaryVersion asks the firecracker binary bin its release. An answer it
// cannot read is the zero version, which enables nothing version-bound.
func binaryVersion(ctx context.Context, bin string) version {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return version{}
	}
	m := versionRe.FindSubmatch(out)
	if m == nil {
		return version{}
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return version{major, minor}
}

// Releases that change what the driver sends.
var (
	// diffMergeVersion writes a diff snapshot onto the memory file the VM
	// was loaded from when it names that file (Firecracker #4301, 1.6);
	// before, doing so corrupted both the VM and the snapshot.
	diffMergeVersion = version{1, 6}
	// trackDirtyVersion renamed snapshot/load's enable_diff_snapshots to
	// track_dirty_pages (1.13). Firecracker refuses fields it does not
	// know, so each release gets the name it knows.
	trackDirtyVersion = version{1, 13}
)

// diffSnapshots reports whether this driver's VMs take diff snapshots:
// configured, and a Firecracker that merges them safely.
func (d *Driver) diffSnapshots() bool {
	return d.cfg.DiffSnapshots && d.version.atLeast(diffMergeVersion.major, diffMergeVersion.minor)
}

// snapshotLoad is the body of PUT /snapshot/load as Firecracker has it since
// mem_backend (1.1) replaced mem_file_path, which the SDK's v1.0.0 models
// still send and newer releases have deprecated.
type snapshotLoad struct {
	SnapshotPath string     `json:"snapshot_path"`
	MemBackend   memBackend `json:"mem_backend"`
	ResumeVM     bool       `json:"resume_vm"`
	// One of the two, by release (trackDirtyVersion), when the VM tracks
	// the pages it dirties for a later diff snapshot.
	TrackDirtyPages     bool `json:"track_dirty_pages,omitempty"`
	EnableDiffSnapshots bool `json:"enable_diff_snapshots,omitempty"`
}

type memBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// load sends snapshot/load for the saved state in the VM's root and
// resumes it; trackDirty turns on dirty page tracking for a later diff.
// The call goes through the SDK's transport and response reader, with the
// body above in place of the SDK's outdated model.
func (d *Driver) load(ctx context.Context, r record, trackDirty bool) error {
	body := snapshotLoad{
		SnapshotPath: vmstateFile,
		MemBackend:   memBackend{BackendType: "File", BackendPath: memFile},
		ResumeVM:     true,
	}
	if trackDirty {
		if d.version.atLeast(trackDirtyVersion.major, trackDirtyVersion.minor) {
			body.TrackDirtyPages = true
		} else {
			body.EnableDiffSnapshots = true
		}
	}
	_, err := sdk.NewUnixSocketTransport(r.Socket, quietLogger(), false).Submit(&openapi.ClientOperation{
		ID:                 "loadSnapshot",
		Method:             "PUT",
		PathPattern:        "/snapshot/load",
		ProducesMediaTypes: []string{"application/json"},
		ConsumesMediaTypes: []string{"application/json"},
		Schemes:            []string{"http"},
		Params: openapi.ClientRequestWriterFunc(func(req openapi.ClientRequest, _ strfmt.Registry) error {
			return req.SetBodyParam(body)
		}),
		Reader:  &ops.LoadSnapshotReader{},
		Context: ctx,
	})
	if err != nil {
		return fmt.Errorf("firecracker snapshot/load: %w", err)
	}
	return nil
}

// save writes paused VM r's snapshot into its root (Firecracker sees
// relative names there, inside a jail too), then moves it and a copy of
// the disk into imageDir and syncs them.
//
// The memory is written one of two ways:
//   - diff, onto the memory file the VM was loaded from, when the VM tracks
//     dirty pages (r.DirtyTracked) and nothing else holds that file (one
//     link: the agent has dropped its saved copy, no snapshot template
//     shares it). Firecracker writes only the pages the guest changed since
//     the load, and the file becomes the whole memory of now. The file is
//     first renamed to mergingFile, so that a write-back cut short is never
//     loaded or merged into again, and on failure it is removed (the VM's
//     own memory is its private mapping, untouched either way).
//   - full, into a new file, otherwise: every page of guest memory.
func (d *Driver) save(ctx context.Context, c *sdk.Client, r record, imageDir string) error {
	loaded := filepath.Join(r.Root, memFile)
	merging := filepath.Join(r.Root, mergingFile)
	_ = os.Remove(filepath.Join(r.Root, vmstateFile))
	_ = os.Remove(merging)
	params := &models.SnapshotCreateParams{
		SnapshotType: models.SnapshotCreateParamsSnapshotTypeFull,
		MemFilePath:  ptr(memFile), SnapshotPath: ptr(vmstateFile),
	}
	written := loaded
	if r.DirtyTracked && soleLink(loaded) {
		// In a jail the loaded file is root:GID 0440 (prepareRoot), which
		// the VM cannot write. With no other link left it is this VM's
		// alone, so it may own it: the uid shares it with nobody.
		if r.Jail != "" {
			if err := ownRegular(loaded, r.UID, d.cfg.GID, 0o600); err != nil {
				return err
			}
		}
		if err := os.Rename(loaded, merging); err != nil {
			return err
		}
		params.SnapshotType = models.SnapshotCreateParamsSnapshotTypeDiff
		params.MemFilePath = ptr(mergingFile)
		written = merging
	} else {
		_ = os.Remove(loaded)
	}
	if _, err := c.CreateSnapshot(ctx, params); err != nil {
		_ = os.Remove(written)
		return fmt.Errorf("creating %s snapshot: %w", params.SnapshotType, err)
	}
	d.log.Debug("snapshot written", "capsule_id", r.ID, "type", params.SnapshotType)
	// From here the files come out of a root a jailed VMM owns and may
	// have tampered with: only a regular file with one link is taken,
	// never a symlink (which would be followed outside the jail), and what
	// is taken becomes root's (sealed).
	moves := []struct{ src, dst string }{
		{written, filepath.Join(imageDir, memFile)},
		{filepath.Join(r.Root, vmstateFile), filepath.Join(imageDir, vmstateFile)},
	}
	for _, m := range moves {
		if err := os.Rename(m.src, m.dst); err != nil {
			if err := copyNoFollow(ctx, m.src, m.dst); err != nil {
				return err
			}
			_ = os.Remove(m.src)
		}
	}
	if err := copyNoFollow(ctx, filepath.Join(r.Root, diskFile), filepath.Join(imageDir, diskFile)); err != nil {
		return err
	}
	for _, f := range []string{memFile, vmstateFile, diskFile} {
		if err := ownRegular(filepath.Join(imageDir, f), 0, 0, 0o600); err != nil {
			_ = os.Remove(filepath.Join(imageDir, f)) // a symlink goes, not its target
			return fmt.Errorf("taking the VM's %s: %w", f, err)
		}
	}
	if err := os.WriteFile(filepath.Join(imageDir, addressFile), []byte(r.Address+"\n"), 0o600); err != nil {
		return err
	}
	for _, f := range []string{memFile, vmstateFile, diskFile, addressFile, "."} {
		if err := durable.Sync(filepath.Join(imageDir, f)); err != nil {
			return err
		}
	}
	return durable.Sync(filepath.Dir(imageDir))
}

// ownRegular gives the file at path owner uid:gid and permissions mode, if
// it is a regular file with a single link. It acts on the file it opened
// without following a symlink, so a name swapped meanwhile by someone who
// can write the directory (a jailed VMM in its root) changes nothing else.
func ownRegular(path string, uid, gid int, mode os.FileMode) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return fmt.Errorf("%s is a symlink, not a regular file", path)
	}
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer func() { _ = unix.Close(fd) }()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		return fmt.Errorf("%s is not a regular file with one link (mode %o, %d links)", path, st.Mode, st.Nlink)
	}
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("owning %s: %w", path, err)
	}
	if err := unix.Fchmod(fd, uint32(mode.Perm())); err != nil {
		return fmt.Errorf("owning %s: %w", path, err)
	}
	return nil
}

// soleLink reports whether path is a regular file no other name links to.
func soleLink(path string) bool {
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && sys.Nlink == 1
}
