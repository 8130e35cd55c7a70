#!/usr/bin/env bash
# One redis-benchmark test, many rounds: helios-atlasd builds (one or two, e.g. before and
# after a change) against Debian's redis-server, alternating, with the same persistence and
# client flags. Prints, per server, the median req/s (and the range) and the server's CPU
# time per request (utime+stime from /proc/PID/stat), then the ratios to redis. For
# checking one change on one cell of benches/atlasd_vs_redis.sh: single runs on a shared
# 2-core machine swing by +-30%, medians of 7-9 rounds by a few percent. Also prints the
# client's (redis-benchmark's) CPU per request: at about 14 us, it is one core's worth at
# 70 k req/s, the most this client can drive at -P 1.
#
# Usage: benches/atlasd_cell.sh FSYNC TEST PIPELINE ROUNDS [BIN_A [BIN_B]]
#   e.g. benches/atlasd_cell.sh always incr 1 9 /tmp/atlasd_before target/release/helios-atlasd
# BIN_A defaults to target/release/helios-atlasd (build it first, e.g. with
# `cargo build --release -p helios-bins --bin helios-atlasd --features mimalloc`).
# REQUESTS (default 100000) and CLIENTS (default 50) come from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
FSYNC="$1"; TEST="$2"; P="$3"; ROUNDS="$4"
A="${5:-target/release/helios-atlasd}"; B="${6:-}"
REQUESTS="${REQUESTS:-100000}"; CLIENTS="${CLIENTS:-50}"
command -v redis-benchmark >/dev/null && command -v redis-server >/dev/null || {
    echo "needs redis-server and redis-tools (benches/atlasd_vs_redis.sh installs them)" >&2; exit 1; }
WORK="$(mktemp -d)"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_ping() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; exit 1; }

SERVERS=()   # name:port:pid
start_atlasd() { # name bin port
    mkdir -p "$WORK/$1"
    RUST_LOG=warn "$2" --dir "$WORK/$1" --port "$3" --appendfsync "$FSYNC" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!); SERVERS+=("$1:$3:$!"); wait_ping "$3"
}
start_atlasd a "$A" 16431
[ -n "$B" ] && start_atlasd b "$B" 16432
mkdir -p "$WORK/redis"
redis-server --port 16433 --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes \
    --appendfsync "$FSYNC" --save "" --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=($!); SERVERS+=("redis:16433:$!"); wait_ping 16433

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TIMEFORMAT='%3U %3S'   # the client's (redis-benchmark's) user and system seconds
TICKS="$(getconf CLK_TCK)"
for _ in $(seq "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
        IFS=: read -r name port pid <<<"$s"
        c0="$(cpu_ticks "$pid")"
        { time redis-benchmark -p "$port" -t "$TEST" -n "$REQUESTS" -c "$CLIENTS" -P "$P" -r 100000 -q --csv \
            >"$WORK/out"; } 2>"$WORK/time"
        c1="$(cpu_ticks "$pid")"
        rps="$(tail -1 "$WORK/out" | cut -d, -f2 | tr -d '"')"
        client_ns="$(awk -v n="$REQUESTS" '{ printf "%d", ($1 + $2) * 1e9 / n }' "$WORK/time")"
        echo "$name $rps $(( (c1 - c0) * 1000000000 / TICKS / REQUESTS )) $client_ns"
    done
done >"$WORK/rounds"
echo "$TEST -P $P appendfsync $FSYNC, $ROUNDS rounds of $REQUESTS requests, $CLIENTS clients (A: $A${B:+, B: $B})"
awk '
    { rps[$1] = rps[$1] " " $2; ns[$1] = ns[$1] " " $3; cl[$1] = cl[$1] " " $4; n[$1]++ }
    function median(list, k,   a, m, i, j, t) {
        m = split(substr(list, 2), a, " ")
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        lo = a[1]; hi = a[m]; return a[int((m + 1) / 2)]
    }
    END {
        r = median(rps["redis"])
        for (s in n) {
            med = median(rps[s]); l = lo; h = hi; c = median(ns[s]); k = median(cl[s])
            line = sprintf("%-6s %9.0f req/s (%.0f-%.0f)  %5.1f us CPU/request, client %5.1f us", s, med, l, h, c / 1000, k / 1000)
            if (s != "redis") line = line sprintf("  %.2fx redis", med / r)
            print line
        }
    }' "$WORK/rounds" | sort
