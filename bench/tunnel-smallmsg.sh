#!/bin/bash
# Small request/response traffic through the tunnels: real Redis
# (redis-benchmark -c 50 -t set,get) and real PostgreSQL (pgbench -S)
# through an hmacauth client -> server pair in auth and in sealed mode, a
# spiped -e -> spiped -d pair and no tunnel at all (direct), side by side
# in the same run, all on 127.0.0.1. For each it prints the rate (requests
# or transactions per second) and the CPU time (user + system, from
# /proc/PID/stat) the tunnel's two processes spend per request, then the
# medians and the per-round ratios to spiped.
#
# Usage: bench/tunnel-smallmsg.sh [-rounds N] [-base REV] [-procs N] [-no-status]
#
#   -rounds N   rounds (default 5); every round runs every chain, each
#               round in a different order, so that the machine's load
#               weighs on all of them alike
#   -base REV   also run the hmacauth command built from git revision REV
#               (e.g. main), as chains auth@base and sealed@base
#   -procs N    also run the auth and sealed chains with GOMAXPROCS=N in
#               both tunnel processes, as chains auth-pN and sealed-pN
#   -no-status  leave out the auth+status chain: auth mode with -status on
#               both tunnel ends, /metrics and /_status of both scraped
#               every second while the load runs
#
# Environment: REDIS_N (requests per redis-benchmark test, default
# 100000), REDIS_C (clients, 50), PG_T (pgbench seconds, 10), PG_C and
# PG_J (pgbench clients and threads, 8 and 2), PG_SCALE (pgbench -i scale,
# 10), OUT (raw results, default a temporary file; one line per
# measurement: round workload chain rate cpu-us-per-request).
#
# Installs redis-server, redis-tools, postgresql and spiped with apt-get
# where missing (needs root). PostgreSQL runs as the postgres user when
# run as root (it refuses root), in a temporary cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

rounds=5 base="" procs="" status=1
while [ $# -gt 0 ]; do
	case $1 in
	-rounds) rounds=$2; shift 2 ;;
	-base) base=$2; shift 2 ;;
	-procs) procs=$2; shift 2 ;;
	-no-status) status=0; shift ;;
	*) echo "usage: $0 [-rounds N] [-base REV] [-procs N] [-no-status]" >&2; exit 2 ;;
	esac
done
REDIS_N=${REDIS_N:-100000} REDIS_C=${REDIS_C:-50}
PG_T=${PG_T:-10} PG_C=${PG_C:-8} PG_J=${PG_J:-2} PG_SCALE=${PG_SCALE:-10}

# --- tools ---------------------------------------------------------------
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
missing=""
command -v redis-server >/dev/null || missing="$missing redis-server"
command -v redis-benchmark >/dev/null || missing="$missing redis-tools"
command -v spiped >/dev/null || missing="$missing spiped"
{ [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] && command -v pgbench >/dev/null; } || missing="$missing postgresql"
command -v curl >/dev/null || { [ $status = 0 ] || missing="$missing curl"; }
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		echo "missing:$missing; install them (Debian:$missing) or run as root with apt-get" >&2
		exit 1
	fi
	echo "installing$missing..." >&2
	apt-get update >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y $missing >/dev/null
	pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

