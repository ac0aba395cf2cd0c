//! Test fixtures: a job manifest and policies in the shapes users write them.

use sealtune_attestation::identity::IdentityKey;
use sealtune_attestation::manifest::{BaseModel, DatasetRef, JobManifest, LoraTerms, PrivacyTerms, TrainingTerms, MANIFEST_VERSION};
use sealtune_attestation::policy::{JobTerms, Policy, POLICY_VERSION};
use sealtune_enclave::tee::sim::SimPlatform;
use std::sync::OnceLock;

/// The simulated platform of this test binary: generated once (RSA key
/// generation is the slow part), loaded fresh for each caller.
pub fn sim_platform() -> SimPlatform {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        SimPlatform::generate().save(dir.path()).expect("saving the simulated platform");
        dir
    });
    SimPlatform::load(dir.path()).expect("loading the simulated platform")
}

/// The measurement tests launch simulated guests with.
pub const MEASUREMENT: [u8; 48] = [0x5e; 48];
/// The base model digest of [`manifest`].
pub const BASE_MODEL: [u8; 32] = [0xb0; 32];
/// The vendor of [`manifest`]: its only recipient.
pub fn vendor() -> &'static IdentityKey {
    static KEY: OnceLock<IdentityKey> = OnceLock::new();
    KEY.get_or_init(IdentityKey::generate)
}

/// A valid job over `datasets` (commitment, owner key).
pub fn manifest(datasets: &[([u8; 32], [u8; 32])]) -> JobManifest {
    JobManifest {
        version: MANIFEST_VERSION,
        job_id: "test-job".into(),
        base_model: BaseModel { name: "tiny".into(), sha256: BASE_MODEL },
        lora: LoraTerms { rank: 8, alpha: 16.0, targets: vec!["q".into(), "v".into()] },
        training: TrainingTerms { optimizer: "adamw".into(), learning_rate: 1e-3, max_seq_len: 128 },
        privacy: PrivacyTerms {
            epsilon: 8.0,
            delta: 1e-5,
            clip_norm: 1.0,
            sampling_rate: 0.01,
            expected_batch_size: 10.0,
            max_steps: 100,
            accountant: "pld".into(),
            privacy_unit: "record".into(),
        },
        datasets: datasets.iter().map(|&(commitment, owner)| DatasetRef { commitment, owner }).collect(),
        recipients: vec![vendor().public().into()],
    }
}

/// An owner's policy that accepts [`manifest`] on the simulated platform.
pub fn owner_policy() -> Policy {
    Policy {
        version: POLICY_VERSION,
        allow_simulated: true,
        allow_debug: false,
        max_vmpl: 0,
        measurements: vec![hex(&MEASUREMENT)],
        min_tcb: None,
        tdx: None,
        job: Some(JobTerms {
            max_epsilon: 8.0,
            max_delta: 1e-5,
            base_models: vec![hex(&BASE_MODEL)],
            recipients: vec![hex(&vendor().public())],
        }),
        budget: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
