#!/usr/bin/env bash
# Runs every fuzz target (libFuzzer through cargo-fuzz, nightly) for SECONDS
# each (default 60), two at a time, and prints each one's executions and
# whether it found anything. Findings go to fuzz/artifacts/<target>/; a
# finding, minimized, belongs in fuzz/replay/<target>/ (with a fix), which
# attestation/tests/fuzz_replay.rs replays on stable in CI.
#
# Seeds: this repository's own format vectors, plus the real attestation
# vectors from ../shared/vectors (SEALTUNE_VECTORS), copied to a temporary
# folder and never into this repository. The working corpus
# (fuzz/corpus/, git-ignored) grows across runs.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET ...]
#   (needs `rustup toolchain install nightly` and `cargo install cargo-fuzz`)
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"; shift || true
vectors="${SEALTUNE_VECTORS:-$(cd ../.. && pwd)/shared/vectors}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sealed_stream manifest grant protocol evidence receipt ledger policy snp_report tdx_quote gpu_report azure_hcl jsonl_records)

seeds="$(mktemp -d)"
running=()
cleanup() {
    [ ${#running[@]} -gt 0 ] && kill "${running[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$seeds"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== seeding from this repository's vectors and $vectors"
for t in "${targets[@]}"; do mkdir -p "$seeds/$t" "corpus/$t"; done
unhex() { [ -d "$seeds/$2" ] && python3 -c "import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read().strip()))" "$1" > "$seeds/$2/$(basename "$1" .hex)"; }
unhex ../attestation/tests/vectors/sealed-v1.hex sealed_stream
unhex ../attestation/tests/vectors/signed-manifest-v1.hex manifest
unhex ../attestation/tests/vectors/ledger-v1.hex ledger
[ -d "$seeds/policy" ] && sed -n '/^```toml/,/^```/p' ../docs/formats/policy.md | sed '1d;$d' > "$seeds/policy/documented.toml"
[ -d "$seeds/jsonl_records" ] && printf '{"text": "a note"}\n{"messages": [{"role": "user", "content": "hi"}], "user_id": "p1"}\n' > "$seeds/jsonl_records/two.jsonl"
if [ -d "$vectors" ]; then
    [ -d "$seeds/snp_report" ] && for f in "$vectors"/snp/*/report.bin "$vectors"/snp/*/snp_report.bin; do [ -f "$f" ] && cp "$f" "$seeds/snp_report/$(basename "$(dirname "$f")")"; done
    [ -d "$seeds/azure_hcl" ] && for f in "$vectors"/snp/*/hcl-report.bin "$vectors"/tdx/*/hcl-report.bin; do [ -f "$f" ] && cp "$f" "$seeds/azure_hcl/$(basename "$(dirname "$f")")"; done
    [ -d "$seeds/tdx_quote" ] && for f in "$vectors"/tdx/*/*quote*.bin; do [ -f "$f" ] && cp "$f" "$seeds/tdx_quote/$(basename "$(dirname "$f")")"; done
    [ -d "$seeds/gpu_report" ] && for f in "$vectors"/gpu/*/*AttestationReport.txt; do [ -f "$f" ] && python3 -c "import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read().strip()))" "$f" > "$seeds/gpu_report/$(basename "$(dirname "$f")")"; done
else
    echo "   ($vectors not found: the SNP, TDX, HCL and GPU targets start from nothing)"
fi

echo "== building the targets (nightly, sanitizers)"
cargo +nightly fuzz build -O

run_one() {
    local t=$1 log="logs/$1.log"
    mkdir -p logs "artifacts/$t"
    if cargo +nightly fuzz run -O "$t" "corpus/$t" "$seeds/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        verdict="no crash"
    else
        verdict="FINDING (see $log and artifacts/$t/)"
    fi
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
    printf '%-14s %12s executions in %ss: %s\n' "$t" "$execs" "$seconds" "$verdict"
}

echo "== fuzzing ${#targets[@]} targets for ${seconds}s each, two at a time"
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    running=()
    for t in "${targets[@]:i:2}"; do
        run_one "$t" &
        running+=($!)
    done
    wait "${running[@]}"
done
running=()
