//! A key grant as the enclave checks it against its manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::grant::check_grant;
use sealtune_attestation::manifest::{BaseModel, DatasetRef, JobManifest, LoraTerms, PrivacyTerms, TrainingTerms, MANIFEST_VERSION};

fuzz_target!(|data: &[u8]| {
    let manifest = JobManifest {
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
    };
    let _ = check_grant(data, &manifest);
});
