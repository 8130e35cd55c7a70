#!/usr/bin/env bash
# Installs what HELIOS needs on a fresh machine: a Rust toolchain with rustfmt and clippy.
# Idempotent; called by scripts/run.sh, scripts/test.sh and .ci/run.
set -euo pipefail
# A C toolchain (some crates build C) and curl (for rustup) on a bare Debian.
if ! command -v cc >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" = "0" ] || SUDO="sudo"
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq build-essential curl ca-certificates
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "setup: installing Rust with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
fi
