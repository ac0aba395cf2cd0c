//! Replays the committed fuzz corpus (`fuzz/replay/<target>/`: a minimized
//! sample of what `fuzz/run.sh` explored, and any finding) through the same
//! calls as the fuzz targets in `fuzz/fuzz_targets/`, on stable: none may
//! panic. The long fuzz runs stay out of CI (`docs/fuzzing.md`).

use sealtune_attestation::cbor;
use sealtune_attestation::evidence::Evidence;
use sealtune_attestation::grant::check_grant;
use sealtune_attestation::ledger::Ledger;
use sealtune_attestation::manifest::{BaseModel, DatasetRef, JobManifest, LoraTerms, PrivacyTerms, TrainingTerms, SignedManifest, MANIFEST_VERSION};
use sealtune_attestation::policy::Policy;
use sealtune_attestation::protocol::{Request, Response, StoreRequest, StoreResponse};
use sealtune_attestation::receipt::{Receipt, SignedReceipt};
use sealtune_attestation::sealed::record::{parse_jsonl, validate_jsonl};
use sealtune_attestation::sealed::{self, DataKey, Header};
use std::path::Path;

/// The owner of the ledger vector, as in `fuzz/fuzz_targets/ledger.rs`.
const LEDGER_OWNER: [u8; 32] = [
    0xa0, 0x9a, 0xa5, 0xf4, 0x7a, 0x67, 0x59, 0x80, 0x2f, 0xf9, 0x55, 0xf8, 0xdc, 0x2d, 0x2a, 0x14, 0xa5, 0xc9, 0x9d, 0x23, 0xbe, 0x97, 0xf8, 0x64,
    0x12, 0x7f, 0xf9, 0x38, 0x34, 0x55, 0xa4, 0xf0,
];

fn grant_manifest() -> JobManifest {
    JobManifest {
        version: MANIFEST_VERSION,
        job_id: "fuzz".into(),
        base_model: BaseModel { name: "m".into(), sha256: [1; 32] },
        lora: LoraTerms { rank: 8, alpha: 16.0, targets: vec!["q".into()] },
        training: TrainingTerms { optimizer: "adamw".into(), learning_rate: 1e-3, max_seq_len: 64 },
        privacy: PrivacyTerms {
            epsilon: 8.0,
            delta: 1e-5,
            clip_norm: 1.0,
            sampling_rate: 0.01,
            expected_batch_size: 1.0,
            max_steps: 10,
            accountant: "pld".into(),
            privacy_unit: "record".into(),
        },
        datasets: vec![DatasetRef { commitment: [2; 32], owner: [3; 32] }],
        recipients: vec![[4; 32].into()],
    }
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/replay").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&data)));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{target}: no inputs in {}", dir.display());
}

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    replay("sealed_stream", |data| {
        let _ = Header::read_from(&mut &data[..]);
        let _ = sealed::open(data, std::io::sink(), &DataKey::from_bytes([7; 32]));
    });
    replay("manifest", |data| {
        let _ = SignedManifest::open(data);
        let _ = JobManifest::from_cbor(data);
    });
    let manifest = grant_manifest();
    replay("grant", |data| {
        let _ = check_grant(data, &manifest);
    });
    replay("protocol", |data| {
        let _ = Request::from_cbor(data);
        let _ = Response::from_cbor(data);
        let _ = StoreRequest::from_cbor(data);
        let _ = StoreResponse::from_cbor(data);
    });
    replay("evidence", |data| {
        if let Ok(evidence) = Evidence::from_cbor(data) {
            let _ = evidence.snp_chain();
        }
    });
    replay("receipt", |data| {
        if let Ok(signed) = cbor::from_slice::<SignedReceipt>(data) {
            let _ = cbor::from_slice::<Receipt>(&signed.receipt);
        }
    });
    replay("ledger", |data| {
        let _ = Ledger::from_cbor(data, &LEDGER_OWNER);
    });
    replay("policy", |data| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = Policy::from_toml(text);
        }
    });
    replay("jsonl_records", |data| {
        let _ = validate_jsonl(data);
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = parse_jsonl(text);
        }
    });
}
