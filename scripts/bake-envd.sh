#!/usr/bin/env bash
# Puts a newly built envd into an existing template: replaces
# <images-dir>/<template>/rootfs/usr/bin/envd (a temporary file renamed over
# it, so a capsule starting meanwhile sees the old or the new binary, never a
# partial one) and updates envd_version and size_bytes in template.json the
# same way.
# Capsules already running keep the envd they started with.
#
# Usage: scripts/bake-envd.sh <template> [<images-dir>]
#   images-dir defaults to $WRENN_DIR/images (WRENN_DIR: /var/lib/wrenn).
#   ENVD overrides the binary (default builds/envd, `make envd`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

name=${1:-}
images=${2:-${WRENN_DIR:-/var/lib/wrenn}/images}
envd=${ENVD:-builds/envd}
[ -n "$name" ] || die "usage: $0 <template> [<images-dir>]"
dir=$images/$name
{ [ -d "$dir/rootfs" ] && [ -f "$dir/template.json" ]; } || die "no template $dir: build it with scripts/build-image.sh $name"
[ -x "$envd" ] || die "no $envd: build it first with \`make envd\`"
apt_install jq
exec 9>"$images/.$name.lock" # one build or bake of a template at a time
flock 9

version=$(envd_version "$envd")
target=$dir/rootfs/usr/bin/envd
tmp=$(mktemp "$dir/rootfs/usr/bin/.envd.XXXXXX")
tmpjson=$(mktemp "$dir/.template.json.XXXXXX")
trap 'rm -f "$tmp" "$tmpjson"' EXIT
cp "$envd" "$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$target"
size=$(du -sb "$dir/rootfs" | cut -f1)
jq --arg v "$version" --argjson size "$size" '.envd_version = $v | .size_bytes = $size' \
	"$dir/template.json" >"$tmpjson"
chmod 0644 "$tmpjson"
mv -f "$tmpjson" "$dir/template.json"
log "baked envd $version into $dir"
