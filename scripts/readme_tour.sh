#!/usr/bin/env bash
# Runs the README's tour, verbatim, so that a README edit that breaks a command fails CI.
#
# Which blocks: every ```sh (or ```bash) block of README.md whose line just before it is a
# marker comment (invisible when the Markdown is rendered):
#
#   <!-- tour: NAME [server] [expect='TEXT']... -->
#
# - A plain block is written to a file as it stands in the README and run with
#   `bash -eu -o pipefail FILE` from the repository root; it fails the tour if any command
#   fails, or if its output (stdout and stderr) lacks one of the `expect='TEXT'` strings
#   (fixed strings, no single quotes inside). Blocks run in README order, each in its own
#   shell (so a block must not rely on variables set by another).
# - A `server` block starts a server: its first command line is started in the background
#   as its own process group, exactly as written (its other lines, such as
#   `scripts/test.sh` in the README's first block, are not run here: CI runs the tests on
#   their own). The tour knows two servers, by NAME:
#     gateway: waits for http://127.0.0.1:8080/healthz, checks the README's promises (the
#              `helios-gateway serving` log line, data/admin-password with mode 600);
#     atlasd:  waits for redis-cli PING on 127.0.0.1:6380, checks `helios-atlasd serving`;
#     proxy:   waits for http://127.0.0.1:8081/healthz (the gateway's, through the proxy),
#              checks `helios-proxy serving`.
#   At the end each server is stopped with SIGINT (what Ctrl-C sends), must exit with
#   status 0, and its data directory (the gateway's, atlasd's) must pass `helios aof
#   check` (it was flushed cleanly).
# - The tour fails if a marker is malformed, or if one of the blocks it requires (gateway,
#   curl, cli, atlasd, redis, proxy, worker, examples) is missing from the README.
#
# Where it runs: in this checkout, not a copy, so it tests the working tree (README edits
# included) with the build cache already in target/. The README's commands use ./data and
# ./atlasd-data, so the tour refuses to start if either exists (use --move-aside to move them
# away for the run and back afterwards), and removes the ones it created when it ends
# (--keep leaves them for inspection). It also refuses to start if 127.0.0.1:8080,
# 127.0.0.1:6380 or 127.0.0.1:8081 is already taken. Everything listens on 127.0.0.1 only.
#
# Environment: every HELIOS_* variable is unset first (the README describes a fresh shell);
# the CLI blocks get HELIOS_TOKEN_FILE pointing into a temporary directory, so
# ~/.config/helios/token is never touched (the servers do not get it); stdin is /dev/null.
# HELIOS_TOUR_WAIT_S (default 900) bounds the wait for a server to answer;
# HELIOS_TOUR_BLOCK_TIMEOUT_S (default 1800) bounds each block (the examples build in debug
# mode on first use).
#
# The release build runs first, with the command scripts/run.sh uses, so the wait for
# /healthz covers only the start. redis-cli comes from the Debian package redis-tools,
# installed with apt-get (through sudo when not root) if it is missing.
#
# Usage: scripts/readme_tour.sh [--move-aside] [--keep] [--list]
#   --list        print the blocks the tour would run, and run nothing
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
README=README.md
BUILD_CMD=(cargo build --release -p helios-bins --bins)
WAIT_S=${HELIOS_TOUR_WAIT_S:-900}
BLOCK_TIMEOUT_S=${HELIOS_TOUR_BLOCK_TIMEOUT_S:-1800}
REQUIRED_BLOCKS=(gateway curl cli atlasd redis proxy worker examples)
TOUR_DIRS=(data atlasd-data backups)

move_aside=0
keep=0
list_only=0
for arg in "$@"; do
    case "$arg" in
        --move-aside) move_aside=1 ;;
        --keep) keep=1 ;;
        --list) list_only=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "readme_tour: unknown argument $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

say() { printf '\n== tour: %s\n' "$*"; }
die() {
    printf '\nreadme_tour: FAILED: %s\n' "$*" >&2
    exit 1
}

