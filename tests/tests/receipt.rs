//! Receipts: issued by a simulated enclave, verified offline, and each
//! tampering caught by its own check.

use sealtune_attestation::manifest::JobManifest;
use sealtune_attestation::policy::Policy;
use sealtune_attestation::accountant::AccountantError;
use sealtune_attestation::receipt::{check_epsilon, recompute_epsilon, verify_receipt, OutputFile, PrivacySpent, Receipt, ReceiptError, RECEIPT_VERSION};
use sealtune_attestation::verify::VerifyError;
use sealtune_enclave::keys::EnclaveKeys;
use sealtune_enclave::receipt::issue_receipt;
use sealtune_enclave::tee::sim::{SimLaunch, SimPlatform, SimTee};
use sealtune_tests::fixtures::{manifest, owner_policy, MEASUREMENT};
use sha2::{Digest, Sha256};
use std::path::Path;
use time::OffsetDateTime;

struct Issued {
    dir: tempfile::TempDir,
    bytes: Vec<u8>,
    manifest: JobManifest,
}

fn receipt_for(manifest: &JobManifest, dir: &Path, simulated: bool) -> Receipt {
    let weights = b"adapter weights".to_vec();
    std::fs::write(dir.join("adapter_model.safetensors"), &weights).unwrap();
    Receipt {
        version: RECEIPT_VERSION,
        manifest_hash: manifest.hash(),
        base_model: manifest.base_model.sha256,
        datasets: manifest.datasets.clone(),
        privacy: PrivacySpent {
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            clip_norm: 1.0,
            expected_batch_size: 10.0,
            steps: 100,
            delta: 1e-5,
            privacy_unit: "record".into(),
            neighbouring: "add/remove one record".into(),
            accountant: "pld".into(),
            accountant_version: "test".into(),
            epsilon: 2.0,
        },
        outputs: vec![OutputFile { name: "adapter_model.safetensors".into(), sha256: Sha256::digest(&weights).into() }],
        software_version: "test".into(),
        measurement: MEASUREMENT,
        simulated,
    }
}

fn issue() -> Issued {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(&[([1; 32], [2; 32])]);
    let tee = SimTee::launch(SimPlatform::generate(), SimLaunch::new(MEASUREMENT, manifest.hash()));
    let receipt = receipt_for(&manifest, dir.path(), true);
    let bytes = issue_receipt(&receipt, &EnclaveKeys::generate(), &tee).unwrap();
    Issued { dir, bytes, manifest }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn an_issued_receipt_verifies_offline() {
    let i = issue();
    let verified = verify_receipt(&i.bytes, i.dir.path(), &owner_policy(), now()).unwrap();
    assert_eq!(verified.receipt.manifest_hash, i.manifest.hash());
    assert!(verified.claims.simulated);
    check_epsilon(&verified.receipt, 1.9, &owner_policy()).unwrap();
}

#[test]
fn a_receipt_whose_epsilon_cannot_be_recomputed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut receipt = receipt_for(&manifest(&[([1; 32], [2; 32])]), dir.path(), true);
    assert!(recompute_epsilon(&receipt).unwrap() > 0.0);
    receipt.privacy.sampling_rate = 0.0;
    assert!(matches!(recompute_epsilon(&receipt), Err(ReceiptError::Recomputation(AccountantError::InvalidSamplingRate(_)))));
    receipt.privacy.delta = 1.0;
    receipt.privacy.sampling_rate = 0.01;
    assert!(matches!(recompute_epsilon(&receipt), Err(ReceiptError::Recomputation(AccountantError::InvalidDelta(_)))));
    receipt.privacy.accountant = "moments".into();
    assert!(matches!(recompute_epsilon(&receipt), Err(ReceiptError::UnknownAccountant(name)) if name == "moments"));
}

#[test]
fn every_bit_flip_of_the_receipt_is_caught() {
    let i = issue();
    // Flip bits across the whole document (every 7th byte keeps the test quick
    // while touching every field, the signature and the evidence).
    for at in (0..i.bytes.len()).step_by(7) {
        let mut bad = i.bytes.clone();
        bad[at] ^= 0x04;
        assert!(verify_receipt(&bad, i.dir.path(), &owner_policy(), now()).is_err(), "flip at {at} accepted");
    }
}

#[test]
fn a_replaced_weight_file_is_caught() {
    let i = issue();
    std::fs::write(i.dir.path().join("adapter_model.safetensors"), b"other weights").unwrap();
    let err = verify_receipt(&i.bytes, i.dir.path(), &owner_policy(), now()).unwrap_err();
    assert!(matches!(err, ReceiptError::OutputDigest(_)), "{err}");
    std::fs::remove_file(i.dir.path().join("adapter_model.safetensors")).unwrap();
    let err = verify_receipt(&i.bytes, i.dir.path(), &owner_policy(), now()).unwrap_err();
    assert!(matches!(err, ReceiptError::MissingOutput(_)), "{err}");
}

#[test]
fn simulated_receipts_fail_under_a_production_policy() {
    let i = issue();
    let production = Policy { allow_simulated: false, ..owner_policy() };
    let err = verify_receipt(&i.bytes, i.dir.path(), &production, now()).unwrap_err();
    assert!(matches!(err, ReceiptError::Verify(VerifyError::SimulatedNotAllowed)), "{err}");
}

#[test]
fn epsilon_is_checked_against_recomputation_and_policy() {
    let i = issue();
    let verified = verify_receipt(&i.bytes, i.dir.path(), &owner_policy(), now()).unwrap();
    let err = check_epsilon(&verified.receipt, 2.5, &owner_policy()).unwrap_err();
    assert!(matches!(err, ReceiptError::EpsilonUnderstated { .. }), "{err}");
    let mut strict = owner_policy();
    strict.job.as_mut().unwrap().max_epsilon = 1.0;
    let err = check_epsilon(&verified.receipt, 2.0, &strict).unwrap_err();
    assert!(matches!(err, ReceiptError::EpsilonOverPolicy { .. }), "{err}");
}

#[test]
fn a_receipt_claiming_real_hardware_from_a_simulated_enclave_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(&[([1; 32], [2; 32])]);
    let tee = SimTee::launch(SimPlatform::generate(), SimLaunch::new(MEASUREMENT, manifest.hash()));
    let receipt = receipt_for(&manifest, dir.path(), false);
    let bytes = issue_receipt(&receipt, &EnclaveKeys::generate(), &tee).unwrap();
    let err = verify_receipt(&bytes, dir.path(), &owner_policy(), now()).unwrap_err();
    assert!(matches!(err, ReceiptError::ClaimMismatch("simulated flag")), "{err}");
}
