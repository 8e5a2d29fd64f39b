package firecracker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
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
	if err := run(ctx, "cp", "--reflink=auto", "--sparse=always", src, dst); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("copying disk %s: %w", src, err)
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
