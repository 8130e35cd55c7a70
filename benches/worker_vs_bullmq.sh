#!/usr/bin/env bash
# Jobs end to end (enqueue -> worker -> ack, no-op processor): HELIOS over HTTP
# (helios-gateway + helios-worker --connector noop, then --connector http to a local
# no-op service), HELIOS embedded (the worker runtime on the queue in one process), and
# BullMQ on redis-server, in the same run (issue 21).
# Both stores fsync every second (Redis: appendonly yes, appendfsync everysec). Two
# figures each: "drain" (N jobs enqueued first, then the worker starts; timed from its
# start to the last ack) and "end to end" (the worker runs, a producer enqueues N jobs one
# per request with 32 in flight; timed from the first enqueue to the last ack). Over HTTP
# the no-op connector runs twice: the gateway with one runtime thread (`--threads 1`; as
# redis-server and node, one thread each) and with its default (one per core).
# Installs redis-server (Debian) and bullmq (npm, into target/bench-bullmq) if missing.
# Everything binds 127.0.0.1 and stops by itself.
#
# Usage: benches/worker_vs_bullmq.sh [JOBS] [CONCURRENCY]   (default 50000 50)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50000}"; C="${2:-50}"
SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
# Only what is missing: a machine with NodeSource's nodejs has npm in it, and Debian's npm
# package conflicts with it.
MISSING=()
command -v redis-server >/dev/null || MISSING+=(redis-server)
command -v npm >/dev/null || MISSING+=(nodejs npm)
if [ "${#MISSING[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${MISSING[@]}"
fi
NODE_DIR=target/bench-bullmq
if [ ! -d "$NODE_DIR/node_modules/ioredis" ]; then
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund bullmq ioredis)
fi
# The gateway and the worker with mimalloc, as helios-atlasd and the proxy are measured
# (BENCH_ALLOCATOR=system for the system allocator).
FEATURES=(--features mimalloc)
[ "${BENCH_ALLOCATOR:-mimalloc}" = "system" ] && FEATURES=()
cargo build --release -q -p helios-bins "${FEATURES[@]}" --bin helios-gateway --bin helios-worker \
    --example worker_bench --example hello
