#!/usr/bin/env bash
# Runs the main job: the HELIOS gateway on 127.0.0.1:8080 with an embedded ATLAS in ./data
# (created on first run). On a fresh ./data the admin password is HELIOS_ADMIN_PASSWORD,
# or a generated one written to data/admin-password (owner-only; its path is logged).
# Builds every binary the README uses first (target/release: helios-gateway, helios,
# helios-atlasd). Extra arguments go to the gateway (e.g. --listen 127.0.0.1:9090).
# Ctrl-C (SIGINT) drains requests, fsyncs ATLAS and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release -p helios-bins --bins
exec target/release/helios-gateway --config configs/default.yaml "$@"
