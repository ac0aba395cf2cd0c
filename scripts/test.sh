#!/usr/bin/env bash
# Runs every test of the workspace (README's second command). The CLI tests
# drive both binaries, so they are built first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked --bins
exec cargo test --workspace --locked "$@"
