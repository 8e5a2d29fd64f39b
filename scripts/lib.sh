# shellcheck shell=bash
# Shared helpers for Wrenn's scripts: installing what a fresh Debian machine
# lacks and running a private PostgreSQL cluster. Source it; do not run it.

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }
warn() { printf '\033[1;33mwarning:\033[0m %s\n' "$*" >&2; }

apt_updated=""
# apt_install PKG... installs Debian packages that are not installed yet.
apt_install() {
	local missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
	if [ -z "$apt_updated" ]; then
		log "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
		apt_updated=1
	fi
	log "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pg_bindir prints the directory holding initdb/pg_ctl, installing PostgreSQL
# from Debian when it is missing.
pg_bindir() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
	if [ -z "$d" ] || [ ! -x "$d/initdb" ]; then
		apt_install postgresql >&2
		d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
	fi
	[ -x "$d/initdb" ] || die "PostgreSQL's initdb not found after installing postgresql"
	echo "$d"
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	die "no free port found"
}

# pg_owner prints the user that owns the cluster and runs its tools:
# initdb and postgres refuse to run as root, so root uses "postgres".
pg_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
		echo postgres
	else
		id -un
	fi
}

# pg_start DATADIR PORT initialises DATADIR when empty and starts a private
# PostgreSQL on 127.0.0.1:PORT (sockets inside DATADIR), trusting local
# connections only. It prints the admin connection URL.
pg_start() {
	local datadir=$1 port=$2 bindir owner
	bindir=$(pg_bindir)
	owner=$(pg_owner)
	mkdir -p "$datadir"
	chown "$owner" "$datadir"
	chmod 700 "$datadir"
	if [ ! -f "$datadir/PG_VERSION" ]; then
		runuser -u "$owner" -- "$bindir/initdb" -D "$datadir" -U postgres --auth=trust \
			--encoding=UTF8 --locale=C >"$datadir.initdb.log" 2>&1 || { cat "$datadir.initdb.log" >&2; die "initdb failed"; }
	fi
	runuser -u "$owner" -- "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$datadir -c fsync=${PG_FSYNC:-on} -c max_connections=300" \
		start >/dev/null || { tail -n 30 "$datadir/server.log" >&2; die "PostgreSQL did not start"; }
	echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
}

# pg_stop DATADIR stops the cluster in DATADIR if it runs.
pg_stop() {
	local datadir=$1 bindir owner
	[ -f "$datadir/postmaster.pid" ] || return 0
	bindir=$(pg_bindir)
	owner=$(pg_owner)
	runuser -u "$owner" -- "$bindir/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null 2>&1 || true
}

# --- templates (scripts/build-image.sh, scripts/bake-envd.sh) ---

# dir_in_use DIR reports whether a process has the directory DIR open, or as
# its working or root directory. It compares inodes, not paths, because
# runsc sees a capsule's root file system under another name in its own mount
# namespace; runsc's sandbox keeps that directory open while the capsule lives.
dir_in_use() {
	local dir=$1 hit
	hit=$({
		find -L /proc/[0-9]*/fd/ -mindepth 1 -maxdepth 1 -samefile "$dir" -print -quit
		find -L /proc/[0-9]*/root /proc/[0-9]*/cwd -maxdepth 0 -samefile "$dir" -print -quit
	} 2>/dev/null || true)
	[ -n "$hit" ]
}

# template_replace NEW DEST puts the finished template directory NEW at DEST:
# an existing DEST is renamed aside first (both renames stay inside one
# directory, so DEST is never half-written), then removed unless a running
# capsule still uses it. Leftovers of earlier replacements are removed once
# nothing uses them.
template_replace() {
	local new=$1 dest=$2 parent base old
	parent=$(dirname "$dest")
	base=$(basename "$dest")
	if [ -e "$dest" ]; then
		old="$parent/.$base.old.$(date +%s%N)"
		mv -T "$dest" "$old"
	fi
	mv -T "$new" "$dest"
	for old in "$parent/.$base.old."*; do
		[ -d "$old" ] || continue
		if dir_in_use "$old" || dir_in_use "$old/rootfs"; then
			log "keeping $old: still in use (removed by a later build)"
		else
			rm -rf "$old"
		fi
	done
}

# envd_version ENVD prints the version the envd binary reports.
envd_version() {
	local v
	v=$("$1" --version 2>/dev/null) || die "$1 --version failed"
	[ -n "$v" ] || die "$1 --version printed nothing"
	echo "$v"
}

