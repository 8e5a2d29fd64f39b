#!/usr/bin/env bash
# Builds a capsule template: <images-dir>/<name>/rootfs (the root file system
# every capsule of the template uses read-only) and <images-dir>/<name>/template.json.
#
# Usage: scripts/build-image.sh <minimal|base> [<images-dir>]
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
[ -n "$name" ] || die "usage: $0 <minimal|base> [<images-dir>]"
[ "$(id -u)" -eq 0 ] || die "building a template needs root (file ownership, chroot)"
[ -x "$envd" ] || die "no $envd: build it first with \`make envd\`"

# base_files ROOTFS adds what every template has (envd aside, see
# install_envd): the network files and the directories a capsule expects.
base_files() {
	local r=$1
	mkdir -p "$r"/{etc,proc,sys,dev,run,root,tmp,var/tmp,usr/bin,home/user}
	chmod 1777 "$r/tmp" "$r/var/tmp"
	chmod 700 "$r/root"
	chown 1000:1000 "$r/home/user"
	rm -f "$r/etc/hosts" "$r/etc/resolv.conf" "$r/etc/hostname"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tcapsule\n' >"$r/etc/hosts"
	printf 'nameserver 1.1.1.1\nnameserver 8.8.8.8\n' >"$r/etc/resolv.conf"
	echo capsule >"$r/etc/hostname"
}

# install_envd ROOTFS puts envd at /usr/bin/envd as a new file (never
# writing into an existing one, which may be a hard link into the cache).
install_envd() {
	local r=$1
	rm -f "$r/usr/bin/envd"
	install -m 0755 "$envd" "$r/usr/bin/envd"
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
	install_envd "$r"
}

# The packages of the base template, on top of Debian's essential set
# (which brings bash, coreutils, dpkg) and apt.
base_packages=bash,coreutils,python3,python3-pip,python3-venv,nodejs,npm,git,curl,ca-certificates,sudo,procps

# debian_tree ROOTFS SUITE MIRROR SECURITY_MIRROR DEB_CACHE builds the
# Debian part of the base template (everything but envd) with mmdebstrap:
# no recommended packages, no documentation, man pages or translations,
# apt's lists and downloads cleared; downloaded packages are kept in
# DEB_CACHE for the next build. The user `user` (uid 1000) gets
# passwordless sudo and bash. Its text is part of the base template's cache
# key, so that any change here rebuilds it.
debian_tree() {
	local r=$1 suite=$2 mirror=$3 security=$4 debs=$5 sources
	sources="deb $mirror $suite main"$'\n'"deb $mirror $suite-updates main"
	[ -n "$security" ] && sources+=$'\n'"deb $security $suite-security main"
	# eatmydata: dpkg's fsync calls are pointless in a tree that is
	# renamed into place only once complete, and slow.
	mmdebstrap --mode=root --variant=apt --format=directory --quiet \
		--hook-dir=/usr/share/mmdebstrap/hooks/eatmydata \
		--include="$base_packages" \
		--aptopt='APT::Install-Recommends "false"' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
		--setup-hook="sync-in $debs /var/cache/apt/archives/" \
		--customize-hook="sync-out /var/cache/apt/archives $debs" \
		--customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash user' \
		--customize-hook='echo "user ALL=(ALL:ALL) NOPASSWD: ALL" >"$1/etc/sudoers.d/user" && chmod 0440 "$1/etc/sudoers.d/user"' \
		--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/* "$1"/etc/machine-id' \
		"$suite" "$r" - <<<"$sources"
	base_files "$r"
}

# build_base ROOTFS: Debian with Python, Node.js, git and a sudoer `user`,
# who is the default user of exec, PTY and files (template.json). The
# Debian tree is built once per content of debian_tree and the package list
# (the cache key) into <cache>/base-<key>/rootfs, and each template is a
# hard-linked copy of it plus envd: seconds instead of minutes. The cache is
# $WRENN_IMAGE_CACHE, else <images-dir>/.cache.
build_base() {
	local r=$1 suite=${DEBIAN_SUITE:-bookworm} cache key tree tmp
	cache=${WRENN_IMAGE_CACHE:-$images/.cache}
	key=$(base_key)
	tree=$cache/base-${key:0:16}
	mkdir -p "$cache"
	exec 8>"$cache/.base.lock"
	flock 8
	if [ ! -f "$tree/done" ]; then
		apt_install mmdebstrap debian-archive-keyring eatmydata
		mkdir -p "$cache/debs-$suite"
		rm -rf "$tree"
		tmp=$(mktemp -d "$cache/.base.build.XXXXXX")
		log "mmdebstrap $suite from $(debian_mirror) (a few minutes the first time)"
		debian_tree "$tmp/rootfs" "$suite" "$(debian_mirror)" "$(debian_security_mirror)" "$cache/debs-$suite" \
			>"$tmp/mmdebstrap.log" 2>&1 ||
			{ tail -n 30 "$tmp/mmdebstrap.log" >&2; rm -rf "$tmp"; die "mmdebstrap failed (log above)"; }
		rm -f "$tmp/mmdebstrap.log"
		touch "$tmp/done"
		mv -T "$tmp" "$tree"
		# Trees of older keys: templates made from them keep their files
		# (hard links), so they can go.
		find "$cache" -mindepth 1 -maxdepth 1 -name 'base-*' ! -path "$tree" -exec rm -rf {} +
	fi
	touch "$tree"
	flock -u 8
	# A hard-linked copy: same file system, no data copied. Nothing writes
	# into a template's files (capsules write to their own layer; envd is
	# replaced by rename), so the links are never written through.
	rm -rf "$r"
	cp -a --link "$tree/rootfs" "$r" 2>/dev/null || { rm -rf "$r"; cp -a "$tree/rootfs" "$r"; }
	install_envd "$r"
}

# base_key prints the digest of what the base template's Debian tree is
# built from.
base_key() {
	{
		declare -f debian_tree base_files
		echo "$base_packages ${DEBIAN_SUITE:-bookworm} $(dpkg --print-architecture)"
	} | sha256sum | cut -d' ' -f1
}

user=""
case $name in
minimal) vcpus=1 mem=256 disk=1024 ;;
base) vcpus=1 mem=512 disk=4096 user=user ;;
*) die "unknown template \"$name\" (known: minimal, base)" ;;
esac

# What the template is built from: these scripts, envd and, for base, the
# Debian tree's key. A template built from the same inputs is kept (FORCE=1
# rebuilds it anyway).
inputs=$( {
	cat scripts/build-image.sh scripts/lib.sh "$envd"
	if [ "$name" = base ]; then base_key; fi
} | sha256sum | cut -d' ' -f1)

mkdir -p "$images"
chmod 755 "$images"
# One build or bake of a template at a time.
exec 9>"$images/.$name.lock"
flock 9
if [ "${FORCE:-0}" != 1 ] && [ -f "$images/$name/template.json" ] &&
	grep -q "\"inputs\": \"$inputs\"" "$images/$name/template.json"; then
	log "template $name: up to date ($images/$name)"
	exit 0
fi
tmp=$(mktemp -d "$images/.$name.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
start=$SECONDS
"build_$name" "$tmp/rootfs"
chmod 755 "$tmp/rootfs"
template_write_json "$tmp" "$name" "$vcpus" "$mem" "$disk" "$(envd_version "$envd")" "$user" "$inputs"
template_replace "$tmp" "$images/$name"
log "template $name: $images/$name ($(du -sh "$images/$name/rootfs" | cut -f1), $((SECONDS - start)) s)"
