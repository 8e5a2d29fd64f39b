#!/usr/bin/env bash
# Builds the microVM guest kernel: an uncompressed vmlinux that Firecracker
# (and QEMU's microvm machine, in the emulated test) boots, from Debian's
# kernel source package with `make tinyconfig` plus
# scripts/kernel/microvm.config (virtio-mmio block and net, ext4, the network
# stack with ip= autoconfiguration, serial console, no modules).
#
# Usage: scripts/build-kernel.sh [<kernels-dir>]
#   kernels-dir defaults to $WRENN_DIR/kernels (WRENN_DIR: /var/lib/wrenn).
#   Writes <kernels-dir>/vmlinux, vmlinux.config (the full .config) and
#   vmlinux.inputs (what it was built from).
#
# Pinned and cached by its inputs: the source is the Debian package
# KERNEL_PACKAGE (linux-source-6.1, the kernel series of Debian 12) and the
# build is skipped when vmlinux.inputs already names the same package
# version, config fragment and script. KERNEL_VERSION=<debian version>
# refuses any other version of the package. The unpacked source is kept in
# <kernels-dir>/.build for the next build of the same version, and a build
# that was stopped goes on where it was. KERNEL_JOBS sets make's -j (default:
# the number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

kernels=${1:-${WRENN_DIR:-/var/lib/wrenn}/kernels}
pkg=${KERNEL_PACKAGE:-linux-source-6.1}
fragment=scripts/kernel/microvm.config
[ "$(id -u)" -eq 0 ] || die "building the kernel installs Debian packages: run as root"

apt_install "$pkg" build-essential bc bison flex libelf-dev libssl-dev xz-utils
version=$(dpkg-query -W -f='${Version}' "$pkg")
if [ -n "${KERNEL_VERSION:-}" ] && [ "$version" != "$KERNEL_VERSION" ]; then
	die "$pkg is $version, KERNEL_VERSION pins $KERNEL_VERSION"
fi
tarball=$(dpkg -L "$pkg" | grep -E '/usr/src/linux-source-[0-9.]+\.tar\.xz$' | head -n1)
[ -f "$tarball" ] || die "$pkg installed no source tarball"

inputs=$(printf '%s %s\n%s\n%s\n' "$pkg" "$version" "$(sha256sum "$fragment" | cut -d' ' -f1)" \
	"$(sha256sum "$0" | cut -d' ' -f1)")
mkdir -p "$kernels"
exec 9>"$kernels/.vmlinux.lock"
flock 9
if [ -f "$kernels/vmlinux" ] && [ "$(cat "$kernels/vmlinux.inputs" 2>/dev/null)" = "$inputs" ]; then
	log "kernel: $kernels/vmlinux is up to date ($pkg $version)"
	exit 0
fi

start=$SECONDS
build="$kernels/.build"
src="$build/$(basename "$tarball" .tar.xz)"
if [ "$(cat "$build/source.version" 2>/dev/null)" != "$version" ]; then
	log "kernel: unpacking $tarball ($pkg $version)"
	rm -rf "$build"
	mkdir -p "$build"
	tar -C "$build" -xJf "$tarball"
	echo "$version" >"$build/source.version"
fi
[ -d "$src" ] || die "no $src after unpacking $tarball"

log "kernel: configuring (tinyconfig + $fragment)"
make -C "$src" -s ARCH=x86_64 tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null
make -C "$src" -s ARCH=x86_64 olddefconfig >/dev/null
# Every option of the fragment must have survived olddefconfig: one whose
# dependencies are missing is dropped without a word otherwise.
missing=""
while IFS= read -r line; do
	case $line in '' | '#'*) continue ;; esac
	opt=${line%%=*} want=${line#*=}
	if [ "$want" = n ]; then
		grep -qx "$opt=y" "$src/.config" && missing+=" $line"
	else
		grep -qx "$line" "$src/.config" || missing+=" $line"
	fi
done <"$fragment"
[ -z "$missing" ] || die "kernel config lost:$missing (check their dependencies in $src/.config)"

jobs=${KERNEL_JOBS:-$(nproc)}
log "kernel: building vmlinux with $jobs jobs (a few minutes)"
make -C "$src" -s ARCH=x86_64 -j"$jobs" vmlinux >"$build/build.log" 2>&1 ||
	{ tail -n 40 "$build/build.log" >&2; die "kernel build failed (log above, whole log in $build/build.log)"; }
install -m 0644 "$src/vmlinux" "$kernels/.vmlinux.new"
install -m 0644 "$src/.config" "$kernels/vmlinux.config"
mv -f "$kernels/.vmlinux.new" "$kernels/vmlinux"
echo "$inputs" >"$kernels/vmlinux.inputs"
log "kernel: $kernels/vmlinux ($(du -h "$kernels/vmlinux" | cut -f1), $pkg $version, $((SECONDS - start)) s)"