tmp=$(mktemp -d /tmp/tunnel-smallmsg.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ -f "$tmp/pg/data/postmaster.pid" ]; then
		runpg "$pgbin/pg_ctl" -D "$tmp/pg/data" -m immediate stop >/dev/null 2>&1 || true
	fi
	[ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE

# runpg runs a PostgreSQL server command, as postgres when we are root.
runpg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# port sets variable $1 to a loopback TCP port nothing listens on.
next_port=$((20000 + RANDOM % 20000))
port() {
	while ss -Htln "sport = :$next_port" | grep -q .; do next_port=$((next_port + 1)); done
	printf -v "$1" %d $next_port
	next_port=$((next_port + 1))
}

# wait_port waits until something accepts connections on 127.0.0.1:$1.
wait_port() {
	for _ in $(seq 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	exit 1
}

# bg starts a process in the background, logging to $tmp/NAME.log, and
# sets $! as bg_pid.
bg() {
	local name=$1; shift
	"$@" >"$tmp/$name.log" 2>&1 &
	bg_pid=$!
	pids+=("$bg_pid")
}

# --- builds --------------------------------------------------------------
echo "building hmacauth ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +changes))..." >&2
(cd "$repo" && go build -o "$tmp/hmacauth" ./cmd/hmacauth)
if [ -n "$base" ]; then
	echo "building hmacauth at $base ($(git rev-parse --short "$base"))..." >&2
	mkdir "$tmp/base-src"
	git archive "$base" | tar -x -C "$tmp/base-src"
	(cd "$tmp/base-src" && go build -o "$tmp/hmacauth-base" ./cmd/hmacauth)
fi
"$tmp/hmacauth" keygen -o "$tmp/hmacauth.keys" 2>/dev/null
head -c 32 /dev/urandom >"$tmp/spiped.key"

# --- targets -------------------------------------------------------------
port redis_port
bg redis redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no
wait_port "$redis_port"

port pg_port
mkdir -p "$tmp/pg"
[ "$(id -u)" = 0 ] && chown postgres "$tmp/pg"
runpg "$pgbin/initdb" -D "$tmp/pg/data" -A trust -U postgres --no-sync >"$tmp/initdb.log" 2>&1
runpg "$pgbin/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/log" -w \
	-o "-p $pg_port -k $tmp/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=100" \
	start >/dev/null
pgbench -i -q -s "$PG_SCALE" -h 127.0.0.1 -p "$pg_port" -U postgres postgres >"$tmp/pgbench-init.log" 2>&1

# --- chains --------------------------------------------------------------
# Each chain has an entry port per target and the pids of its processes.
declare -A entry procs
chains=(direct spiped auth sealed)
entry[direct,redis]=$redis_port entry[direct,pg]=$pg_port procs[direct]=""

start_spiped() { # target-name target-port
	local d e
	port d; port e
	bg "spiped-d-$1" spiped -d -F -s "[127.0.0.1]:$d" -t "[127.0.0.1]:$2" -k "$tmp/spiped.key"
	procs[spiped]+=" $bg_pid"
	wait_port "$d"
	bg "spiped-e-$1" spiped -e -F -s "[127.0.0.1]:$e" -t "[127.0.0.1]:$d" -k "$tmp/spiped.key"
	procs[spiped]+=" $bg_pid"
	wait_port "$e"
	entry[spiped,$1]=$e
}

start_hmacauth() { # chain binary target-name target-port flags...
	local ch=$1 bin=$2 name=$3 tport=$4 s c st1="" st2="" env=()
	shift 4
	case $ch in
	*-p[0-9]*) env=(env "GOMAXPROCS=${ch##*-p}") ;; # env execs the command: same pid
	esac
	port s; port c
	if [ "$ch" = auth+status ]; then
		port st1; port st2
		status_ports+=" $st1 $st2"
	fi
	bg "$ch-server-$name" "${env[@]}" "$bin" server -listen "127.0.0.1:$s" -target "127.0.0.1:$tport" \
		-keys "$tmp/hmacauth.keys" -log-level warn ${st1:+-status 127.0.0.1:$st1} "$@"
	procs[$ch]+=" $bg_pid"
	wait_port "$s"
	bg "$ch-client-$name" "${env[@]}" "$bin" client -listen "127.0.0.1:$c" -target "127.0.0.1:$s" \
		-keys "$tmp/hmacauth.keys" -log-level warn ${st2:+-status 127.0.0.1:$st2} "$@"
	procs[$ch]+=" $bg_pid"
	wait_port "$c"
	entry[$ch,$name]=$c
}

status_ports=""
for t in redis:$redis_port pg:$pg_port; do
	name=${t%%:*} tport=${t#*:}
	start_spiped "$name" "$tport"
	start_hmacauth auth "$tmp/hmacauth" "$name" "$tport" -mode auth
	start_hmacauth sealed "$tmp/hmacauth" "$name" "$tport" -mode sealed
	if [ $status = 1 ]; then
		start_hmacauth auth+status "$tmp/hmacauth" "$name" "$tport" -mode auth
	fi
	if [ -n "$procs" ]; then
		start_hmacauth "auth-p$procs" "$tmp/hmacauth" "$name" "$tport" -mode auth
		start_hmacauth "sealed-p$procs" "$tmp/hmacauth" "$name" "$tport" -mode sealed
	fi
	if [ -n "$base" ]; then
		start_hmacauth auth@base "$tmp/hmacauth-base" "$name" "$tport" -mode auth
		start_hmacauth sealed@base "$tmp/hmacauth-base" "$name" "$tport" -mode sealed
	fi
done
[ $status = 1 ] && chains+=(auth+status)
[ -n "$procs" ] && chains+=("auth-p$procs" "sealed-p$procs")
[ -n "$base" ] && chains+=(auth@base sealed@base)

# --- measurement ---------------------------------------------------------
hz=$(getconf CLK_TCK)
# cpu_ticks prints the user + system clock ticks the processes used so far.
cpu_ticks() {
	local total=0 p
	for p in "$@"; do
		# Fields 14 and 15 (utime, stime) after the "(comm)" field.
		total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
	done
	echo $total
}

# scrape fetches /metrics and /_status of every status port once a second.
scrape() {
	while :; do
		for p in $status_ports; do
			curl -s -o /dev/null "http://127.0.0.1:$p/metrics" || true
			curl -s -o /dev/null "http://127.0.0.1:$p/_status" || true
		done
		sleep 1
	done
}

# measure chain workload: prints "rate cpu-us-per-request".
measure() {
	local ch=$1 w=$2 e=${entry[$1,$2]} t0 t1 n rate scraper=""
	local ps=${procs[$ch]}
	if [ "$ch" = auth+status ]; then
		scrape &
		scraper=$!
	fi
	# shellcheck disable=SC2086
	t0=$(cpu_ticks $ps)
	case $w in
	redis)
		out=$(redis-benchmark -h 127.0.0.1 -p "$e" -c "$REDIS_C" -n "$REDIS_N" -t set,get --csv 2>/dev/null)
		n=$((2 * REDIS_N))
		# Both tests' rates, combined as requests over total time.
		rate=$(echo "$out" | awk -F'"' -v n="$REDIS_N" '$2 == "SET" || $2 == "GET" { s += n / $4; k++ } END { if (k == 2) printf "%.0f", 2 * n / s }')
		;;
	pg)
		out=$(pgbench -S -n -T "$PG_T" -c "$PG_C" -j "$PG_J" -h 127.0.0.1 -p "$e" -U postgres postgres 2>&1)
		n=$(echo "$out" | awk -F': ' '/number of transactions actually processed/ { split($2, a, "/"); print a[1] }')
		rate=$(echo "$out" | awk '/^tps = / { printf "%.0f", $3 }')
		;;
	esac
	# shellcheck disable=SC2086
	t1=$(cpu_ticks $ps)
	[ -n "$scraper" ] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
	if [ -z "$rate" ] || [ -z "$n" ] || [ "$n" = 0 ]; then
		echo "$ch $w failed:" >&2
		echo "$out" >&2
		exit 1
	fi
	if [ -z "$ps" ]; then
		echo "$rate -"
	else
		awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$n" -v r="$rate" 'BEGIN { printf "%s %.1f\n", r, d * 1e6 / hz / n }'
	fi
}

