#!/usr/bin/env bash
# Load test of the gateway on loopback (issue 5): authenticated `GET /api/v1/kv/{key}` and
# the enqueue -> claim -> ack cycle, next to a bare hyper "hello" server measured in the
# same run. Installs wrk (Debian) if missing. Everything binds 127.0.0.1 and stops by itself.
#
# Usage: benches/gateway_load.sh [DURATION_S] [CONNECTIONS] [THREADS]   (default 10 64 2)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"; CONNS="${2:-64}"; THREADS="${3:-2}"
if ! command -v wrk >/dev/null; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk
fi
cargo build --release -q -p helios-bins --bin helios-gateway --example hello
WORK="$(mktemp -d)"
GW_PORT=18480; HELLO_PORT=18481
cleanup() { kill "${GW_PID:-}" "${HELLO_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
HELIOS_ADMIN_PASSWORD="bench admin password" HELIOS_RATE_LIMIT__CAPACITY=100000000 \
HELIOS_RATE_LIMIT__REFILL_PER_S=100000000 HELIOS_LOG__LEVEL=warn HELIOS_AUTH__BCRYPT_COST=4 \
    target/release/helios-gateway --data-dir "$WORK/data" --listen "127.0.0.1:$GW_PORT" \
    --appendfsync everysec >"$WORK/gw.log" 2>&1 &
GW_PID=$!
target/release/examples/hello "127.0.0.1:$HELLO_PORT" &
HELLO_PID=$!
for _ in $(seq 50); do curl -sf "127.0.0.1:$GW_PORT/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -sf -XPOST "127.0.0.1:$GW_PORT/api/v1/auth/login" \
    -d '{"username":"admin","password":"bench admin password"}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
curl -sf -XPUT "127.0.0.1:$GW_PORT/api/v1/kv/bench" -H "Authorization: Bearer $TOKEN" \
    -d '{"value":{"hello":"world"}}' >/dev/null
cat >"$WORK/cycle.lua" <<LUA
-- One enqueue -> claim -> ack cycle per three requests, on one connection each.
local token = "$TOKEN"
local step, id, lease = 0, nil, nil
request = function()
  local h = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
  if step == 0 then
    return wrk.format("POST", "/api/v1/jobs", h, '{"queue":"bench","max_attempts":3}')
  elseif step == 1 then
    return wrk.format("POST", "/api/v1/jobs/claim", h, '{"queue":"bench","worker_id":"w","lease_seconds":60}')
  else
    return wrk.format("POST", "/api/v1/jobs/" .. (id or "0") .. "/ack", h, '{"lease_token":"' .. (lease or "0") .. '"}')
  end
end
response = function(status, headers, body)
  if step == 1 then
    id = body:match('"id":"(%x+)"'); lease = body:match('"lease_token":"(%d+)"')
  end
  step = (step + 1) % 3
end
LUA
run() { echo "== $1"; shift; wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$@" | grep -E "Requests/sec|99%|Non-2xx"; }
run "bare hyper hello" "http://127.0.0.1:$HELLO_PORT/"
run "gateway GET /api/v1/kv/bench (authenticated)" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$GW_PORT/api/v1/kv/bench"
echo "(cycle: 3 requests per job, jobs/s = requests/s / 3; one connection per wrk thread, since"
echo " wrk runs the script's state machine per thread)"
wrk -t"$THREADS" -c"$THREADS" -d"${DURATION}s" --latency -s "$WORK/cycle.lua" \
    "http://127.0.0.1:$GW_PORT/" | sed 's/^/   /' | grep -E "Requests/sec|99%|Non-2xx" \
    | sed '1i == gateway enqueue -> claim -> ack'
curl -sf "127.0.0.1:$GW_PORT/api/v1/queues" -H "Authorization: Bearer $TOKEN"; echo
