#!/usr/bin/env bash
# `make dev`: runs Wrenn on this machine for development. Installs what is
# missing, builds the binaries, runsc and the minimal and base templates (and
# the guest kernel on a Firecracker host), starts a
# private PostgreSQL under $WRENN_DEV_DIR/postgres (unless DATABASE_URL is
# set), migrates, starts the control plane, makes sure an admin account and an
# API key exist, registers and starts a local agent, and prints how to use
# it. Ctrl-C stops everything this script started and removes every capsule,
# with its processes, namespace, veth and firewall entries.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# Development state (database, admin password, logs) lives apart from the
# agent's WRENN_DIR, which stays private to root.
DEV_DIR=${WRENN_DEV_DIR:-/var/lib/wrenn-dev}
WRENN_CP_LISTEN_ADDR=${WRENN_CP_LISTEN_ADDR:-127.0.0.1:8000}
PG_PORT=${WRENN_DEV_PG_PORT:-54329}
WRENN_DIR=${WRENN_DIR:-/var/lib/wrenn}
# The dev agent listens on loopback (scripts/dev-agent.sh), which the
# control plane refuses as an agent address unless told otherwise.
WRENN_AGENT_ALLOWED_CIDRS=${WRENN_AGENT_ALLOWED_CIDRS:-127.0.0.0/8,::1}
export WRENN_CP_LISTEN_ADDR WRENN_DIR WRENN_AGENT_ALLOWED_CIDRS

command -v go >/dev/null || die "Go is not installed (see README, Prerequisites)"
apt_install curl jq ca-certificates
mkdir -p "$DEV_DIR"
chmod 711 "$DEV_DIR" # PostgreSQL's own user must reach $DEV_DIR/postgres

cp_pid=""
agent_pid=""
url=""
started_pg=""
cleanup() {
	# Ignore further signals: a second Ctrl-C, or the terminal closing, must
	# not cut the clean-up short and leave capsules behind.
	trap '' EXIT INT TERM HUP
	log "stopping"
	if [ -n "$agent_pid" ]; then
		kill -TERM "$agent_pid" 2>/dev/null || true
		wait "$agent_pid" 2>/dev/null || true
		# An agent keeps its capsules across restarts; a dev session leaves
		# nothing behind, so remove them, and say so in the database.
		log "removing capsules"
		WRENN_CP_URL=$url builds/wrenn-agent remove-capsules 2>>"$DEV_DIR/agent.log" || warn "could not remove every capsule (see $DEV_DIR/agent.log)"
		if [ -n "${DATABASE_URL:-}" ]; then
			"$(pg_bindir)/psql" -q "$DATABASE_URL" -c \
				"UPDATE capsules SET status = 'stopped', stopped_at = now(), updated_at = now() WHERE status NOT IN ('stopped', 'error')" \
				>/dev/null 2>&1 || true
		fi
	fi
	if [ -n "$cp_pid" ]; then
		kill -TERM "$cp_pid" 2>/dev/null || true
		wait "$cp_pid" 2>/dev/null || true
	fi
	[ -n "$started_pg" ] && pg_stop "$DEV_DIR/postgres"
	exit 0
}
trap cleanup EXIT INT TERM HUP

if [ -z "${DATABASE_URL:-}" ]; then
	if [ -f "$DEV_DIR/postgres/postmaster.pid" ]; then
		log "PostgreSQL already running in $DEV_DIR/postgres"
	else
		log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data in $DEV_DIR/postgres)"
		pg_start "$DEV_DIR/postgres" "$PG_PORT" >/dev/null
		started_pg=1
	fi
	bindir=$(pg_bindir)
	if ! "$bindir/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='wrenn'" | grep -q 1; then
		"$bindir/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE wrenn" >/dev/null
	fi
	DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/wrenn?sslmode=disable"
fi
export DATABASE_URL

if [ -z "${WRENN_JWT_SECRET:-}" ]; then
	[ -s "$DEV_DIR/jwt-secret" ] || (umask 077 && head -c 48 /dev/urandom | base64 -w0 >"$DEV_DIR/jwt-secret")
	WRENN_JWT_SECRET=$(cat "$DEV_DIR/jwt-secret")
fi
export WRENN_JWT_SECRET

