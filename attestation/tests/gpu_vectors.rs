//! NVIDIA H100 SPDM attestation reports (see each vector's PROVENANCE.md).

mod common;

use sealtune_attestation::nvidia::{nonce_for_cpu_report_data, GpuError, GpuReport};
use sealtune_attestation::snp::chain::pem_certificates;
use sealtune_attestation::x509::EcChainError;
use std::path::Path;
use time::macros::datetime;

fn load(base: &Path, report: &str, chain: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let bytes = hex::decode(String::from_utf8(common::read(base, report)).unwrap().trim()).unwrap();
    (bytes, pem_certificates(&String::from_utf8(common::read(base, chain)).unwrap()).unwrap())
}

fn root(base: &Path, file: &str) -> Vec<u8> {
    pem_certificates(&String::from_utf8(common::read(base, file)).unwrap()).unwrap().remove(0)
}

const AT: time::OffsetDateTime = datetime!(2025-06-01 0:00 UTC);

#[test]
fn nvtrust_hopper_sample_verifies_with_its_nonce() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("gpu/nvtrust-hopper-sample");
    let (bytes, chain) = load(&base, "hopperAttestationReport.txt", "hopperCertChain.txt");
    let report = GpuReport::parse(&bytes).unwrap();
    assert_eq!(report.measurements.len(), 64);
    assert!(report.measurements.iter().all(|m| m.value.len() == 48));
    assert_eq!(report.driver_version().as_deref(), Some("550.90.07"));
    assert_eq!(report.vbios_version().as_deref(), Some("96.00.9f.00.01"));
    report.verify(&chain, Some(&root(&base, "verifier_device_root.pem")), AT).unwrap();
    report.verify(&chain, None, AT).unwrap();
    let nonce: [u8; 32] = hex::decode("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb").unwrap().try_into().unwrap();
    report.check_nonce(&nonce).unwrap();
    assert!(matches!(report.check_nonce(&[0; 32]), Err(GpuError::NonceMismatch { .. })));
}

#[test]
fn coco_hopper_report_is_bound_to_the_cpu_report_data() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("gpu/trustee-hopper-coco");
    let (bytes, chain) = load(&base, "hopper_coco_report1.txt", "hopper_coco_certs1.txt");
    assert_eq!(bytes.last(), Some(&0), "the vector carries one trailing zero byte");
    let report = GpuReport::parse(&bytes).unwrap();
    report.verify(&chain, Some(&root(&base, "nvidia_device_root.pem")), AT).unwrap();
    let mut cpu_report_data = [0u8; 64];
    let cpu = hex::decode("87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fece279b616efefc2aae21da80cf5581250").unwrap();
    cpu_report_data[..48].copy_from_slice(&cpu);
    report.check_nonce(&nonce_for_cpu_report_data(&cpu_report_data)).unwrap();
}

#[test]
fn tampered_gpu_evidence_is_rejected() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("gpu/nvtrust-hopper-sample");
    let (bytes, chain) = load(&base, "hopperAttestationReport.txt", "hopperCertChain.txt");
    let sig_at = bytes.len() - 96;
    for i in [5, 40, 100, 2000, sig_at - 300, sig_at - 1, sig_at, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        let result = GpuReport::parse(&bad).and_then(|r| r.verify(&chain, None, AT));
        assert!(result.is_err(), "flip at {i} accepted");
    }
    let mut extra = bytes.clone();
    extra.extend_from_slice(&[0, 0]);
    assert_eq!(GpuReport::parse(&extra), Err(GpuError::TrailingBytes(2)));
    let report = GpuReport::parse(&bytes).unwrap();
    // A chain missing its root, and a chain with a foreign (Intel) root.
    assert!(matches!(report.verify(&chain[..4], None, AT), Err(GpuError::Chain(EcChainError::Length { .. }))));
    let intel = common::read(&dir.join("tdx/dcap-qvl-v4-uptodate"), "TrustedRootCA.der");
    assert!(matches!(report.verify(&chain, Some(&intel), AT), Err(GpuError::Chain(EcChainError::UntrustedRoot { .. }))));
    // The other GPU's chain does not sign this report.
    let (_, other_chain) = load(&dir.join("gpu/trustee-hopper-coco"), "hopper_coco_report1.txt", "hopper_coco_certs1.txt");
    assert_eq!(report.verify(&other_chain, None, AT), Err(GpuError::BadSignature));
}
