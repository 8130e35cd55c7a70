#!/usr/bin/env bash
# Runs every test of the workspace (the README's test command), then the embedded example.
# Long soak runs are behind --ignored: HELIOS_SOAK=1 scripts/test.sh runs them too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# promtool (Debian's `prometheus` package) for the `promtool check metrics` of
# helios-bins/tests/metrics.rs, which skips it with a note when it is missing.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends prometheus
fi
cargo test --workspace --all-targets
cargo test --workspace --doc
# The opt-in `otel` feature (trace export): its unit tests and the fake-collector tests.
cargo test -p helios-bins --features otel --lib --test otel
cargo run --quiet --example embedded -- "$(mktemp -d)/atlas-example"
cargo run --quiet --example queue -- "$(mktemp -d)/queue-example"
cargo run --quiet --example custom_connector -- "$(mktemp -d)/connector-example"
if [ "${HELIOS_SOAK:-0}" = "1" ]; then
    cargo test --workspace --release -- --ignored
fi