# The README describes a fresh shell: no HELIOS_* settings.
while IFS= read -r v; do
    unset "$v"
done < <(compgen -e | grep '^HELIOS_' || true)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/helios-tour.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT # until the full cleanup below takes over
mkdir -p "$WORK/blocks"

# --- Extract the marked blocks --------------------------------------------------------------
# Writes $WORK/blocks/NN.sh (the block's text, verbatim) and $WORK/blocks/NN.marker (what
# follows "tour:" in its marker), NN in README order.
awk -v out="$WORK/blocks" '
    function fail(msg) { printf "readme_tour: %s:%d: %s\n", FILENAME, NR, msg > "/dev/stderr"; bad = 1; exit 1 }
    state == 0 && /^<!-- tour:/ {
        if ($0 !~ /^<!-- tour: [a-z0-9_-]+( .*)? -->$/) fail("malformed marker: " $0)
        marker = $0
        sub(/^<!-- tour: /, "", marker); sub(/ -->$/, "", marker)
        state = 1; next
    }
    state == 1 {
        if ($0 !~ /^```(sh|bash)$/) fail("a tour marker must be followed by a ```sh block")
        n++; file = sprintf("%s/%02d.sh", out, n)
        printf "%s\n", marker > sprintf("%s/%02d.marker", out, n)
        printf "" > file
        state = 2; next
    }
    state == 2 {
        if ($0 == "```") { close(file); state = 0; next }
        print >> file; next
    }
    END { if (!bad && state != 0) fail("unterminated tour block") }
' "$README" || die "cannot extract the tour blocks from $README"

blocks=()
for f in "$WORK"/blocks/*.sh; do
    [ -e "$f" ] && blocks+=("${f%.sh}")
done
[ "${#blocks[@]}" -gt 0 ] || die "no <!-- tour: ... --> blocks in $README"

# Parses a marker into NAME, IS_SERVER and the EXPECTS array.
parse_marker() {
    local marker rest word
    marker=$(cat "$1.marker")
    NAME=${marker%% *}
    rest=${marker#"$NAME"}
    EXPECTS=()
    while IFS= read -r word; do
        [ -n "$word" ] && EXPECTS+=("$word")
    done < <(grep -o "expect='[^']*'" <<<"$rest" | sed "s/^expect='//; s/'\$//" || true)
    IS_SERVER=0
    local -a attrs
    # shellcheck disable=SC2001 # a regular expression, which ${var//...} cannot take
    read -r -a attrs <<<"$(sed "s/expect='[^']*'//g" <<<"$rest")"
    for word in "${attrs[@]}"; do
        case "$word" in
            server) IS_SERVER=1 ;;
            *) die "block $NAME: unknown marker attribute '$word' (known: server, expect='TEXT')" ;;
        esac
    done
}

# The first command line of a block (skipping blank lines and comment lines).
first_command() { grep -v -E '^[[:space:]]*(#|$)' "$1" | head -n 1 || true; }

names=()
for b in "${blocks[@]}"; do
    parse_marker "$b"
    names+=("$NAME")
    if [ "$list_only" = 1 ]; then
        printf -- '--- %s%s\n' "$NAME" "$([ "$IS_SERVER" = 1 ] && echo ' (server: runs its first line only)')"
        for e in "${EXPECTS[@]}"; do printf '    expect: %s\n' "$e"; done
        if [ "$IS_SERVER" = 1 ]; then first_command "$b.sh"; else cat "$b.sh"; fi
    fi
done
for r in "${REQUIRED_BLOCKS[@]}"; do
    printf '%s\n' "${names[@]}" | grep -qx -- "$r" || die "the README has no <!-- tour: $r ... --> block"
done
if [ "$list_only" = 1 ]; then
    exit 0
fi

# --- Preconditions ------------------------------------------------------------------------
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 8080 6380 8081; do
    port_taken "$p" && die "127.0.0.1:$p is already in use; stop what listens there first"
done

created_dirs=()
moved_dirs=()
for d in "${TOUR_DIRS[@]}"; do
    if [ -e "$d" ]; then
        if [ "$move_aside" = 1 ]; then
            mv "$d" "$d.tour-saved.$$"
            moved_dirs+=("$d")
            echo "readme_tour: moved ./$d to ./$d.tour-saved.$$ for the run"
        else
            die "./$d exists; the tour needs a fresh one (rerun with --move-aside to move it away for the run)"
        fi
    fi
done

# --- Servers and cleanup --------------------------------------------------------------------
server_names=()
server_pids=()
block_pid=""

stop_server() { # NAME PID -> sets STOP_STATUS
    local name=$1 pid=$2 i
    STOP_STATUS=0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" || STOP_STATUS=$?
        return 0
    }
    kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "readme_tour: $name did not stop within 30 s of SIGINT; killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || STOP_STATUS=$?
}

cleanup() {
    local status=$? i
    trap - EXIT INT TERM
    if [ -n "$block_pid" ]; then
        kill -TERM -- "-$block_pid" 2>/dev/null || true
        wait "$block_pid" 2>/dev/null || true
    fi
    for ((i = ${#server_pids[@]} - 1; i >= 0; i--)); do
        [ -n "${server_pids[$i]}" ] && stop_server "${server_names[$i]}" "${server_pids[$i]}"
    done
    if [ "$status" != 0 ]; then
        for f in "$WORK"/*.log; do
            [ -e "$f" ] || continue
            echo "--- last lines of $f" >&2
            tail -n 30 "$f" >&2 || true
        done
    fi
    if [ "$keep" = 1 ]; then
        echo "readme_tour: kept ${created_dirs[*]:-nothing} and $WORK (--keep)"
    else
        for d in "${created_dirs[@]}"; do rm -rf -- "${ROOT:?}/$d"; done
        rm -rf -- "$WORK"
    fi
    for d in "${moved_dirs[@]}"; do
        if [ -e "$d" ]; then
            echo "readme_tour: ./$d exists; left ./$d.tour-saved.$$ in place" >&2
        else
            mv "$d.tour-saved.$$" "$d"
        fi
    done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Everything the README's commands create is the tour's to remove (they were checked absent).
created_dirs=("${TOUR_DIRS[@]}")

start_server() { # NAME BLOCKFILE
    local name=$1 cmd log=$WORK/$1.log pid waited=0
    cmd=$(first_command "$2")
    [ -n "$cmd" ] || die "server block $name has no command"
    say "start $name: $cmd"
    # Job control gives the server its own process group (SIGINT then reaches it as Ctrl-C
    # would, and is not ignored as in plain background jobs); HELIOS_TOKEN_FILE is not
    # passed (the gateway reads every HELIOS_* variable as a setting).
    set -m
    env -u HELIOS_TOKEN_FILE bash -c "$cmd" >"$log" 2>&1 </dev/null &
    pid=$!
    set +m
    server_names+=("$name")
    server_pids+=("$pid")
    case "$name" in
        gateway)
            until curl -fsS --max-time 2 http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
                kill -0 "$pid" 2>/dev/null || die "$name exited before answering /healthz (log: $log)"
                waited=$((waited + 2))
                [ "$waited" -le "$WAIT_S" ] || die "$name: no /healthz after ${WAIT_S}s"
                sleep 2
            done
            grep -q 'helios-gateway serving' "$log" || die "the gateway log lacks 'helios-gateway serving' (README, 'Run it')"
            [ -f data/admin-password ] || die "no data/admin-password on a fresh data directory (README, 'Run it')"
            [ "$(stat -c %a data/admin-password)" = 600 ] || die "data/admin-password is not mode 600"
            ;;
        atlasd)
            until redis-cli -h 127.0.0.1 -p 6380 ping 2>/dev/null | grep -q PONG; do
                kill -0 "$pid" 2>/dev/null || die "$name exited before answering PING (log: $log)"
                waited=$((waited + 1))
                [ "$waited" -le "$WAIT_S" ] || die "$name: no PONG after ${WAIT_S}s"
                sleep 1
            done
            grep -q 'helios-atlasd serving' "$log" || die "the atlasd log lacks 'helios-atlasd serving'"
            ;;
        proxy)
            until curl -fsS --max-time 2 http://127.0.0.1:8081/healthz >/dev/null 2>&1; do
                kill -0 "$pid" 2>/dev/null || die "$name exited before answering /healthz (log: $log)"
                waited=$((waited + 1))
                [ "$waited" -le "$WAIT_S" ] || die "$name: no /healthz through it after ${WAIT_S}s"
                sleep 1
            done
            grep -q 'helios-proxy serving' "$log" || die "the proxy log lacks 'helios-proxy serving'"
            ;;
        *) die "unknown server block '$name' (the tour knows gateway, atlasd and proxy)" ;;
    esac
    echo "readme_tour: $name is up (pid $pid, log $log)"
}

run_block() { # NAME BLOCKFILE EXPECTS...
    local name=$1 file=$2 out=$WORK/$1.out st=0 e tail_pid deadline
    shift 2
    say "block $name"
    sed 's/^/    $ /' "$file"
    # Its own process group too, so that an interrupted or timed-out tour stops all of it
    # (a cargo build included); its output is shown as it comes.
    : >"$out"
    set -m
    HELIOS_TOKEN_FILE="$WORK/token" bash -eu -o pipefail "$file" >"$out" 2>&1 </dev/null &
    block_pid=$!
    set +m
    tail -n +1 -f --pid="$block_pid" "$out" &
    tail_pid=$!
    deadline=$((SECONDS + BLOCK_TIMEOUT_S))
    while kill -0 "$block_pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -TERM -- "-$block_pid" 2>/dev/null || true
            die "block $name: still running after ${BLOCK_TIMEOUT_S}s"
        fi
        sleep 1
    done
    wait "$block_pid" || st=$?
    block_pid=""
    wait "$tail_pid" || true
    [ "$st" = 0 ] || die "block $name failed (status $st)"
    for e in "$@"; do
        grep -qF -- "$e" "$out" || die "block $name: its output lacks: $e"
    done
}

# --- Run ------------------------------------------------------------------------------------
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
if grep -q 'redis-cli' "$README" && ! command -v redis-cli >/dev/null 2>&1; then
    say "installing redis-cli (Debian package redis-tools)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq redis-tools
fi
grep -qF -- "${BUILD_CMD[*]}" scripts/run.sh ||
    echo "readme_tour: warning: scripts/run.sh no longer runs '${BUILD_CMD[*]}'; the wait for the server includes its build" >&2
say "build: ${BUILD_CMD[*]}"
"${BUILD_CMD[@]}"

for b in "${blocks[@]}"; do
    parse_marker "$b"
    if [ "$IS_SERVER" = 1 ]; then
        start_server "$NAME" "$b.sh"
    else
        run_block "$NAME" "$b.sh" "${EXPECTS[@]}"
    fi
done

say "stop the servers with SIGINT (Ctrl-C)"
for ((i = ${#server_pids[@]} - 1; i >= 0; i--)); do
    name=${server_names[$i]}
    stop_server "$name" "${server_pids[$i]}"
    server_pids[i]=""
    [ "$STOP_STATUS" = 0 ] || die "$name exited with status $STOP_STATUS after SIGINT (want 0)"
    case "$name" in
        gateway) dir=data ;;
        atlasd) dir=atlasd-data ;;
        *)
            echo "readme_tour: $name exited 0"
            continue
            ;;
    esac
    target/release/helios aof check --data-dir "$dir" >"$WORK/$name.check" 2>&1 ||
        die "$name's $dir fails 'helios aof check' after a clean stop: $(cat "$WORK/$name.check")"
    echo "readme_tour: $name exited 0; $dir checks clean"
done

say "the README's tour passed"
