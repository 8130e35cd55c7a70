#!/usr/bin/env bash
# Checks the architecture invariants ARCHITECTURE.md states, so they stay true (run by
# .ci/run). Each check prints what breaks it; the script fails if any does.
#
# 1. Core crates (helios-core, -atlas, -queue, -auth, -proxy) depend on no async runtime or
#    network crate (cargo tree, normal dependencies).
# 2. Core crates read the clock only in helios-core/src/clock.rs (chrono's `Utc::now` too:
#    cron schedules are evaluated at the injected time), and OS randomness only in
#    helios-auth/src/random.rs and helios-queue/src/queue.rs (`os_seeded_rng`).
# 3. Only helios-atlas/src/storage/ touches std::fs in the core crates.
# 4. ATLAS keys are built in helios-core/src/keys.rs: no key prefix constant is joined to an
#    id, and no literal key prefix is formatted, anywhere else (tests excepted).
# 5. Every .rs file of the workspace opens with a `//!` doc saying what it owns.
# 6. The job queue's pure state machine (helios-queue/src/state.rs) names no storage type:
#    queue.rs, the layer that talks to ATLAS, encodes its transitions.
set -uo pipefail
cd "$(dirname "$0")/.."
CORE=(helios-core helios-atlas helios-queue helios-auth helios-proxy)
failed=0
fail() {
    echo "invariant broken: $1"
    failed=1
}

# Lines of Rust sources under $@, without `#[cfg(test)]` modules (everything from the first
# `#[cfg(test)]` line of a file on) and without comments.
code() {
    find "$@" -name '*.rs' -print0 | sort -z | while IFS= read -r -d '' f; do
        awk -v f="$f" '/^#\[cfg\(test\)\]/ { exit } { sub(/\/\/.*/, ""); if ($0 ~ /[^ \t]/) print f ":" FNR ": " $0 }' "$f"
    done
}

# 1. No async runtime or network crate under a core crate.
for c in "${CORE[@]}"; do
    deps=$(cargo tree -q -p "$c" -e normal --prefix none 2>&1) || {
        fail "cargo tree -p $c failed: $deps"
        continue
    }
    bad=$(printf '%s\n' "$deps" | grep -E '^(tokio|tokio-[a-z-]+|hyper|hyper-util|h2|mio|socket2|reqwest|async-std|smol) v' | sort -u)
    [ -z "$bad" ] || fail "$c depends on: $(echo $bad)"
done

# 2. The clock and OS randomness, only where they are injected from.
srcs=()
for c in "${CORE[@]}"; do srcs+=("$c/src"); done
hits=$(code "${srcs[@]}" | grep -E 'SystemTime::now|Instant::now|Utc::now|Local::now' | grep -v '^helios-core/src/clock\.rs:')
[ -z "$hits" ] || fail "the clock is read outside helios-core/src/clock.rs:
$hits"
hits=$(code "${srcs[@]}" | grep -E 'getrandom::|SysRng|OsRng|thread_rng|rand::rng\(' |
    grep -v -E '^helios-auth/src/random\.rs:|^helios-queue/src/queue\.rs:')
[ -z "$hits" ] || fail "OS randomness is read outside random.rs / queue.rs:
$hits"

# 2b. The servers read wall-clock time and randomness through their Context (app/), with
# the exception ARCHITECTURE.md states: atlasd's TIME (atlasd/kv.rs). The job queue's lease
# clock and id randomness are `Queue::open`'s own (helios-queue, checked above).
hits=$(code helios-bins/src | grep -E 'SystemTime::now|OsRandom|getrandom::|SysRng|OsRng|thread_rng|rand::rng\(|MonotonicClock::new' |
    grep -v -E '^helios-bins/src/app/|^helios-bins/src/atlasd/kv\.rs:.*SystemTime::now')
[ -z "$hits" ] || fail "a server reads the clock or randomness outside its Context (app/):
$hits"

# 3. std::fs only in ATLAS's storage layer.
hits=$(code "${srcs[@]}" | grep -E 'std::fs|\bfs::' | grep -v '^helios-atlas/src/storage/')
[ -z "$hits" ] || fail "std::fs outside helios-atlas/src/storage:
$hits"

# 4. Keys built only in helios-core/src/keys.rs.
families='auth:user|auth:username|auth:token|rbac:role|rbac:user_roles|kv|kv:u|kv:ns|rate|job|job:dedup|job:schedule|job:state|proxy:backend|proxy:route|worker|meta'
hits=$(code helios-*/src src 2>/dev/null | grep -v '^helios-core/src/keys\.rs:' |
    grep -E "(format!|push_str|concat!|\+ *&?).*(keys::[A-Z_]+_PREFIX|\"($families):[^\"]*\{)|^[^:]+:[0-9]+: +(keys::)?[A-Z_]+_PREFIX,$")
[ -z "$hits" ] || fail "ATLAS keys built outside helios-core/src/keys.rs (use its builders):
$hits"

# 5. Every file says what it owns.
while IFS= read -r -d '' f; do
    first=$(grep -m1 -v -E '^\s*$|^#!\[' "$f")
    case "$first" in
        //!*) ;;
        *) fail "$f does not open with a //! doc" ;;
    esac
done < <(find helios-*/src helios-*/tests helios-*/examples src benches examples fuzz/fuzz_targets -name '*.rs' -print0 2>/dev/null)

# 6. The queue's state machine stays pure.
hits=$(code helios-queue/src/state.rs | grep -E 'helios_atlas|WriteBatch|Atlas\b')
[ -z "$hits" ] || fail "helios-queue's state machine names storage (encode in queue.rs):
$hits"

if [ "$failed" = 0 ]; then
    echo "invariants: ok"
fi
exit "$failed"
