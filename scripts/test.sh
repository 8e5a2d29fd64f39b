#!/usr/bin/env bash
# Runs Wrenn's whole test suite: installs what the tests need (runsc, the
# minimal and base templates, the minimal template's ext4 image, the microVM
# guest kernel, QEMU, Chromium and the built dashboard), checks the frontend,
# starts a throw-away PostgreSQL cluster in a temporary directory on a free
# port, runs `go test`, and removes the cluster afterwards whatever happened.
#
# Extra arguments go to `go test` (default: ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

command -v go >/dev/null || die "Go is not installed (see README, Prerequisites)"

# Capsule tests run real gVisor sandboxes: runsc (built once, pinned in the
# Makefile) and the minimal and base templates, built once per content of
# envd and the scripts that build them. Each content has its own directory,
# so that a run from another checkout (another envd) never swaps a template
# under capsules that a run in progress has paused; directories unused for
# a day are removed. The base template's Debian tree is built once per
# content of its recipe into /var/lib/wrenn-test/cache (a few minutes) and
# hard-linked into each such directory (seconds).
make --no-print-directory runsc envd >/dev/null
WRENN_TEST_RUNSC=/usr/local/bin/runsc
image_key=$(cat builds/envd scripts/build-image.sh scripts/lib.sh | sha256sum | cut -d' ' -f1)
WRENN_TEST_IMAGES=/var/lib/wrenn-test/${image_key:0:16}/images
mkdir -p "$WRENN_TEST_IMAGES" /var/lib/wrenn-test/cache /var/lib/wrenn-test/kernels
touch "$WRENN_TEST_IMAGES/.." /var/lib/wrenn-test/cache /var/lib/wrenn-test/kernels
find /var/lib/wrenn-test -mindepth 1 -maxdepth 1 -mmin +1440 -exec rm -rf {} +
for template in minimal base; do
	# build-image.sh keeps a template whose inputs are unchanged.
	WRENN_IMAGE_CACHE=/var/lib/wrenn-test/cache scripts/build-image.sh "$template" "$WRENN_TEST_IMAGES"
done
# The Firecracker driver's guest, booted under QEMU's emulation in a test
# (internal/runtime/firecracker): the minimal template's ext4 image and the
# guest kernel. The kernel is built once per input (a few minutes; the
# unpacked source stays for the next build) into the shared test cache.
if [ ! -f "$WRENN_TEST_IMAGES/minimal.ext4" ] || [ "$WRENN_TEST_IMAGES/minimal.ext4" -ot "$WRENN_TEST_IMAGES/minimal/template.json" ] ||
	[ "$WRENN_TEST_IMAGES/minimal.ext4" -ot scripts/build-ext4.sh ] ||
	[ "$WRENN_TEST_IMAGES/minimal.ext4" -ot internal/runtime/firecracker/disk.go ]; then
	scripts/build-ext4.sh minimal "$WRENN_TEST_IMAGES"
fi
apt_install qemu-system-x86 e2fsprogs util-linux
WRENN_TEST_KERNEL=/var/lib/wrenn-test/kernels/vmlinux
scripts/build-kernel.sh "$(dirname "$WRENN_TEST_KERNEL")"
touch "$(dirname "$WRENN_TEST_KERNEL")"
export WRENN_TEST_RUNSC WRENN_TEST_IMAGES WRENN_TEST_KERNEL
# Screenshots and other artefacts of the tests (the dashboard's browser
# tests put theirs in test-results/dashboard/).
WRENN_TEST_OUTPUT_DIR=${WRENN_TEST_OUTPUT_DIR:-$PWD/test-results}
mkdir -p "$WRENN_TEST_OUTPUT_DIR"
export WRENN_TEST_OUTPUT_DIR

# The dashboard's browser tests (internal/e2e, TestDashboard) drive Debian's
# Chromium against a wrenn-cp with the dashboard built in; they fail without
# these variables. A whole run also type-checks the frontend (svelte-check,
# warnings fail) and runs its unit tests (vitest).
apt_install chromium fonts-dejavu-core
# ip (tests run `ip netns add`) and nft (the leftover check lists tables).
apt_install iproute2 nftables
make --no-print-directory dashboard
export WRENN_TEST_CHROMIUM=/usr/bin/chromium
export WRENN_TEST_FRONTEND=$PWD/frontend
if [ $# -eq 0 ]; then
	log "frontend: svelte-check and unit tests"
	(cd frontend && npm run --silent check && npm test --silent)
fi

tmp=$(mktemp -d /var/tmp/wrenn-test.XXXXXX)
chmod 755 "$tmp"
cleanup() {
	pg_stop "$tmp/pg"
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# free_port only proves the port was free a moment ago: another program can
# take it before PostgreSQL binds, so try a few ports.
WRENN_TEST_DATABASE_URL=""
for _ in 1 2 3; do
	port=$(free_port)
	log "starting throw-away PostgreSQL on 127.0.0.1:$port"
	# fsync off: the cluster is discarded after the run, and it makes the suite faster.
	if WRENN_TEST_DATABASE_URL=$(PG_FSYNC=off pg_start "$tmp/pg" "$port"); then break; fi
	WRENN_TEST_DATABASE_URL=""
done
[ -n "$WRENN_TEST_DATABASE_URL" ] || die "could not start the test PostgreSQL"
export WRENN_TEST_DATABASE_URL

whole=0
if [ $# -eq 0 ]; then
	set -- ./...
	whole=1
fi
# What the host holds before the run, so that what the run leaves is told
# apart from what other software (or an earlier run) has.
host_state >"$tmp/host-before"
run_netns_before=$(run_netns_state)
log "go test $*"
rc=0
go test -count=1 -timeout 25m "$@" || rc=$?
# Tests that measure latency run alone once the rest is done: beside two
# packages of stacks on 2 cores, their one-second rules would measure the
# other tests (they skip without WRENN_TEST_ALONE).
if [ "$whole" = 1 ]; then
	log "go test (alone): TestAbuseStack"
	WRENN_TEST_ALONE=1 go test -count=1 -timeout 5m -run '^TestAbuseStack$' ./internal/api || rc=1
fi
# Tests run `ip netns add` as an operator would; the self-bind of
# /run/netns it makes the first time is undone once every test is done.
restore_run_netns "$run_netns_before" || rc=1
# Another suite running at the same time on this machine (a second
# worktree) has things of its own up: WRENN_TEST_LEFTOVER_CHECK=0 skips this.
if [ "${WRENN_TEST_LEFTOVER_CHECK:-1}" != 0 ]; then
	log "checking that the tests left nothing on the host"
	check_leftovers "$tmp/host-before" || rc=1
fi
exit "$rc"
