#!/usr/bin/env bash
# Puts a freshly built envd into an existing microVM disk image, in place,
# with debugfs (no mount, no loop device): the quick way to try a changed
# envd in a Firecracker capsule without rebuilding the template.
#
# Usage: scripts/update-debug-rootfs.sh <image.ext4> [<envd>]
#   envd defaults to ENVD, then builds/envd (`make envd`).
#
# Capsules already running keep their own copy of the disk; new ones get the
# new envd. Do not run it on an image a VM has open for writing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

image=${1:-}
envd=${2:-${ENVD:-builds/envd}}
[ -n "$image" ] || die "usage: $0 <image.ext4> [<envd>]"
[ -f "$image" ] || die "no image $image"
[ -f "$envd" ] || die "no $envd: build it first with \`make envd\`"
command -v debugfs >/dev/null || apt_install e2fsprogs

# rm fails harmlessly on an image without envd; write refuses an existing
# name, hence the rm first. write copies the host file's permission bits;
# the owner is set to root explicitly.
out=$(debugfs -w -f - "$image" 2>&1 <<CMDS
rm /usr/bin/envd
write $envd /usr/bin/envd
sif /usr/bin/envd mode 0100755
sif /usr/bin/envd uid 0
sif /usr/bin/envd gid 0
CMDS
) || die "debugfs on $image failed: $out"
# debugfs exits 0 even when a command fails: read the result back.
got=$(debugfs -R 'cat /usr/bin/envd' "$image" 2>/dev/null | sha256sum | cut -d' ' -f1)
want=$(sha256sum <"$envd" | cut -d' ' -f1)
[ "$got" = "$want" ] || die "envd in $image does not match $envd after writing it: $out"
e2fsck -fn "$image" >/dev/null 2>&1 || die "$image does not pass e2fsck -fn after the update"
log "envd in $image replaced by $envd"
