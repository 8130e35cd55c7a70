#!/usr/bin/env bash
# helios-atlasd vs redis-server with redis-benchmark (issue 6): the same client flags against
# both, with the same persistence (AOF everysec, then AOF always), pipelines of 1 and 16;
# SET/GET/INCR/MSET, and SETRANGE/GETRANGE/SETBIT/BITCOUNT (issue 23) as custom commands.
# Installs Debian's redis-server and redis-tools if missing. Everything binds 127.0.0.1 and
# stops by itself. Prints one table: requests/s of each server and the ratio helios/redis.
#
# Each (P, test) is run REPEAT times against each server, alternating helios and redis, and
# the median of each server's runs is reported: on a shared 2-core machine single runs
# swing by +-30%.
#
# Usage: benches/atlasd_vs_redis.sh [REQUESTS] [CLIENTS] [REPEAT]   (default 200000 50 3)
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS="${1:-200000}"; CLIENTS="${2:-50}"; REPEAT="${3:-3}"
TESTS="set,get,incr,mset"
if ! command -v redis-benchmark >/dev/null || ! command -v redis-server >/dev/null; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server redis-tools
fi
# The production build of atlasd: release, with the opt-in mimalloc allocator.
cargo build --release -q -p helios-bins --bin helios-atlasd --features mimalloc
WORK="$(mktemp -d)"
HELIOS_PORT=16380; REDIS_PORT=16379
cleanup() { kill "${H_PID:-}" "${R_PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_ping() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "server on $1 did not start" >&2; exit 1; }

# bench PORT PIPELINE -> "test rps" lines
bench() {
    redis-benchmark -p "$1" -t "$TESTS" -n "$REQUESTS" -c "$CLIENTS" -P "$2" -r 100000 -q --csv \
        | tr -d '"' | awk -F, 'NR>1 || $1!="test" { split($1, n, " "); print tolower(n[1]), $2 }'
    # The string commands of issue 23, as custom commands (the row is the command's name):
    # a 64-byte range write, a range read, a bit set and a bit count over 1 KiB values.
    for c in "SETRANGE s:__rand_int__ 960 $(printf 'x%.0s' $(seq 64))" \
        "GETRANGE s:__rand_int__ 0 63" "SETBIT s:__rand_int__ 8000 1" "BITCOUNT s:__rand_int__"; do
        # shellcheck disable=SC2086 # the command's words are separate arguments
        redis-benchmark -p "$1" -n "$REQUESTS" -c "$CLIENTS" -P "$2" -r 100000 -q --csv $c \
            | tr -d '"' | awk -F, 'NR>1 || $1!="test" { split($1, n, " "); print tolower(n[1]), $2 }'
    done
}

# median FILE: "test rps" lines -> one "test median-rps" line per test
median() {
    sort -k1,1 -k2,2g "$1" | awk '{ v[$1] = v[$1] " " $2; n[$1]++ }
        END { for (t in v) { split(substr(v[t], 2), a, " "); print t, a[int((n[t] + 1) / 2)] } }'
}

printf "%-9s %-4s %-6s %14s %14s %8s\n" fsync P test "helios rps" "redis rps" ratio
for FSYNC in everysec always; do
    rm -rf "$WORK/h" "$WORK/r"; mkdir -p "$WORK/h" "$WORK/r"
    RUST_LOG=warn target/release/helios-atlasd --dir "$WORK/h" --port "$HELIOS_PORT" \
        --appendfsync "$FSYNC" >"$WORK/h.log" 2>&1 &
    H_PID=$!
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/r" --appendonly yes \
        --appendfsync "$FSYNC" --save "" --daemonize no >"$WORK/r.log" 2>&1 &
    R_PID=$!
    wait_ping "$HELIOS_PORT"; wait_ping "$REDIS_PORT"
    # A server left over on either port would answer in place of the one just started.
    for p in "$H_PID" "$R_PID"; do
        kill -0 "$p" 2>/dev/null || { echo "a server did not start (port taken?)" >&2; cat "$WORK"/*.log >&2; exit 1; }
    done
    for P in 1 16; do
        : >"$WORK/h.all"; : >"$WORK/r.all"
        for _ in $(seq "$REPEAT"); do
            bench "$HELIOS_PORT" "$P" >>"$WORK/h.all"
            bench "$REDIS_PORT" "$P" >>"$WORK/r.all"
        done
        median "$WORK/h.all" >"$WORK/h.csv"
        median "$WORK/r.all" >"$WORK/r.csv"
        join <(sort "$WORK/h.csv") <(sort "$WORK/r.csv") | while read -r t h r; do
            printf "%-9s %-4s %-6s %14.0f %14.0f %7.2fx\n" "$FSYNC" "$P" "$t" "$h" "$r" \
                "$(echo "$h / $r" | bc -l)"
        done
    done
    kill "$H_PID" "$R_PID"; wait "$H_PID" "$R_PID" 2>/dev/null || true
    unset H_PID R_PID
done
echo "command: redis-benchmark -t $TESTS and SETRANGE/GETRANGE/SETBIT/BITCOUNT -n $REQUESTS -c $CLIENTS -P {1,16} -r 100000 (same flags for both); median of $REPEAT alternating runs each"
