#!/usr/bin/env bash
# Runs the main job: the HELIOS gateway with an embedded ATLAS in ./data (created on first
# run; the admin password is printed once unless HELIOS_ADMIN_PASSWORD is set).
# Extra arguments go to the gateway (e.g. --listen 127.0.0.1:9090).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo run --release --bin helios-gateway -- --config configs/default.yaml "$@"