# template_write_json DIR NAME VCPUS MEMORY_MB DISK_MB ENVD_VERSION
# [DEFAULT_USER [INPUTS]] writes DIR/template.json describing the root file
# system DIR/rootfs. DEFAULT_USER (none: root) is the user of exec, PTY and
# file calls that name none; INPUTS is the digest of what the template was
# built from (scripts/build-image.sh skips a build whose inputs match).
template_write_json() {
	local dir=$1 name=$2 vcpus=$3 mem=$4 disk=$5 envd=$6 user=${7:-} inputs=${8:-} size extra=""
	size=$(du -sb "$dir/rootfs" | cut -f1)
	[ -n "$user" ] && extra+=$'\n'"  \"default_user\": \"$user\","
	[ -n "$inputs" ] && extra+=$'\n'"  \"inputs\": \"$inputs\","
	cat >"$dir/template.json" <<JSON
{
  "name": "$name",
  "size_bytes": $size,
  "default_vcpus": $vcpus,
  "default_memory_mb": $mem,
  "default_disk_mb": $disk,$extra
  "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "envd_version": "$envd"
}
JSON
}

# debian_mirror prints the Debian mirror this machine's apt uses
# (deb.debian.org when apt names none).
debian_mirror() {
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		sed 's/#.*//' | grep -Eo '(https?|file)://[^ ]*/debian/?( |$)' | grep -v -- '-security' | head -n1 | tr -d ' ' || true)
	echo "${m:-http://deb.debian.org/debian}"
}

# debian_security_mirror prints the Debian security mirror this machine's
# apt uses (none when apt names none).
debian_security_mirror() {
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		sed 's/#.*//' | grep -Eo '(https?|file)://[^ ]*/debian-security/?( |$)' | head -n1 | tr -d ' ' || true
}

# host_state prints, one "kind name" line each and sorted, what capsules
# and their tests can leave on a host: network namespaces (named in
# /run/netns, and nsfs mounts anywhere), veths, nftables tables, runsc
# processes of test roots, test WRENN_DIRs and what is mounted in them, and
# a mount of /run/netns.
# Network names are those of test agents (prefix t????) and of the default
# prefix (wr), which no test may use.
host_state() {
	local names='^(t[a-z0-9][a-z0-9][a-z0-9][a-z0-9]|wr)[-_]'
	{
		for f in /run/netns/*; do
			[ -e "$f" ] && echo "netns /run/netns/${f##*/}"
		done
		awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break; if ($(i + 1) == "nsfs") print "netns-mount " $5 }' /proc/self/mountinfo
		ip -o link show type veth 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print "veth " $2 }' |
			awk -v re="$names" '$2 ~ re'
		nft list tables 2>/dev/null | awk -v re="$names" '$3 ~ re { print "nft-table " $2 " " $3 }'
		pgrep -a -f 'runsc' 2>/dev/null | grep -E -- '/var/tmp/wrenn-test-|/tmp/Test' | sed 's/^/runsc-process /' || true
		for d in /var/tmp/wrenn-test-*; do
			[ -e "$d" ] && echo "wrenn-dir $d"
		done
		# /run/netns is iproute2's: the first `ip netns add` bind-mounts it
		# onto itself (see restore_run_netns).
		awk '$5 ~ "^/var/tmp/wrenn-test-" || $5 ~ "^/tmp/Test" || $5 == "/run/netns" { print "mount " $5 }' /proc/self/mountinfo
	} | sort -u
}

# check_leftovers BEFORE fails, listing them, when the host holds anything
# host_state reports that is not in the file BEFORE (host_state's output
# from before the run). Processes get a few seconds to finish exiting.
check_leftovers() {
	local before=$1 left
	for _ in $(seq 20); do
		left=$(host_state | comm -13 "$before" -)
		[ -z "$left" ] && return 0
		sleep 0.5
	done
	printf '\033[1;31merror:\033[0m the tests left on this host:\n%s\n' "$left" >&2
	return 1
}

# run_netns_state prints what /run/netns is: "absent", "dir" or "mount".
run_netns_state() {
	if [ ! -e /run/netns ]; then
		echo absent
	elif awk '$5 == "/run/netns" { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		echo mount
	else
		echo dir
	fi
}

# restore_run_netns BEFORE puts /run/netns back the way run_netns_state
# printed BEFORE, if the tests' `ip netns add` (which bind-mounts it onto
# itself the first time) changed it and no namespace is left in it.
restore_run_netns() {
	local before=$1
	[ "$(run_netns_state)" = "$before" ] && return 0
	[ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ] || return 0
	if [ "$before" != mount ]; then
		while awk '$5 == "/run/netns" { found = 1 } END { exit !found }' /proc/self/mountinfo; do
			umount -l /run/netns || return 1
		done
	fi
	if [ "$before" = absent ]; then
		rmdir /run/netns
	fi
}
