#!/usr/bin/env bash
# The main job, end to end on the simulated enclave (README's first command).
#
# Today this walks the trust-core flow over the CLI: a simulated SEV-SNP
# platform, a data owner sealing synthetic clinical notes, a vendor's job
# manifest, the enclave answering the owner's challenge, the owner verifying
# the evidence and granting the key, and the enclave opening the corpus in
# memory. It ends by comparing the enclave's plaintext digest with the
# owner's file.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --quiet
bin=target/debug
out=demo-out
rm -rf "$out" && mkdir -p "$out"

echo "== simulated platform"
"$bin/sealtune" sim init --out "$out/sim"

echo "== data owner: identity key and sealed corpus"
owner_pub=$("$bin/sealtune" owner keygen --out "$out/owner.key")
python3 scripts/synth_notes.py "St. Example Hospital" 60 1 > "$out/notes.jsonl"
commitment=$("$bin/sealtune" owner seal "$out/notes.jsonl" --out "$out/notes.sealed" --dek-out "$out/notes.dek")
"$bin/sealtune" owner inspect "$out/notes.sealed"

echo "== model vendor: job manifest"
vendor_pub=$("$bin/sealtune" owner keygen --out "$out/vendor.key")
printf 'base model placeholder: the trust-core flow does not train\n' > "$out/base-model.bin"
model_sha=$(sha256sum "$out/base-model.bin" | cut -d' ' -f1)
manifest_hash=$("$bin/sealtune" vendor job --model "$out/base-model.bin" --dataset "$commitment:$owner_pub" \
    --recipient "$vendor_pub" --epsilon 8 --delta 1e-5 --sampling-rate 0.05 --expected-batch 3 \
    --max-steps 200 --out "$out/job.cbor")
echo "manifest hash $manifest_hash"

echo "== owner policy: trust this enclave build on the simulated platform"
measurement=$("$bin/sealtune-enclave" measurement)
cat > "$out/owner.toml" <<TOML
version = 1
allow_simulated = true
measurements = ["$measurement"]

[job]
max_epsilon = 8.0
max_delta = 1e-5
base_models = ["$model_sha"]
recipients = ["$vendor_pub"]
TOML

echo "== enclave: answer the owner's challenge, then wait for the grant"
nonce=$("$bin/sealtune" owner challenge)
"$bin/sealtune-enclave" key-release --manifest "$out/job.cbor" --sim-platform "$out/sim" \
    --challenge "$nonce=$out/evidence.cbor" --grant "$out/grant.cbor=$out/notes.sealed" \
    --timeout-secs 60 > "$out/enclave.log" &
enclave_pid=$!
for _ in $(seq 1 100); do [ -f "$out/evidence.cbor" ] && break; sleep 0.1; done

echo "== owner: verify the evidence and grant the key"
"$bin/sealtune" attest verify --tee sim --evidence "$out/evidence.cbor" --policy "$out/owner.toml"
"$bin/sealtune" owner grant --evidence "$out/evidence.cbor" --nonce "$nonce" --policy "$out/owner.toml" \
    --manifest "$out/job.cbor" --dek "$out/notes.dek" --sealed "$out/notes.sealed" \
    --identity "$out/owner.key" --out "$out/grant.cbor"
wait "$enclave_pid"
cat "$out/enclave.log"

owner_sha=$(sha256sum "$out/notes.jsonl" | cut -d' ' -f1)
if grep -q "plaintext sha256 $owner_sha" "$out/enclave.log"; then
    echo "OK: the enclave decrypted exactly the owner's corpus ($owner_sha)"
else
    echo "FAIL: the enclave's plaintext digest differs from the owner's ($owner_sha)" >&2
    exit 1
fi
echo "files are in $out/"
