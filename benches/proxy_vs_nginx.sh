#!/usr/bin/env bash
# helios-proxy against nginx and HAProxy (issue 20): wrk on loopback against one small
# backend (helios-bins/examples/hello.rs) directly, through nginx (1 worker, keepalive to
# the upstream), through HAProxy (1 thread, http-reuse always) and through helios-proxy
# (--threads 1, built with --features mimalloc), one after the other in one run on the same
# machine. Installs wrk, nginx and haproxy from Debian's packages if missing. Everything
# binds 127.0.0.1 and stops by itself. Prints a table with the ratios to the better of
# nginx and HAProxy.
#
# Usage: benches/proxy_vs_nginx.sh [DURATION_S] [CONNECTIONS] [WRK_THREADS] [PROXY_THREADS]
#   (default 10 50 2 1: `wrk -t2 -c50 -d10s`, the issue's setting)
# With CPU_BUDGET=1 (and DURATION_S >= 6), each line also gives what the proxy (user +
# kernel), the backend and wrk spent per request, from /proc/PID/stat ticks sampled from
# 2 s into the run to 2 s before its end.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"; CONNS="${2:-50}"; THREADS="${3:-2}"; PTHREADS="${4:-1}"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
# With mimalloc, as helios-atlasd is measured (docs/performance.md has both allocators).
cargo build --release -q -p helios-bins --bin helios-proxy --example hello --features mimalloc
WORK="$(mktemp -d)"
BACKEND=18600; NGINX_PORT=18601; HAPROXY_PORT=18602; HELIOS_PORT=18603
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

target/release/examples/hello "127.0.0.1:$BACKEND" & PIDS+=($!)

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream backend { server 127.0.0.1:$BACKEND; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)

cat >"$WORK/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend f
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend b
backend b
    server s1 127.0.0.1:$BACKEND
CONF
"$HAPROXY" -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & PIDS+=($!)

HELIOS_LOG__LEVEL=warn HELIOS_PROXY__ACCESS_LOG=false target/release/helios-proxy --listen "127.0.0.1:$HELIOS_PORT" \
    --backend "http://127.0.0.1:$BACKEND" --threads "$PTHREADS" >"$WORK/helios.log" 2>&1 &
PIDS+=($!)

for p in $BACKEND $NGINX_PORT $HAPROXY_PORT $HELIOS_PORT; do
    for _ in $(seq 100); do curl -sf "127.0.0.1:$p/" >/dev/null && break; sleep 0.1; done
    curl -sf "127.0.0.1:$p/" >/dev/null || { echo "nothing answers on $p" >&2; exit 1; }
done

declare -A RPS P99 PID
PID[backend]=${PIDS[0]}; PID[nginx]=${PIDS[1]}; PID[haproxy]=${PIDS[2]}; PID[helios-proxy]=${PIDS[3]}
# User and system ticks of a process and its children's threads (nginx's worker is a
# child of its master): "USER SYS".
ticks() {
    local u=0 s=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null || echo "0 0")
        u=$((u + pu)); s=$((s + ps))
    done
    echo "$u $s"
}
run() { # name port
    local out budget=""
    if [ "${CPU_BUDGET:-0}" = 1 ] && [ "$DURATION" -ge 6 ]; then
        wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/" >"$WORK/wrk.out" &
        local w=$!
        sleep 2
        local t0 p0 b0 w0; t0=$(date +%s.%N); p0=$(ticks "${PID[$1]}"); b0=$(ticks "${PID[backend]}"); w0=$(ticks $w)
        sleep $((DURATION - 4))
        local t1 p1 b1 w1; t1=$(date +%s.%N); p1=$(ticks "${PID[$1]}"); b1=$(ticks "${PID[backend]}"); w1=$(ticks $w)
        wait $w
        out=$(cat "$WORK/wrk.out")
        local rps; rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        budget=$(awk -v t0="$t0" -v t1="$t1" -v r="$rps" -v p0="$p0" -v p1="$p1" -v b0="$b0" \
            -v b1="$b1" -v w0="$w0" -v w1="$w1" -v hz="$(getconf CLK_TCK)" -v self="$1" 'BEGIN {
            split(p0, a, " "); split(p1, b, " "); split(b0, c, " "); split(b1, d, " ")
            split(w0, e, " "); split(w1, f, " "); n = r * (t1 - t0); us = 1e6 / hz / n
            pu = (b[1] - a[1]) * us; ps = (b[2] - a[2]) * us
            be = (d[1] + d[2] - c[1] - c[2]) * us; wk = (f[1] + f[2] - e[1] - e[2]) * us
            if (self == "backend") printf "  backend %.1f us/req, wrk %.1f", be, wk
            else printf "  proxy %.1f us/req (user %.1f + kernel %.1f), backend %.1f, wrk %.1f", pu + ps, pu, ps, be, wk }')
    else
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$2/")
    fi
    RPS[$1]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    P99[$1]=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '%-14s %10s req/s  p99 %s%s\n' "$1" "${RPS[$1]}" "${P99[$1]}" "$budget"
}
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s, helios-proxy --threads $PTHREADS, $(date -u '+%F %H:%M UTC')"
run backend $BACKEND
run nginx $NGINX_PORT
run haproxy $HAPROXY_PORT
run helios-proxy $HELIOS_PORT
best=$(awk -v a="${RPS[nginx]}" -v b="${RPS[haproxy]}" 'BEGIN {print (a > b ? a : b)}')
awk -v h="${RPS[helios-proxy]}" -v b="$best" -v n="${RPS[nginx]}" -v x="${RPS[haproxy]}" 'BEGIN {
    printf "helios-proxy / nginx %.2fx, / haproxy %.2fx, / the better %.2fx (target 1.2x)\n", h / n, h / x, h / b }'
