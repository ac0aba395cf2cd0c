//! Real SEV-SNP reports captured on AMD hardware (see each vector's
//! PROVENANCE.md for its source and the verdict it must get).

mod common;

use sealtune_attestation::evidence::{EnclavePublicKeys, Evidence, TeeKind, EVIDENCE_VERSION};
use sealtune_attestation::policy::Policy;
use sealtune_attestation::snp::chain::{pem_certificates, ChainError};
use sealtune_attestation::snp::report::SnpReport;
use sealtune_attestation::verify::{verify_report, VerifyError};
use time::macros::datetime;
use time::OffsetDateTime;

struct Vector {
    name: &'static str,
    report: &'static str,
    endorsement: &'static str,
    /// PEM file and the positions of the intermediate and root in it.
    chain: (&'static str, usize, usize),
    /// Files holding the root when it is separate from the intermediate.
    root_file: Option<&'static str>,
    at: OffsetDateTime,
}

/// Times come from each PROVENANCE.md.
const VECTORS: &[Vector] = &[
    Vector { name: "virtee-sev-milan-v2", report: "report_milan.hex", endorsement: "vcek_milan.der", chain: ("cert_chain_milan.pem", 0, 1), root_file: None, at: datetime!(2024-01-01 0:00 UTC) },
    Vector { name: "go-sev-guest-milan-v2-debug", report: "attestation.bin", endorsement: "vcek.der", chain: ("ask_ark_milan.pem", 0, 1), root_file: None, at: datetime!(2023-01-01 0:00 UTC) },
    Vector { name: "trustee-milan-v2-vcek", report: "test-report.bin", endorsement: "test-vcek.der", chain: ("milan_ask_ark_asvk.pem", 0, 1), root_file: None, at: datetime!(2025-06-01 0:00 UTC) },
    Vector { name: "trustee-milan-v3-aws-vlek", report: "test-vlek-report.bin", endorsement: "test-vlek.der", chain: ("milan_ask_ark_asvk.pem", 2, 1), root_file: None, at: datetime!(2025-06-01 0:00 UTC) },
    Vector { name: "oak-milan-v3", report: "report.bin", endorsement: "vcek.der", chain: ("ask_milan.pem", 0, 0), root_file: Some("ark_milan.pem"), at: datetime!(2025-10-01 8:00 UTC) },
    Vector { name: "oak-genoa-v5", report: "report.bin", endorsement: "vcek.der", chain: ("ask_genoa.pem", 0, 0), root_file: Some("ark_genoa.pem"), at: datetime!(2025-10-01 8:00 UTC) },
    Vector { name: "oak-turin-v5", report: "report.bin", endorsement: "vcek.der", chain: ("ask_turin.pem", 0, 0), root_file: Some("ark_turin.pem"), at: datetime!(2025-10-01 8:00 UTC) },
];

fn load(dir: &std::path::Path, v: &Vector) -> Evidence {
    let base = dir.join("snp").join(v.name);
    let mut report = common::read(&base, v.report);
    if v.report.ends_with(".hex") {
        report = hex::decode(String::from_utf8(report).unwrap().trim()).unwrap();
    }
    let pem = pem_certificates(&String::from_utf8(common::read(&base, v.chain.0)).unwrap()).unwrap();
    let root = match v.root_file {
        Some(f) => pem_certificates(&String::from_utf8(common::read(&base, f)).unwrap()).unwrap().remove(0),
        None => pem[v.chain.2].clone(),
    };
    Evidence {
        version: EVIDENCE_VERSION,
        tee: TeeKind::SevSnp,
        report,
        certs: vec![common::read(&base, v.endorsement).into(), pem[v.chain.1].clone().into(), root.into()],
        keys: EnclavePublicKeys { kem: [0; 32], signing: [0; 32] },
    }
}

fn policy_for(evidence: &Evidence, allow_debug: bool) -> Policy {
    let report = SnpReport::parse(&evidence.report).unwrap();
    Policy {
        version: 1,
        allow_simulated: false,
        allow_debug,
        // The AWS VLEK vector was captured at VMPL 1 (PROVENANCE.md).
        max_vmpl: report.vmpl,
        measurements: vec![hex::encode(report.measurement)],
        min_tcb: None,
        tdx: None,
        job: None,
        budget: None,
    }
}

#[test]
fn every_real_report_verifies_at_its_documented_time() {
    let Some(dir) = common::vectors_dir() else { return };
    for v in VECTORS {
        let evidence = load(&dir, v);
        let debug = v.name.contains("debug");
        let verified = verify_report(&evidence, &policy_for(&evidence, debug), v.at)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert!(!verified.claims.simulated, "{}", v.name);
        assert_eq!(verified.claims.debug, debug, "{}", v.name);
    }
}

#[test]
fn debug_report_is_rejected_without_allow_debug() {
    let Some(dir) = common::vectors_dir() else { return };
    let v = VECTORS.iter().find(|v| v.name == "go-sev-guest-milan-v2-debug").unwrap();
    let evidence = load(&dir, v);
    let err = verify_report(&evidence, &policy_for(&evidence, false), v.at).unwrap_err();
    assert!(matches!(err, VerifyError::DebugEnabled), "{err}");
}

#[test]
fn vlek_fails_after_its_certificate_expired() {
    let Some(dir) = common::vectors_dir() else { return };
    let v = VECTORS.iter().find(|v| v.name == "trustee-milan-v3-aws-vlek").unwrap();
    let evidence = load(&dir, v);
    let err = verify_report(&evidence, &policy_for(&evidence, false), datetime!(2026-01-01 0:00 UTC)).unwrap_err();
    assert!(matches!(err, VerifyError::Validity(_)), "{err}");
}

#[test]
fn published_tamper_cases_fail() {
    let Some(dir) = common::vectors_dir() else { return };
    // trustee: report[42] += 1 breaks the signature; report[384] += 1 (REPORTED_TCB.bootloader)
    // is caught too (signature first, since the TCB is signed).
    let v = VECTORS.iter().find(|v| v.name == "trustee-milan-v2-vcek").unwrap();
    let evidence = load(&dir, v);
    let policy = policy_for(&evidence, false);
    for at in [42usize, 384, 21] {
        let mut bad = evidence.clone();
        bad.report[at] = bad.report[at].wrapping_add(1);
        let err = verify_report(&bad, &policy, v.at).unwrap_err();
        assert!(matches!(err, VerifyError::Chain(ChainError::BadReportSignature)), "byte {at}: {err}");
    }
    // virtee: vcek_der[40] ^= 0xff breaks the chain.
    let mut bad = evidence.clone();
    let mut vcek = bad.certs[0].to_vec();
    vcek[40] ^= 0xff;
    bad.certs[0] = vcek.into();
    assert!(matches!(verify_report(&bad, &policy, v.at), Err(VerifyError::Chain(_))));
}

#[test]
fn every_byte_flip_in_the_signed_region_and_signature_fails() {
    let Some(dir) = common::vectors_dir() else { return };
    for v in VECTORS {
        let evidence = load(&dir, v);
        // The chain does not depend on the report: verify it once, then run
        // each tampered report through parsing and the report signature check.
        let chain = evidence.snp_chain().unwrap();
        let verified_chain = chain.verify().unwrap();
        // Signed region 0..0x2A0, r and s (72 bytes each), and the unsigned
        // reserved tail of the signature field, which must stay zero.
        for at in 0..evidence.report.len() {
            let mut bad = evidence.report.clone();
            bad[at] ^= 0x01;
            let accepted = SnpReport::parse(&bad).is_ok_and(|r| verified_chain.verify_report(&bad, &r).is_ok());
            assert!(!accepted, "{}: flip at {at:#x} accepted", v.name);
        }
    }
}
