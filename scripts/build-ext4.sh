#!/usr/bin/env bash
# Writes a template's disk image for microVMs: <images-dir>/<name>.ext4, an
# ext4 file system made from <images-dir>/<name>/rootfs with `mkfs.ext4 -d`
# (no loop mount, no privileges beyond reading the tree). envd is in it at
# /usr/bin/envd, as in the directory; the Firecracker driver boots it with
# init=/usr/bin/envd. `make images` runs this after scripts/build-image.sh.
#
# Usage: scripts/build-ext4.sh <name> [<images-dir>]
#   images-dir defaults to $WRENN_DIR/images (WRENN_DIR: /var/lib/wrenn).
#
# The image is sized to the tree plus a quarter and 16 MiB of room; each
# capsule gets its own copy-on-write copy grown to its disk_mb, so the
# shared image stays small. It is written next to its final place and
# renamed into it, so a reader never sees half an image.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

name=${1:-}
images=${2:-${WRENN_DIR:-/var/lib/wrenn}/images}
[ -n "$name" ] || die "usage: $0 <name> [<images-dir>]"
rootfs="$images/$name/rootfs"
[ -d "$rootfs" ] || die "no template directory $rootfs: build it first (scripts/build-image.sh $name)"
[ -f "$rootfs/usr/bin/envd" ] || die "$rootfs has no /usr/bin/envd"
command -v mkfs.ext4 >/dev/null || apt_install e2fsprogs

used_kib=$(du -sk "$rootfs" | cut -f1)
size_kib=$((used_kib + used_kib / 4 + 16384))
tmp=$(mktemp "$images/.$name.ext4.XXXXXX")
trap 'rm -f "$tmp"' EXIT
# -d copies the tree with owners, modes, links and device nodes; no journal
# checksums or other features an older guest kernel could refuse are added
# beyond mke2fs's ext4 defaults.
mkfs.ext4 -q -F -L rootfs -d "$rootfs" "$tmp" "${size_kib}k" ||
	die "mkfs.ext4 -d $rootfs failed"
chmod 0644 "$tmp"
mv -f "$tmp" "$images/$name.ext4"
trap - EXIT
log "image $name: $images/$name.ext4 ($((size_kib / 1024)) MiB)"
