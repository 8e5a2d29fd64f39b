#!/usr/bin/env bash
# `make dev-agent`: registers a local wrenn-agent with the control plane that
# `make dev` runs (only the first time: the credential is kept in
# $WRENN_DIR/host-token) and runs it in the foreground. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
DEV_DIR=${WRENN_DEV_DIR:-/var/lib/wrenn-dev}
WRENN_HOST_LISTEN_ADDR=${WRENN_HOST_LISTEN_ADDR:-127.0.0.1:50051}
WRENN_CP_URL=${WRENN_CP_URL:-$(cat "$DEV_DIR/cp-url" 2>/dev/null || echo http://127.0.0.1:8000)}
export WRENN_DIR WRENN_HOST_LISTEN_ADDR WRENN_CP_URL

apt_install curl jq ca-certificates
curl -fsS "$WRENN_CP_URL/health" >/dev/null 2>&1 || die "no control plane at $WRENN_CP_URL: start it with \`make dev\` first"
make --no-print-directory wrenn-agent >/dev/null

address=$WRENN_HOST_LISTEN_ADDR
case $address in :*) address=127.0.0.1$address ;; esac

args=()
if [ ! -s "$WRENN_DIR/host-token" ]; then
	[ -s "$DEV_DIR/admin-password" ] || die "no admin credentials in $DEV_DIR: run \`make dev\` first"
	token=$(curl -fsS -X POST "$WRENN_CP_URL/v1/auth/login" -H 'Content-Type: application/json' \
		-d "$(jq -n --arg p "$(cat "$DEV_DIR/admin-password")" '{email:"admin@wrenn.local",password:$p}')" | jq -r .token)
	reg=$(curl -fsS -X POST "$WRENN_CP_URL/v1/hosts" -H "Authorization: Bearer $token" \
		-H 'Content-Type: application/json' -d '{"type":"regular"}' | jq -r .registration_token)
	[ -n "$reg" ] && [ "$reg" != null ] || die "could not create a host"
	log "registering this machine as a host ($address)"
	args=(--register "$reg" --address "$address")
else
	log "host already registered (credential in $WRENN_DIR/host-token)"
fi
exec builds/wrenn-agent "${args[@]}"
