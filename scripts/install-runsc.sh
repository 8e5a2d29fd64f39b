#!/usr/bin/env bash
# Builds gVisor's runsc at a pinned version and installs it at
# $RUNSC_BIN (default /usr/local/bin/runsc), unless that binary already works
# and its stamp file records the same version.
#
# Usage: scripts/install-runsc.sh <version>   (the Makefile passes RUNSC_VERSION)
#
# runsc is built from the Go module gvisor.dev/gvisor (its `go` branch, which
# holds generated code and builds with plain `go install`) with CGO_ENABLED=0:
# a cgo build dies at sandbox start on some kernels. It lives outside /tmp
# because runsc mounts its own /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

version=${1:-${RUNSC_VERSION:-}}
[ -n "$version" ] || die "usage: $0 <gvisor version>, e.g. v0.0.0-20260905035102-160fafc42237"
bin=${RUNSC_BIN:-/usr/local/bin/runsc}
stamp=${RUNSC_STAMP:-/usr/local/lib/wrenn/runsc.version}

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1 && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
	exit 0
fi

command -v go >/dev/null || die "Go is not installed (see README, Prerequisites)"
mkdir -p "$(dirname "$bin")" "$(dirname "$stamp")"
# Build next to the target so the final rename stays on one file system.
gobin=$(mktemp -d "$(dirname "$bin")/.runsc-build.XXXXXX")
trap 'rm -rf "$gobin"' EXIT
log "building runsc $version (CGO_ENABLED=0; takes a minute or two)"
start=$SECONDS
CGO_ENABLED=0 GOBIN=$gobin GOFLAGS=-buildvcs=false go install "gvisor.dev/gvisor/runsc@$version"
"$gobin/runsc" --version >/dev/null || die "the built runsc does not run"
mv -f "$gobin/runsc" "$bin"
echo "$version" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
log "installed $bin ($((SECONDS - start)) s)"
