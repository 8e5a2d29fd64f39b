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
# renamed into it, so a reader never sees half an image. The work is done by
# `wrenn-agent template-image` (built here if needed), the code the agent
# runs for the templates it imports.
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
# The image is made by the agent's own code (firecracker.MakeImage), the one
# the agent also runs for templates it imports or receives.
agent=builds/wrenn-agent
make --no-print-directory wrenn-agent >/dev/null
image=$("$agent" template-image "$images/$name") || die "making the image of $images/$name failed"
log "image $name: $image ($(($(stat -c %s "$image") / 1048576)) MiB)"