# The bootstrap token makes the dev admin account platform admin (once);
# kept in $DEV_DIR so that the signup below can present it.
if [ -z "${WRENN_BOOTSTRAP_TOKEN:-}" ]; then
	[ -s "$DEV_DIR/bootstrap-token" ] || (umask 077 && head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' >"$DEV_DIR/bootstrap-token")
	WRENN_BOOTSTRAP_TOKEN=$(cat "$DEV_DIR/bootstrap-token")
fi
export WRENN_BOOTSTRAP_TOKEN

log "building binaries, runsc and the minimal and base templates (the first time: ~1 min for runsc, a few minutes for base)"
make --no-print-directory build runsc images >/dev/null
# On a host where the agent runs Firecracker microVMs (WRENN_RUNTIME, or auto
# with hardware virtualization and the binary), it also needs the guest kernel.
if [ "$(builds/wrenn-agent runtime)" = firecracker ]; then
	log "building the Firecracker guest kernel (the first time: about 7 min on 2 cores)"
	make --no-print-directory kernel >/dev/null
fi

log "migrating"
builds/wrenn-cp migrate up

log "starting wrenn-cp on $WRENN_CP_LISTEN_ADDR (log: $DEV_DIR/cp.log)"
builds/wrenn-cp >"$DEV_DIR/cp.log" 2>&1 &
cp_pid=$!
url="http://$WRENN_CP_LISTEN_ADDR"
url=${url/http:\/\/:/http:\/\/127.0.0.1:}
for _ in $(seq 1 100); do
	curl -fsS "$url/health" >/dev/null 2>&1 && break
	kill -0 "$cp_pid" 2>/dev/null || { tail -n 30 "$DEV_DIR/cp.log" >&2; die "wrenn-cp exited"; }
	sleep 0.1
done
curl -fsS "$url/health" >/dev/null || die "wrenn-cp did not become healthy"
echo "$url" >"$DEV_DIR/cp-url"

# The admin account: created on the first run, its credentials kept in $DEV_DIR.
admin_email=admin@wrenn.local
if [ ! -s "$DEV_DIR/admin-password" ]; then
	password=$(head -c 18 /dev/urandom | base64 -w0 | tr '+/' '-_')
	code=$(curl -sS -o "$DEV_DIR/signup.json" -w '%{http_code}' -X POST "$url/v1/auth/signup" \
		-H 'Content-Type: application/json' \
		-d "$(jq -n --arg e "$admin_email" --arg p "$password" --arg b "$WRENN_BOOTSTRAP_TOKEN" \
			'{email:$e,password:$p,name:"Admin",bootstrap_token:$b}')")
	case $code in
	201) (umask 077 && echo "$password" >"$DEV_DIR/admin-password") ;;
	409) die "an account $admin_email exists but its password is not in $DEV_DIR/admin-password" ;;
	403) cat "$DEV_DIR/signup.json" >&2; die "signup refused: a platform admin exists already in this database (remove $DEV_DIR/postgres to start afresh)" ;;
	*) cat "$DEV_DIR/signup.json" >&2; die "signup failed ($code)" ;;
	esac
	rm -f "$DEV_DIR/signup.json"
fi
password=$(cat "$DEV_DIR/admin-password")
token=$(curl -fsS -X POST "$url/v1/auth/login" -H 'Content-Type: application/json' \
	-d "$(jq -n --arg e "$admin_email" --arg p "$password" '{email:$e,password:$p}')" | jq -r .token)
[ -n "$token" ] && [ "$token" != null ] || die "cannot log in as $admin_email"

# An API key with every scope (platform:admin too, for development), created
# once and reused while it works.
if [ ! -s "$DEV_DIR/api-key" ] || ! curl -fsS "$url/v1/me" -H "X-API-Key: $(cat "$DEV_DIR/api-key")" >/dev/null 2>&1; then
	(umask 077 && curl -fsS -X POST "$url/v1/api-keys" -H "Authorization: Bearer $token" \
		-H 'Content-Type: application/json' \
		-d '{"name":"dev","scopes":["capsules","exec","files","snapshots","templates","hosts","team","keys:manage","platform:admin"]}' |
		jq -r .key >"$DEV_DIR/api-key")
fi

key=$(cat "$DEV_DIR/api-key")

log "starting wrenn-agent (log: $DEV_DIR/agent.log)"
WRENN_CP_URL=$url scripts/dev-agent.sh >>"$DEV_DIR/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 300); do
	online=$(curl -fsS "$url/v1/hosts" -H "X-API-Key: $key" |
		jq '[.[] | select(.status == "online" and (.templates | index("minimal")))] | length')
	[ "$online" -gt 0 ] && break
	kill -0 "$agent_pid" 2>/dev/null || { tail -n 30 "$DEV_DIR/agent.log" >&2; die "wrenn-agent exited"; }
	sleep 0.1
done
[ "$online" -gt 0 ] || { tail -n 30 "$DEV_DIR/agent.log" >&2; die "the agent did not come online"; }

cat <<MSG

  Wrenn is running.

  Dashboard:      $url/   (sign in with the admin account)
  API:            $url/v1
  Admin account:  $admin_email / $password (platform admin, through the bootstrap token in $DEV_DIR/bootstrap-token)
  API key:        $key

  Templates:      base    Debian 12, bash, Python 3 (pip, venv), Node.js (npm), git, curl, sudo;
                          runs as \`user\` (uid 1000, passwordless sudo; "user": "root" per call)
                  minimal BusyBox as root, the fastest start

  Create a capsule, run a command in it, pause and resume it:

    export WRENN_API_KEY=$key
    id=\$(curl -fsS -X POST $url/v1/capsules -H "X-API-Key: \$WRENN_API_KEY" \\
          -H 'Content-Type: application/json' -d '{"template": "base"}' | jq -r .id)
    curl -fsS -X POST $url/v1/capsules/\$id/exec -H "X-API-Key: \$WRENN_API_KEY" \\
          -H 'Content-Type: application/json' -d '{"cmd": "python3 -c \\"print(6*7)\\"; id -un"}'
    curl -fsS -X POST $url/v1/capsules/\$id/pause -H "X-API-Key: \$WRENN_API_KEY"
    curl -fsS -X POST $url/v1/capsules/\$id/resume -H "X-API-Key: \$WRENN_API_KEY"
    curl -fsS -X DELETE $url/v1/capsules/\$id -H "X-API-Key: \$WRENN_API_KEY"

  Logs: $DEV_DIR/cp.log, $DEV_DIR/agent.log — Ctrl-C stops everything and removes all capsules.

MSG
wait "$cp_pid"
