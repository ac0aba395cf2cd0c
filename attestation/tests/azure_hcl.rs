//! Azure HCL reports (SNP Milan and Genoa, TDX): the runtime claims are
//! bound by REPORT_DATA[0..32], and the inner report verifies as usual.

mod common;

use sealtune_attestation::azure::{HclError, HclReport, HclReportType};
use sealtune_attestation::evidence::{EnclavePublicKeys, Evidence, TeeKind, EVIDENCE_VERSION};
use sealtune_attestation::policy::Policy;
use sealtune_attestation::snp::chain::{pem_certificates, CertChain};
use sealtune_attestation::snp::report::SnpReport;
use sealtune_attestation::tdx::quote::TdxQuote;
use sealtune_attestation::verify::verify_report;
use time::macros::datetime;

fn pem(dir: &std::path::Path, rel: &str) -> Vec<Vec<u8>> {
    pem_certificates(&String::from_utf8(common::read(dir, rel)).unwrap()).unwrap()
}

fn check_snp(hcl_bytes: &[u8], vcek: Vec<u8>, pool: &[Vec<u8>], expected_digest: &str) {
    let hcl = HclReport::parse(hcl_bytes).unwrap();
    assert_eq!(hcl.report_type, HclReportType::Snp);
    let report = SnpReport::parse(&hcl.hw_report).unwrap();
    hcl.check_binding(&report.report_data).unwrap();
    assert!(hex::encode(report.report_data).starts_with(expected_digest));
    let chain = CertChain::assemble(vcek, pool).unwrap();
    let evidence = Evidence {
        version: EVIDENCE_VERSION,
        tee: TeeKind::SevSnp,
        report: hcl.hw_report.clone(),
        certs: vec![chain.endorsement.into(), chain.intermediate.into(), chain.root.into()],
        keys: EnclavePublicKeys { kem: [0; 32], signing: [0; 32] },
    };
    let policy = Policy {
        version: 1,
        allow_simulated: false,
        allow_debug: false,
        max_vmpl: 0,
        measurements: vec![hex::encode(report.measurement)],
        min_tcb: None,
        tdx: None,
        job: None,
        budget: None,
    };
    verify_report(&evidence, &policy, datetime!(2025-06-01 0:00 UTC)).unwrap();

    // Any change to the runtime claims breaks the binding.
    let mut tampered = hcl.clone();
    tampered.runtime_claims[10] ^= 1;
    assert!(matches!(tampered.check_binding(&report.report_data), Err(HclError::BindingMismatch { .. })));
}

#[test]
fn azure_milan_hcl_binds_its_runtime_claims() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("snp/trustee-azure-hcl-milan-v2");
    let hcl = common::read(&base, "hcl-report.bin");
    assert_eq!(HclReport::parse(&hcl).unwrap().hw_report, common::read(&base, "snp_report.bin"));
    let pool = pem(&dir.join("snp/trustee-milan-v2-vcek"), "milan_ask_ark_asvk.pem");
    check_snp(&hcl, pem(&base, "vcek.pem").remove(0), &pool, "b3fbad6514c83cae");
}

#[test]
fn azure_genoa_hcl_binds_its_runtime_claims() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("snp/trustee-azure-hcl-genoa-v3");
    let hcl = common::read(&base, "hcl-report.bin");
    let pool = pem(&base, "genoa_ask_ark_asvk.pem");
    check_snp(&hcl, pem(&base, "vcek-genoa.pem").remove(0), &pool, "b581f12e29a2d7d6");
}

#[test]
fn azure_tdx_hcl_is_bound_by_the_quote() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/trustee-azure-hcl-tdx");
    let hcl = HclReport::parse(&common::read(&base, "hcl-report.bin")).unwrap();
    assert_eq!(hcl.report_type, HclReportType::Tdx);
    let quote = TdxQuote::parse(&common::read(&base, "td-quote.bin")).unwrap();
    quote.verify_signatures(None, datetime!(2024-01-01 0:00 UTC)).unwrap();
    hcl.check_binding(&quote.report.report_data).unwrap();
}

#[test]
fn malformed_hcl_reports_are_refused() {
    assert_eq!(HclReport::parse(b"HCLA"), Err(HclError::Malformed("shorter than header, hardware report and claims header")));
    assert_eq!(HclReport::parse(&[0; 2600]), Err(HclError::Malformed("no HCLA magic")));
    let mut bytes = vec![0u8; 2600];
    bytes[..4].copy_from_slice(b"HCLA");
    bytes[0x4C0 + 8] = 2;
    bytes[0x4C0 + 12] = 1;
    bytes[0x4C0 + 16..0x4C0 + 20].copy_from_slice(&5000u32.to_le_bytes());
    bytes[0x4C0..0x4C0 + 4].copy_from_slice(&5000u32.to_le_bytes());
    assert_eq!(HclReport::parse(&bytes), Err(HclError::Malformed("runtime claims length points outside the report")));
    bytes[0x4C0 + 12] = 2;
    assert_eq!(HclReport::parse(&bytes), Err(HclError::UnsupportedHash(2)));
}
