#!/usr/bin/env bash
# Runs Redis's own tests for the commands helios-atlasd serves (issue 23) against atlasd:
# unit/type/string, unit/type/incr, unit/expire and unit/keyspace of Redis 7.0 (Debian's
# `redis` source package), with Redis's `runtest --host 127.0.0.1 --port P`.
#
# Redis's tests are fetched here, never copied into this repository: the source package is
# downloaded (`apt-get source --download-only redis`, after adding a deb-src entry for the
# mirror already configured) and unpacked under target/redis-suite/ (ignored by git).
# Skipped, and nothing else: tests that need other data types, replication, DEBUG or
# CONFIG SET (`--tags -needs:debug -needs:repl ...`, `--singledb` for the ones that use
# other databases, and scripts/redis_suite/skiplist.txt, one reason per entry).
#
# Prints the [ok]/[err] counts at the end; exits 1 if any test failed.
# Usage: scripts/redis_suite.sh [--release] [extra runtest flags, e.g. --only 'NAME' --verbose]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
source scripts/setup.sh
PROFILE=debug
if [ "${1:-}" = "--release" ]; then PROFILE=release; shift; fi

SUDO=""
[ "$(id -u)" = "0" ] || SUDO="sudo"
# tclsh runs Redis's test framework; dpkg-source unpacks the source package with Debian's
# patches applied.
if ! command -v tclsh >/dev/null 2>&1 || ! command -v dpkg-source >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends tcl dpkg-dev
fi

SRC_ROOT="${CARGO_TARGET_DIR:-$ROOT/target}/redis-suite"
mkdir -p "$SRC_ROOT"
if ! ls -d "$SRC_ROOT"/redis-*/tests >/dev/null 2>&1; then
    # A deb-src entry for each deb entry of the configured mirror (deb822 sources), once.
    if ! apt-get source --download-only --print-uris redis >/dev/null 2>&1; then
        SRC_LIST=/etc/apt/sources.list.d/helios-deb-src.sources
        : | $SUDO tee "$SRC_LIST" >/dev/null
        for f in /etc/apt/sources.list.d/*.sources; do
            [ "$f" = "$SRC_LIST" ] && continue
            # Only Debian's own mirror (deb.debian.org or a snapshot of it) carries `redis`.
            grep -q 'debian' "$f" || continue
            sed -n 's/^Types: deb$/Types: deb-src/p; /^Types:/!p' "$f" | $SUDO tee -a "$SRC_LIST" >/dev/null
            echo | $SUDO tee -a "$SRC_LIST" >/dev/null
        done
        if [ -f /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
            grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
                | $SUDO tee /etc/apt/sources.list.d/helios-deb-src.list >/dev/null
        fi
        $SUDO apt-get update -qq
    fi
    (cd "$SRC_ROOT" && apt-get source --download-only redis)
    DSC="$(ls "$SRC_ROOT"/redis_*.dsc | head -n 1)"
    (cd "$SRC_ROOT" && dpkg-source --no-check -x "$DSC" "redis-$(basename "$DSC" .dsc | sed 's/^redis_//')")
fi
REDIS_DIR="$(ls -d "$SRC_ROOT"/redis-*/ | head -n 1)"
echo "redis tests: $REDIS_DIR"

# atlasd, built as the tests' server.
if [ "$PROFILE" = release ]; then
    cargo build --release -q -p helios-bins --bin helios-atlasd
else
    cargo build -q -p helios-bins --bin helios-atlasd
fi
ATLASD="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/helios-atlasd"

WORK="$(mktemp -d)"
cleanup() {
    if [ -n "${A_PID:-}" ]; then kill "$A_PID" 2>/dev/null || true; wait "$A_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# A free port on 127.0.0.1 (bound and released by the kernel's choice).
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
RUST_LOG=warn "$ATLASD" --dir "$WORK/data" --bind 127.0.0.1 --port "$PORT" >"$WORK/atlasd.log" 2>&1 &
A_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    kill -0 "$A_PID" 2>/dev/null || { cat "$WORK/atlasd.log" >&2; exit 1; }
    sleep 0.1
done

# Skip-list lines are "test name<TAB># reason"; runtest reads names (or /regexps) only.
awk -F'\t' '!/^[[:space:]]*(#|$)/ { sub(/[[:space:]]+$/, "", $1); print $1 }' \
    scripts/redis_suite/skiplist.txt >"$WORK/skip.txt"

cd "$REDIS_DIR"
set +e
./runtest --host 127.0.0.1 --port "$PORT" --singledb --clients 1 --timeout 600 --durable \
    --tags "-needs:debug -needs:repl -needs:config-maxmemory -needs:save" \
    --skipfile "$WORK/skip.txt" \
    --single unit/type/string --single unit/type/incr --single unit/expire --single unit/keyspace \
    "$@" 2>&1 | tee "$WORK/run.raw"
set -e
# Without the colours runtest puts around the status words.
sed 's/\x1b\[[0-9;]*m//g' "$WORK/run.raw" >"$WORK/run.log"
OK=$(grep -c '^\[ok\]' "$WORK/run.log" || true)
ERR=$(grep -c '^\[err\]' "$WORK/run.log" || true)
EXC=$(grep -c '^\[exception\]' "$WORK/run.log" || true)
SKIP=$(grep -c '^\[skip\]' "$WORK/run.log" || true)
IGN=$(grep -c '^\[ignore\]' "$WORK/run.log" || true)
echo "redis suite vs helios-atlasd: ok=$OK err=$ERR exception=$EXC skipped=$SKIP ignored(tags)=$IGN"
if ! kill -0 "$A_PID" 2>/dev/null; then echo "atlasd died; its log:" >&2; cat "$WORK/atlasd.log" >&2; exit 1; fi
[ "$ERR" = 0 ] && [ "$EXC" = 0 ]
