#!/usr/bin/env bash
# Runs every test of the workspace (README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
