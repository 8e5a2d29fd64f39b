#!/usr/bin/env bash
# Builds a capsule template: <images-dir>/<name>/rootfs (the root file system
# every capsule of the template uses read-only) and <images-dir>/<name>/template.json.
#
# Usage: scripts/build-image.sh <minimal|debian> [<images-dir>]
#   images-dir defaults to $WRENN_DIR/images (WRENN_DIR: /var/lib/wrenn).
#   ENVD overrides the envd binary to put in (default builds/envd, `make envd`).
#
# The template is built in a temporary directory next to its final place and
# renamed into it, so a template is never seen half-built. docs/templates.md
# describes the templates.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

name=${1:-}
images=${2:-${WRENN_DIR:-/var/lib/wrenn}/images}
envd=${ENVD:-builds/envd}
[ -n "$name" ] || die "usage: $0 <minimal|debian> [<images-dir>]"
[ "$(id -u)" -eq 0 ] || die "building a template needs root (file ownership, chroot)"
[ -x "$envd" ] || die "no $envd: build it first with \`make envd\`"

# base_files ROOTFS adds what every template has: envd, the network files
# and the directories a capsule expects.
base_files() {
	local r=$1
	mkdir -p "$r"/{etc,proc,sys,dev,run,root,tmp,var/tmp,usr/bin,home/user}
	chmod 1777 "$r/tmp" "$r/var/tmp"
	chmod 700 "$r/root"
	chown 1000:1000 "$r/home/user"
	install -m 0755 "$envd" "$r/usr/bin/envd"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tcapsule\n' >"$r/etc/hosts"
	printf 'nameserver 1.1.1.1\nnameserver 8.8.8.8\n' >"$r/etc/resolv.conf"
	echo capsule >"$r/etc/hostname"
}

# build_minimal ROOTFS: static busybox with a symlink per applet. Fast
# (well under a second), as `make test` rebuilds it whenever envd changes.
build_minimal() {
	local r=$1
	apt_install busybox-static
	mkdir -p "$r/bin"
	install -m 0755 /bin/busybox "$r/bin/busybox"
	(cd "$r" && /bin/busybox --list-full | xargs -n1 dirname | sort -u | xargs mkdir -p)
	# busybox creates one symlink per applet at its usual path (bin/sh, usr/bin/awk, ...).
	chroot "$r" /bin/busybox --install -s
	[ -L "$r/bin/sh" ] || die "busybox did not install its applets"
	rm -f "$r/linuxrc" # an initrd entry point, not wanted in a capsule
	base_files "$r"
	cat >"$r/etc/passwd" <<-PASSWD
		root:x:0:0:root:/root:/bin/sh
		user:x:1000:1000:user:/home/user:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/bin/false
	PASSWD
	cat >"$r/etc/group" <<-GROUP
		root:x:0:
		user:x:1000:
		nogroup:x:65534:
	GROUP
}

# build_debian ROOTFS: Debian bookworm (minbase) with python3, from the
# mirror this machine's apt uses; downloaded packages are cached in
# <images-dir>/.cache/debootstrap.
build_debian() {
	local r=$1 mirror cache suite=${DEBIAN_SUITE:-bookworm}
	apt_install debootstrap debian-archive-keyring
	mirror=$(debian_mirror)
	cache="$images/.cache/debootstrap-$suite"
	mkdir -p "$cache"
	log "debootstrap $suite from $mirror (a few minutes)"
	debootstrap --variant=minbase --include=python3 --cache-dir="$cache" \
		"$suite" "$r" "$mirror" >"$r.debootstrap.log" 2>&1 ||
		{ tail -n 30 "$r.debootstrap.log" >&2; die "debootstrap failed (log above)"; }
	rm -f "$r.debootstrap.log"
	chroot "$r" /usr/sbin/useradd --uid 1000 --user-group --shell /bin/sh --home-dir /home/user user
	base_files "$r"
	# Package lists and downloaded .debs are not needed at run time.
	rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/var/log/*.log
}

case $name in
minimal) vcpus=1 mem=256 disk=1024 ;;
debian) vcpus=1 mem=512 disk=4096 ;;
*) die "unknown template \"$name\" (known: minimal, debian)" ;;
esac

mkdir -p "$images"
chmod 755 "$images"
# One build or bake of a template at a time.
exec 9>"$images/.$name.lock"
flock 9
tmp=$(mktemp -d "$images/.$name.build.XXXXXX")
trap 'rm -rf "$tmp" "$tmp/rootfs.debootstrap.log"' EXIT
chmod 755 "$tmp"
start=$SECONDS
"build_$name" "$tmp/rootfs"
chmod 755 "$tmp/rootfs"
template_write_json "$tmp" "$name" "$vcpus" "$mem" "$disk" "$(envd_version "$envd")"
template_replace "$tmp" "$images/$name"
log "template $name: $images/$name ($(du -sh "$images/$name/rootfs" | cut -f1), $((SECONDS - start)) s)"
