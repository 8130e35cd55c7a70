#!/usr/bin/env bash
# Runs every test of the workspace (the README's test command), then the embedded example.
# Long soak runs are behind --ignored: HELIOS_SOAK=1 scripts/test.sh runs them too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
cargo run --quiet --example embedded -- "$(mktemp -d)/atlas-example"
cargo run --quiet --example queue -- "$(mktemp -d)/queue-example"
cargo run --quiet --example custom_connector -- "$(mktemp -d)/connector-example"
if [ "${HELIOS_SOAK:-0}" = "1" ]; then
    cargo test --workspace --release -- --ignored
fi