WORK="$(mktemp -d)"
GW_PORT=18580; REDIS_PORT=18579; HOOK_PORT=18581
cleanup() {
    kill "${GW_PID:-}" "${W_PID:-}" "${REDIS_PID:-}" "${HOOK_PID:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
echo "== $(date -u +%F' '%H:%M) UTC, $N jobs, concurrency $C, $(nproc) cores, allocator ${BENCH_ALLOCATOR:-mimalloc}"

# --- BullMQ on Redis
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes \
    --appendfsync everysec --save "" --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
cat >"$NODE_DIR/bench.js" <<'JS'
const { Queue, Worker } = require('bullmq');
const [N, C, port] = process.argv.slice(2).map(Number);
const connection = { host: '127.0.0.1', port };
async function produce(q) {
  // One add per job, 32 in flight (as the HTTP producer).
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < N) { next++; await q.add('j', { n: 1 }); }
  }));
}
async function run(mode) {
  const q = new Queue('bench-' + mode, { connection });
  let done = 0, finish;
  const finished = new Promise((r) => (finish = r));
  if (mode === 'drain') await produce(q);
  const t0 = process.hrtime.bigint();
  const w = new Worker('bench-' + mode, async () => {}, { connection, concurrency: C });
  w.on('completed', () => { if (++done === N) finish(); });
  if (mode === 'end to end') await produce(q);
  await finished;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`bullmq ${mode}: ${N} jobs in ${s.toFixed(2)} s = ${(N / s).toFixed(0)} jobs/s`);
  await w.close(); await q.close();
}
(async () => {
  const v = require('bullmq/package.json').version;
  console.log(`bullmq ${v}, node ${process.version}`);
  await run('drain'); await run('end to end'); process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
JS
node "$NODE_DIR/bench.js" "$N" "$C" "$REDIS_PORT"
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=

# --- HELIOS embedded
target/release/examples/worker_bench embedded "$N" "$C"
# The ceiling the store alone sets on it: the same records, through a bare ATLAS.
target/release/examples/worker_bench store "$N" "$C"

# --- HELIOS over HTTP
URL="http://127.0.0.1:$GW_PORT"
token() { sed 's/.*"access_token":"\([^"]*\)".*/\1/'; }
# gateway THREADS: a fresh gateway (its own data dir) with THREADS runtime threads (0: one
# per core), a worker account, the admin's token in ADMIN.
gateway() {
    if [ -n "${GW_PID:-}" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
    rm -rf "$WORK/data"
    HELIOS_ADMIN_PASSWORD="bench admin password" HELIOS_RATE_LIMIT__CAPACITY=100000000 \
    HELIOS_RATE_LIMIT__REFILL_PER_S=100000000 HELIOS_LOG__LEVEL=warn HELIOS_AUTH__BCRYPT_COST=4 \
        target/release/helios-gateway --data-dir "$WORK/data" --listen "127.0.0.1:$GW_PORT" \
        --appendfsync everysec --threads "$1" >>"$WORK/gw.log" 2>&1 &
    GW_PID=$!
    for _ in $(seq 300); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done
    curl -sf "$URL/healthz" >/dev/null || { echo "the gateway did not start:"; cat "$WORK/gw.log"; exit 1; }
    ADMIN=$(curl -sf -XPOST "$URL/api/v1/auth/login" -d '{"username":"admin","password":"bench admin password"}' | token)
    curl -sf -XPOST "$URL/api/v1/auth/register" -d '{"username":"benchworker","password":"bench worker password 1"}' >/dev/null
    WID=$(curl -sf "$URL/admin/users" -H "Authorization: Bearer $ADMIN" | python3 -c \
        'import json,sys; print([u["id"] for u in json.load(sys.stdin)["users"] if u["username"]=="benchworker"][0])')
    curl -sf -XPOST "$URL/admin/users/$WID/roles" -H "Authorization: Bearer $ADMIN" -d '{"role":"worker"}' >/dev/null
}
# worker QUEUE CONNECTOR [TARGET]
worker() {
    HELIOS_WORKER_USERNAME=benchworker HELIOS_WORKER_PASSWORD="bench worker password 1" \
    HELIOS_LOG__LEVEL=warn HELIOS_WORKER__BATCH_MAX=256 \
        target/release/helios-worker --gateway "$URL" --queue "$1" --connector "$2" \
        ${3:+--target "$3"} --concurrency "$C" >>"$WORK/worker.log" 2>&1 &
    W_PID=$!
}
# run LABEL CONNECTOR [TARGET]: drain, then end to end, on fresh queues.
run() {
    local q="bench-$1"
    echo "-- helios-worker, $1 connector, gateway --threads $GW_THREADS"
    target/release/examples/worker_bench produce "$URL" "$ADMIN" "$q-drain" "$N" 32 | sed 's/^/(setup) /'
    target/release/examples/worker_bench wait "$URL" "$ADMIN" "$q-drain" "$N" &
    WAIT_PID=$!
    worker "$q-drain" "$2" "${3:-}"
    wait "$WAIT_PID"
    kill -TERM "$W_PID"; wait "$W_PID" || true
    worker "$q-e2e" "$2" "${3:-}"
    sleep 0.5
    target/release/examples/worker_bench produce "$URL" "$ADMIN" "$q-e2e" "$N" 32 wait
    kill -TERM "$W_PID"; wait "$W_PID" || true; W_PID=
}
# The gateway with one runtime thread (the producer, the worker and the gateway share the
# two cores; as redis-server's one event loop), then with one per core (its default), for
# the no-op connector.
GW_THREADS=1; gateway "$GW_THREADS"
run noop noop
GW_THREADS=0; gateway "$GW_THREADS"
run noop noop
GW_THREADS=1; gateway "$GW_THREADS"
# The http connector POSTs each job to a bare hyper server answering 200 at once.
target/release/examples/hello "127.0.0.1:$HOOK_PORT" &
HOOK_PID=$!
for _ in $(seq 50); do curl -sf "127.0.0.1:$HOOK_PORT/" >/dev/null && break; sleep 0.1; done
run http http "http://127.0.0.1:$HOOK_PORT/hook"
