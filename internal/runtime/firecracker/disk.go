package firecracker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wrenn-dev/wrenn/internal/durable"
	"github.com/wrenn-dev/wrenn/internal/runtime"
)

// A capsule's disk is its own copy of the template's ext4 image, made with
// `cp --reflink=auto --sparse=always`: on a file system with reflinks (XFS,
// Btrfs) the copy shares every block with the template until the guest
// writes one, and costs nothing to make; elsewhere it is a sparse copy,
// which writes only the blocks the image uses (tens of MiB for minimal).
// The copy is then grown to the capsule's disk_mb (truncate, then
// resize2fs on the unmounted image), so the guest sees a file system of
// that size whose free space takes no host disk until written.
//
// Chosen over a device-mapper snapshot (dm-snapshot over a loop device of
// the template) because that needs loop and dm devices per capsule, which
// must be set up again after a host reboot and torn down in order, and
// over a read-only template drive plus an overlay drive, which would make
// envd assemble an overlay at boot: a plain file is the disk Firecracker,
// its snapshots and a restore on another host all handle as is.

// copyDisk makes dst a copy-on-write (or sparse) copy of src.
func copyDisk(ctx context.Context, src, dst string) error {
	return copyFile(ctx, src, dst)
}

// copyNoFollow copies src to dst as copyDisk does, except that a symlink
// at src is copied as a symlink, not followed (ownRegular then refuses it).
func copyNoFollow(ctx context.Context, src, dst string) error {
	return copyFile(ctx, src, dst, "--no-dereference")
}

// copyFile is cp with reflinks where the file system has them, sparse
// otherwise, and the extra flags; a failed copy leaves no dst.
func copyFile(ctx context.Context, src, dst string, flags ...string) error {
	args := append([]string{"--reflink=auto", "--sparse=always"}, flags...)
	if err := run(ctx, "cp", append(args, src, dst)...); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}

// growDisk grows the ext4 image at path to sizeMB; an image larger than
// that is an error (a capsule's disk never shrinks below its template).
func growDisk(ctx context.Context, path string, sizeMB int) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("sizing disk: %w", err)
	}
	want := int64(sizeMB) << 20
	switch {
	case st.Size() > want:
		return fmt.Errorf("sizing disk: the template's image is %d MiB, more than the capsule's %d MB disk", st.Size()>>20, sizeMB)
	case st.Size() == want:
		return nil
	}
	if err := os.Truncate(path, want); err != nil {
		return fmt.Errorf("sizing disk: %w", err)
	}
	// -f: the image has never been mounted since mkfs (or was left clean
	// by a paused VM's snapshot), so the "run e2fsck first" check is moot
	// and would cost a full read.
	if err := run(ctx, "resize2fs", "-f", path); err != nil {
		return fmt.Errorf("sizing disk: %w", err)
	}
	return nil
}

// run runs a command and returns its combined output in the error.
func run(ctx context.Context, name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 1000 {
			msg = msg[len(msg)-1000:]
		}
		return fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return nil
}

// imageSuffix names a template's disk image beside its directory.
const imageSuffix = ".ext4"

// MakeTemplateImage implements runtime.TemplateImager with MakeImage.
func (d *Driver) MakeTemplateImage(ctx context.Context, dir string) (string, error) {
	return MakeImage(ctx, dir)
}

// MakeImage writes the ext4 image of template directory dir,
// ImagePath(dir), and returns its suffix beside dir: made from dir/rootfs
// with `mkfs.ext4 -d` (no loop mount, no privileges beyond reading the
// tree), sized to the tree plus a quarter and 16 MiB (each capsule grows
// its own copy to its disk_mb), written next to its place and renamed into
// it, so a reader never sees half an image. It is the one implementation:
// the agent calls it for templates it imports or receives, and `make
// images` through scripts/build-ext4.sh and `wrenn-agent template-image`.
func MakeImage(ctx context.Context, dir string) (string, error) {
	rootfs := filepath.Join(dir, "rootfs")
	if st, err := os.Stat(filepath.Join(rootfs, runtime.EnvdPath)); err != nil || !st.Mode().IsRegular() {
		return "", fmt.Errorf("making the disk image of %s: its rootfs has no %s", dir, runtime.EnvdPath)
	}
	out, err := exec.CommandContext(ctx, "du", "-sk", rootfs).Output()
	if err != nil {
		return "", fmt.Errorf("making the disk image of %s: measuring the tree: %w", dir, err)
	}
	usedKiB, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	if err != nil {
		return "", fmt.Errorf("making the disk image of %s: reading du: %w", dir, err)
	}
	sizeKiB := usedKiB + usedKiB/4 + 16384
	final := ImagePath(dir)
	tmp, err := os.CreateTemp(filepath.Dir(final), "."+filepath.Base(final)+".")
	if err != nil {
		return "", fmt.Errorf("making the disk image of %s: %w", dir, err)
	}
	_ = tmp.Close()
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := run(ctx, "mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", rootfs, tmp.Name(), strconv.FormatInt(sizeKiB, 10)+"k"); err != nil {
		return "", fmt.Errorf("making the disk image of %s: %w", dir, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	if err := durable.Sync(tmp.Name()); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("making the disk image of %s: %w", dir, err)
	}
	return imageSuffix, nil
}
