#!/usr/bin/env bash
# The main job, end to end on the simulated enclave (README's first command).
#
# On localhost: the operator serves the blob store; two hospitals seal
# synthetic clinical notes and upload the ciphertext; the vendor uploads
# SmolLM2-135M-Instruct and signs a job; the operator launches the enclave;
# both hospitals verify its evidence and grant their keys; the enclave trains
# LoRA adapters with DP-SGD; the vendor fetches the adapter and receipt and
# verifies them offline. It ends with the receipt's key facts and text from
# the base and the fine-tuned model.
#
# Environment: DEMO_STEPS (default 12) DP-SGD steps; DEMO_OUT (default
# demo-out) the output folder.
set -euo pipefail
cd "$(dirname "$0")/.."

steps="${DEMO_STEPS:-12}"
out="${DEMO_OUT:-demo-out}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || scripts/fetch-model.sh models >/dev/null
cargo build --workspace --bins --quiet
bin="$PWD/target/debug"
rm -rf "$out" && mkdir -p "$out"/{host,vendor,stmary,royalfree}

pids=()
# Everything started here stops when the demo ends: success, failure or Ctrl-C.
stop_all() {
    [ ${#pids[@]} -eq 0 ] && return
    echo "== stopping ${#pids[@]} background processes"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM
# Starts a long-running command in the background (stdout in $2.out, logs in
# $2) and sets the variable named $1 to its first line of output. It runs in
# this shell, not a $(...) subshell, so its PID reaches stop_all.
start() {
    local var=$1 log=$2; shift 2
    "$@" >"$log.out" 2>"$log" &
    pids+=($!)
    until [ "$(wc -l <"$log.out")" -ge 1 ]; do
        kill -0 "${pids[-1]}" 2>/dev/null || { echo "$1 exited early; its log:" >&2; cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    printf -v "$var" '%s' "$(head -n1 "$log.out")"
}
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "== operator: simulated platform and blob store"
"$bin/sealtune" sim init --out "$out/host/sim"
start announced "$out/host/store.log" "$bin/sealtune" host serve --store "$out/host/store" --listen 127.0.0.1:0 --json
store=$(field "$announced" listen)
echo "store on $store"

for h in stmary royalfree; do
    echo "== $h: seal synthetic notes and upload the ciphertext"
    seed=$([ "$h" = stmary ] && echo 1 || echo 2)
    python3 scripts/synth_notes.py "$h" 150 "$seed" > "$out/$h/notes.jsonl"
    "$bin/sealtune" owner keygen --out "$out/$h/owner.key" > "$out/$h/owner.pub"
    "$bin/sealtune" owner seal "$out/$h/notes.jsonl" --out "$out/$h/notes.sealed" --dek-out "$out/$h/notes.dek" > "$out/$h/commitment"
    "$bin/sealtune" owner upload "$out/$h/notes.sealed" --host "$store" >/dev/null
    echo "dataset $(cat "$out/$h/commitment")"
done

echo "== vendor: upload the base model and sign the job"
vendor_pub=$("$bin/sealtune" vendor keygen --out "$out/vendor/vendor.key")
model_sha=$("$bin/sealtune" vendor upload "$model" --host "$store")
# N_declared = B̄ / q = 320 records: a public bound above the 300 the hospitals hold.
"$bin/sealtune" vendor job --model "$model" --model-name HuggingFaceTB/SmolLM2-135M-Instruct \
    --identity "$out/vendor/vendor.key" \
    --dataset "$(cat "$out/stmary/commitment"):$(cat "$out/stmary/owner.pub")" \
    --dataset "$(cat "$out/royalfree/commitment"):$(cat "$out/royalfree/owner.pub")" \
    --epsilon 8 --delta 1e-5 --clip 1.0 --sampling-rate 0.025 --expected-batch 8 --max-steps "$steps" \
    --lora-rank 8 --lora-alpha 16 --lora-targets q,v --learning-rate 5e-3 --max-seq-len 64 \
    --job-id clinical-notes-demo --out "$out/vendor/job.cbor" > "$out/vendor/manifest-hash"
echo "job $(cat "$out/vendor/manifest-hash")"

echo "== operator: launch the enclave for the job"
start announced "$out/host/launch.log" "$bin/sealtune" host launch --manifest "$out/vendor/job.cbor" --tee sim \
    --sim-platform "$out/host/sim" --store "$store" --listen 127.0.0.1:0 --json
relay=$(field "$announced" listen)
echo "relay on $relay"

# Owners and vendor trust exactly this enclave build on the simulated platform.
measurement=$("$bin/sealtune-enclave" measurement)
policy() {
    printf 'version = 1\nallow_simulated = true\nmeasurements = ["%s"]\n\n[job]\nmax_epsilon = 8.0\nmax_delta = 1e-5\nbase_models = ["%s"]\nrecipients = ["%s"]\n\n[budget]\nlifetime_epsilon = 10.0\nlifetime_delta = 1e-5\n' \
        "$measurement" "$model_sha" "$vendor_pub"
}
for h in stmary royalfree; do
    echo "== $h: verify the enclave and grant the key"
    policy > "$out/$h/owner.toml"
    "$bin/sealtune" owner grant --host "$relay" --manifest "$out/vendor/job.cbor" --policy "$out/$h/owner.toml" \
        --dek "$out/$h/notes.dek" --sealed "$out/$h/notes.sealed" --identity "$out/$h/owner.key"
    # The grant was recorded in the owner's ledger before the key left; what is left of the lifetime budget:
    "$bin/sealtune" owner budget --policy "$out/$h/owner.toml" --identity "$out/$h/owner.key"
done

echo "== vendor: wait for training, fetch, verify offline"
policy > "$out/vendor/vendor.toml"
"$bin/sealtune" vendor fetch --host "$relay" --manifest "$out/vendor/job.cbor" --policy "$out/vendor/vendor.toml" \
    --identity "$out/vendor/vendor.key" --out "$out/vendor/adapter"
"$bin/sealtune" verify "$out/vendor/adapter" --policy "$out/vendor/vendor.toml" --manifest "$out/vendor/job.cbor" --json \
    > "$out/vendor/verified.json"
python3 - "$out/vendor/verified.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"receipt verified: epsilon = {r['epsilon']:.3f} (recomputed {r['epsilon_recomputed']:.3f}) at delta = {r['delta']:g}")
print(f"  {r['steps']} DP-SGD steps, q = {r['sampling_rate']}, sigma = {r['noise_multiplier']:.3f}, C = {r['clip_norm']}, unit = {r['privacy_unit']}")
print(f"  datasets: {', '.join(d[:16] + '...' for d in r['datasets'])}")
print(f"  enclave measurement {r['measurement'][:16]}..., simulated = {r['simulated']}")
PY

echo "== base model vs fine-tuned adapter"
prompt="stmary visit note 151. Patient"
python3 scripts/synth_notes.py "stmary" 40 3 > "$out/vendor/heldout.jsonl"
for adapter in "" "$out/vendor/adapter"; do
    label=${adapter:+fine-tuned}; label=${label:-base}
    args=(--model "$model"); [ -n "$adapter" ] && args+=(--adapter "$adapter")
    ppl=$("$bin/sealtune" model eval "${args[@]}" --data "$out/vendor/heldout.jsonl" --json | python3 -c "import json,sys; print(round(json.load(sys.stdin)['perplexity'], 2))")
    text=$("$bin/sealtune" model generate "${args[@]}" --prompt "$prompt" --max-tokens 32)
    echo "[$label] held-out perplexity $ppl"
    echo "[$label] $text"
done
echo "files: adapter and receipt in $out/vendor/adapter/, host store and logs in $out/host/"
