#!/usr/bin/env bash
# Fuzzes ATLAS's decoders with cargo-fuzz (issue 18, point 8): the AOF record decoder (and
# its fast path against the general one), the segment scanner, the snapshot decoder and
# recovery over a directory of random files (targets in fuzz/, properties in
# helios_atlas::fuzzing). On stable Rust, without a
# sanitizer (`-s none`); installs cargo-fuzz if missing.
#
#   scripts/fuzz.sh            every target for 60 s
#   scripts/fuzz.sh 600 snapshot   one target for 10 minutes
#
# A finding stops the run with the crashing input under fuzz/artifacts/TARGET/; replay it
# with `cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...`. The corpus grows
# under fuzz/corpus/ (not committed). CI runs the same entry points briefly as a proptest
# (helios-atlas/tests/decoders_fuzz.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aof_record aof_decoders aof_segment snapshot recovery)
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cd fuzz
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    cargo fuzz run -s none "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
echo "fuzz: no finding in ${targets[*]} (${seconds}s each)"
