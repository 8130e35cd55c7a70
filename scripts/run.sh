#!/usr/bin/env bash
# Runs the main job. Until the gateway exists (issue 5), that is the embedded ATLAS example
# against ./data (created on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo run --release --example embedded -- "${1:-data}"
