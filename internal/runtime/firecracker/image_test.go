package firecracker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// debugfs runs a read-only debugfs request on an ext4 image.
func debugfs(t *testing.T, image, request string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", request, image).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q %s: %v", request, image, err)
	}
	return string(out)
}

// TestImageScripts builds a template's ext4 image with scripts/build-ext4.sh
// and replaces its envd with scripts/update-debug-rootfs.sh, reading the
// image back with debugfs each time (no mount).
func TestImageScripts(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "e2fsck")
	images := t.TempDir()
	makeTemplate(t, images, "tiny")
	image := filepath.Join(images, "tiny.ext4")
	if got := debugfs(t, image, "cat /usr/bin/envd"); got != "#!/bin/sh\necho old envd\n" {
		t.Fatalf("envd in the built image = %q", got)
	}
	if got := debugfs(t, image, "cat /etc/hostname"); got != "capsule\n" {
		t.Fatalf("/etc/hostname in the built image = %q", got)
	}

	// A bigger envd than the old one, with other permission bits.
	envd := filepath.Join(t.TempDir(), "envd")
	body := strings.Repeat("new envd\n", 100_000)
	if err := os.WriteFile(envd, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	script(t, "update-debug-rootfs.sh", image, envd)
	if got := debugfs(t, image, "cat /usr/bin/envd"); got != body {
		t.Fatalf("envd after the update: %d bytes, want the %d of the new one", len(got), len(body))
	}
	stat := debugfs(t, image, "stat /usr/bin/envd")
	for _, want := range []string{"Mode:  0755", "User:     0", "Group:     0"} {
		if !strings.Contains(stat, want) {
			t.Errorf("stat of the new envd lacks %q:\n%s", want, stat)
		}
	}
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck after the update: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join("..", "..", "..", "scripts", "update-debug-rootfs.sh"), filepath.Join(images, "none.ext4"), envd).CombinedOutput(); err == nil {
		t.Fatalf("update of a missing image succeeded: %s", out)
	}
}

// TestDisk: a capsule's disk is a copy of the template's image grown to its
// size, with the template's files, and the template unchanged.
func TestDisk(t *testing.T) {
	needTools(t, "mkfs.ext4", "debugfs", "resize2fs")
	images := t.TempDir()
	makeTemplate(t, images, "tiny")
	image := filepath.Join(images, "tiny.ext4")
	before, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), diskFile)
	ctx := context.Background()
	if err := copyDisk(ctx, image, disk); err != nil {
		t.Fatal(err)
	}
	if err := growDisk(ctx, disk, 200); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(disk)
	if err != nil || st.Size() != 200<<20 {
		t.Fatalf("disk size = %v, %v; want 200 MiB", st.Size(), err)
	}
	super := debugfs(t, disk, "stats")
	m := regexp.MustCompile(`Block count:\s+(\d+)`).FindStringSubmatch(super)
	bs := regexp.MustCompile(`Block size:\s+(\d+)`).FindStringSubmatch(super)
	if m == nil || bs == nil {
		t.Fatalf("no block count in:\n%s", super)
	}
	blocks, _ := strconv.Atoi(m[1])
	size, _ := strconv.Atoi(bs[1])
	if blocks*size != 200<<20 {
		t.Errorf("file system of %d bytes, want %d", blocks*size, 200<<20)
	}
	if got := debugfs(t, disk, "cat /usr/bin/envd"); !strings.Contains(got, "old envd") {
		t.Errorf("the disk lost the template's envd: %q", got)
	}
	after, _ := os.Stat(image)
	if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
		t.Error("making a disk changed the template's image")
	}
	if err := growDisk(ctx, disk, 100); err == nil || !strings.Contains(err.Error(), "more than the capsule's") {
		t.Errorf("shrinking a disk = %v, want a refusal", err)
	}
}