out=${OUT:-$tmp/results}
: >"$out"
echo "chains: ${chains[*]}; $rounds rounds; redis-benchmark -c $REDIS_C -n $REDIS_N -t set,get; pgbench -S -c $PG_C -j $PG_J -T $PG_T (scale $PG_SCALE)" >&2
nch=${#chains[@]}
for r in $(seq "$rounds"); do
	for i in $(seq 0 $((nch - 1))); do
		ch=${chains[$(((i + r) % nch))]}
		for w in redis pg; do
			res=$(measure "$ch" "$w")
			echo "$r $w $ch $res" | tee -a "$out" >&2
		done
	done
done

# --- summary -------------------------------------------------------------
# median prints the median of the numbers on stdin with format $1, or "-"
# if there are none.
median() {
	{ grep -v '^-$' || true; } | sort -g | awk -v f="$1" '{ a[NR] = $1 }
		END { if (NR == 0) print "-"; else printf f "\n", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# spread prints "median [min-max]" of the ratios on stdin, or "-".
spread() {
	local v
	v=$(sort -g)
	if [ -z "$v" ]; then echo -; return; fi
	printf '%s [%.2f-%.2f]' "$(echo "$v" | median %.2f)" "$(echo "$v" | head -1)" "$(echo "$v" | tail -1)"
}

echo
echo "Medians of $rounds rounds; ratios to spiped are per round: median [min-max]."
echo "rate: redis requests/s (SET and GET together) or pgbench transactions/s;"
echo "cpu: user + system CPU of the tunnel's two processes per request, in us."
for w in redis pg; do
	echo
	printf '%-12s %10s %9s  %-22s %-22s\n' "$w" rate cpu "rate / spiped" "cpu / spiped"
	for ch in "${chains[@]}"; do
		rate=$(awk -v w=$w -v c="$ch" '$2 == w && $3 == c { print $4 }' "$out" | median %.0f)
		cpu=$(awk -v w=$w -v c="$ch" '$2 == w && $3 == c { print $5 }' "$out" | median %.1f)
		rr=$(awk -v w=$w -v c="$ch" '$2 == w && $3 == c { r[$1] = $4 } $2 == w && $3 == "spiped" { s[$1] = $4 }
			END { for (k in r) if (k in s) printf "%.2f\n", r[k] / s[k] }' "$out" | spread)
		cr=$(awk -v w=$w -v c="$ch" '$2 == w && $3 == c { r[$1] = $5 } $2 == w && $3 == "spiped" { s[$1] = $5 }
			END { for (k in r) if (k in s && r[k] != "-" && s[k] > 0) printf "%.2f\n", r[k] / s[k] }' "$out" | spread)
		printf '%-12s %10s %9s  %-22s %-22s\n' "$ch" "$rate" "$cpu" "$rr" "$cr"
	done
done

if [ -n "$base" ]; then
	echo
	echo "This build against $base, per round: median [min-max]."
	for w in redis pg; do
		for m in auth sealed; do
			rr=$(awk -v w=$w -v c=$m -v b="$m@base" '$2 == w && $3 == c { r[$1] = $4 } $2 == w && $3 == b { s[$1] = $4 }
				END { for (k in r) if (k in s) printf "%.2f\n", r[k] / s[k] }' "$out" | spread)
			cr=$(awk -v w=$w -v c=$m -v b="$m@base" '$2 == w && $3 == c { r[$1] = $5 } $2 == w && $3 == b { s[$1] = $5 }
				END { for (k in r) if (k in s && s[k] > 0) printf "%.2f\n", r[k] / s[k] }' "$out" | spread)
			printf '%-6s %-7s rate %-20s cpu %s\n' "$w" "$m" "$rr" "$cr"
		done
	done
fi
