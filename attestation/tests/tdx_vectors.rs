//! Real Intel TDX quotes (see each vector's PROVENANCE.md for its source and
//! the verdict it must get at its documented time).

mod common;

use sealtune_attestation::evidence::{EnclavePublicKeys, Evidence, TeeKind, EVIDENCE_VERSION};
use sealtune_attestation::policy::{Policy, TdxPolicy};
use sealtune_attestation::tdx::quote::{mr_config_id_for, QuoteError, TdxQuote};
use sealtune_attestation::tdx::{CollateralError, TcbVerdict, TdxCollateral};
use sealtune_attestation::verify::{verify_report, verify_tdx_report, PlatformClaims, VerifyError};
use sealtune_attestation::x509::EcChainError;
use std::path::Path;
use time::macros::datetime;
use time::OffsetDateTime;

fn evidence(quote: Vec<u8>) -> Evidence {
    Evidence {
        version: EVIDENCE_VERSION,
        tee: TeeKind::Tdx,
        report: quote,
        certs: vec![],
        keys: EnclavePublicKeys { kem: [0; 32], signing: [0; 32] },
    }
}

fn policy_for(quote: &[u8], allow_debug: bool) -> Policy {
    let parsed = TdxQuote::parse(quote).unwrap();
    Policy {
        version: 1,
        allow_simulated: false,
        allow_debug,
        max_vmpl: 0,
        measurements: vec![hex::encode(parsed.report.mr_td)],
        min_tcb: None,
        tdx: None,
        job: None,
        budget: None,
    }
}

fn collateral(dir: &Path, rel: &str) -> TdxCollateral {
    TdxCollateral::from_json(&String::from_utf8(common::read(dir, rel)).unwrap()).unwrap()
}

/// The exact bytes of `key`'s value in a PCS response `{"key":VALUE,"signature":"HEX"}`:
/// the signature covers those bytes, so they must not be re-serialised.
fn pcs_body(response: &str, key: &str) -> (String, String) {
    let prefix = format!("{{\"{key}\":");
    let sig_at = response.rfind(",\"signature\":\"").unwrap();
    let body = response.strip_prefix(&prefix).unwrap()[..sig_at - prefix.len()].to_string();
    let sig = response[sig_at + 14..].trim_end().trim_end_matches("\"}").to_string();
    (body, sig)
}

/// go-tdx-guest ships PCS responses, DER CRLs and issuer chains as separate
/// files; this is the same collateral in dcap-qvl's QuoteCollateralV3 layout.
fn go_tdx_guest_collateral(base: &Path) -> TdxCollateral {
    let text = |f: &str| String::from_utf8(common::read(base, f)).unwrap();
    let (tcb_info, tcb_sig) = pcs_body(&text("sample_tcbInfo_response"), "tcbInfo");
    let (qe_identity, qe_sig) = pcs_body(&text("sample_qeIdentity_response"), "enclaveIdentity");
    let json = serde_json::json!({
        "pck_crl_issuer_chain": text("pck_crl_issuer_chain.pem"),
        "root_ca_crl": hex::encode(common::read(base, "rootcrl.der")),
        "pck_crl": hex::encode(common::read(base, "pckcrl")),
        "tcb_info_issuer_chain": text("tcb_info_issuer_chain.pem"),
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_sig,
        "qe_identity_issuer_chain": text("qe_identity_issuer_chain.pem"),
        "qe_identity": qe_identity,
        "qe_identity_signature": qe_sig,
    });
    TdxCollateral::from_json(&json.to_string()).unwrap()
}

fn appraisal_error(err: VerifyError) -> String {
    match err {
        VerifyError::Collateral(CollateralError::Appraisal(msg)) => msg,
        other => panic!("expected a DCAP appraisal failure, got {other}"),
    }
}

const UPTODATE_AT: OffsetDateTime = datetime!(2025-07-19 10:00:34 UTC);

#[test]
fn dcap_qvl_v4_is_up_to_date_at_its_time() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/dcap-qvl-v4-uptodate");
    let quote = common::read(&base, "tdx_quote.bin");
    let root = common::read(&base, "TrustedRootCA.der");
    let c = collateral(&base, "tdx_quote_collateral.json");
    let policy = policy_for(&quote, false);
    let verified = verify_tdx_report(&evidence(quote.clone()), &c, Some(&root), &policy, UPTODATE_AT).unwrap();
    let claims = &verified.claims;
    assert_eq!((claims.tee, claims.version, claims.debug, claims.signing_key), ("tdx", 4, false, "pck"));
    assert_eq!(claims.measurement, "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
    assert_eq!(claims.host_data, "00".repeat(48));
    assert!(claims.report_data.starts_with("9a9d48e7f6799642"));
    let PlatformClaims::Tdx { rtmr, tcb, .. } = &claims.platform else { panic!("TDX claims expected") };
    assert_eq!(tcb.status, "UpToDate");
    assert!(tcb.advisory_ids.is_empty());
    assert!(rtmr[0].starts_with("44c0197b39157fdd"));

    // Without --root the quote's own copy of the root is used, and it is the pinned one.
    assert!(verify_tdx_report(&evidence(quote.clone()), &c, None, &policy, UPTODATE_AT).is_ok());

    // One second after the earliest nextUpdate, the collateral is stale.
    let late = UPTODATE_AT + time::Duration::seconds(2);
    appraisal_error(verify_tdx_report(&evidence(quote.clone()), &c, Some(&root), &policy, late).unwrap_err());

    let other_mrtd = Policy { measurements: vec!["11".repeat(48)], ..policy.clone() };
    let err = verify_tdx_report(&evidence(quote.clone()), &c, Some(&root), &other_mrtd, UPTODATE_AT).unwrap_err();
    assert!(matches!(err, VerifyError::MeasurementNotAllowed(_)), "{err}");

    let rtmr_policy = Policy { tdx: Some(TdxPolicy { rtmr2: Some(vec!["22".repeat(48)]), ..TdxPolicy::default() }), ..policy.clone() };
    let err = verify_tdx_report(&evidence(quote.clone()), &c, Some(&root), &rtmr_policy, UPTODATE_AT).unwrap_err();
    assert!(matches!(err, VerifyError::RtmrNotAllowed { register: 2, .. }), "{err}");

    // MRCONFIGID binds the manifest as hash ‖ 16 zero bytes; this TD's is all zero.
    assert_eq!(mr_config_id_for(&[0; 32]), [0; 48]);
    let ev = evidence(quote.clone());
    let verified = verify_tdx_report(&ev, &c, Some(&root), &policy, UPTODATE_AT).unwrap();
    let err = verified.clone().bind(&ev, &[1; 32], &[0; 64]).unwrap_err();
    assert!(matches!(err, VerifyError::ManifestMismatch { .. }), "{err}");
    let err = verified.clone().bind(&ev, &[0; 32], &[0; 64]).unwrap_err();
    assert!(matches!(err, VerifyError::ReportDataMismatch), "{err}");
    let report_data: [u8; 64] = TdxQuote::parse(&quote).unwrap().report.report_data;
    assert!(verified.bind(&ev, &[0; 32], &report_data).is_ok());
}

#[test]
fn tdx_evidence_is_refused_by_the_snp_entry_point() {
    let Some(dir) = common::vectors_dir() else { return };
    let quote = common::read(&dir.join("tdx/dcap-qvl-v4-uptodate"), "tdx_quote.bin");
    let err = verify_report(&evidence(quote.clone()), &policy_for(&quote, false), UPTODATE_AT).unwrap_err();
    assert!(matches!(err, VerifyError::TdxNeedsCollateral), "{err}");
}

#[test]
fn dcap_qvl_v5_has_no_matching_tcb_level() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/dcap-qvl-v5-no-tcb-match");
    let quote = common::read(&base, "tdx_quote_outdated.bin");
    let root = common::read(&base, "TrustedRootCA.der");
    let at = datetime!(2026-03-20 10:41:14 UTC);
    let parsed = TdxQuote::parse(&quote).unwrap();
    assert_eq!(parsed.version, 5);
    parsed.verify_signatures(Some(&root), at).unwrap();
    let c = collateral(&base, "tdx_quote_outdated_collateral.json");
    let msg = appraisal_error(verify_tdx_report(&evidence(quote.clone()), &c, Some(&root), &policy_for(&quote, false), at).unwrap_err());
    assert!(msg.contains("No matching TCB level"), "{msg}");
}

#[test]
fn go_tdx_guest_spr_e4_signatures_pass_and_tcb_level_does_not_match() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/go-tdx-guest-v4-spr-e4");
    let quote = common::read(&base, "tdx_prod_quote_SPR_E4.dat");
    let at = datetime!(2023-07-01 1:00 UTC);
    let parsed = TdxQuote::parse(&quote).unwrap();
    assert!(!parsed.report.sept_ve_disable());
    parsed.verify_signatures(None, at).unwrap();
    let c = go_tdx_guest_collateral(&base);
    let msg = appraisal_error(verify_tdx_report(&evidence(quote.clone()), &c, None, &policy_for(&quote, false), at).unwrap_err());
    assert!(msg.contains("No matching TCB level"), "{msg}");
    // The same quote 30 years later: the collateral (and then the PCK chain) has expired.
    let late = datetime!(2053-07-01 1:00 UTC);
    let err = verify_tdx_report(&evidence(quote.clone()), &c, None, &policy_for(&quote, false), late).unwrap_err();
    assert!(matches!(err, VerifyError::Quote(QuoteError::PckChain(EcChainError::Expired { .. }))), "{err}");
}

#[test]
fn debug_td_is_rejected_unless_allowed() {
    let Some(dir) = common::vectors_dir() else { return };
    let quote = common::read(&dir.join("tdx/trustee-v4-debug-td"), "tdx_quote_4.dat");
    let at = datetime!(2024-01-01 0:00 UTC);
    let parsed = TdxQuote::parse(&quote).unwrap();
    assert!(parsed.report.debug());
    parsed.verify_signatures(None, at).unwrap();
    // This vector ships no collateral; any collateral gets the debug verdict first.
    let c = collateral(&dir.join("tdx/dcap-qvl-v4-uptodate"), "tdx_quote_collateral.json");
    let err = verify_tdx_report(&evidence(quote.clone()), &c, None, &policy_for(&quote, false), at).unwrap_err();
    assert!(matches!(err, VerifyError::TdDebugEnabled), "{err}");
    // Allowed, the debug check passes and the (foreign) collateral is what fails.
    let err = verify_tdx_report(&evidence(quote.clone()), &c, None, &policy_for(&quote, true), at).unwrap_err();
    appraisal_error(err);
}

/// A policy for `quote` that accepts collateral without CRLs.
fn partial_policy(quote: &[u8]) -> Policy {
    Policy { tdx: Some(TdxPolicy { allow_partial_collateral: true, ..TdxPolicy::default() }), ..policy_for(quote, false) }
}

/// The TCB Signing certificate chain Intel's PCS served in 2025 (valid
/// 2025-05-06 .. 2032-05-06); it signs every TCB info and QE identity here.
fn tcb_signer_chain(dir: &Path) -> String {
    let donor: serde_json::Value = serde_json::from_slice(&common::read(&dir.join("tdx/dcap-qvl-v4-uptodate"), "tdx_quote_collateral.json")).unwrap();
    donor["tcb_info_issuer_chain"].as_str().unwrap().to_string()
}

/// Partial collateral from PCS responses: TCB info and, if given, QE identity.
fn partial_collateral(dir: &Path, tcb_info_response: &str, qe_identity_response: Option<&str>) -> serde_json::Value {
    let chain = tcb_signer_chain(dir);
    let (tcb_info, tcb_sig) = pcs_body(tcb_info_response, "tcbInfo");
    let mut json = serde_json::json!({ "tcb_info_issuer_chain": chain, "tcb_info": tcb_info, "tcb_info_signature": tcb_sig });
    if let Some(response) = qe_identity_response {
        let (qe_identity, qe_sig) = pcs_body(response, "enclaveIdentity");
        json["qe_identity_issuer_chain"] = chain.into();
        json["qe_identity"] = qe_identity.into();
        json["qe_identity_signature"] = qe_sig.into();
    }
    json
}

fn tcb_of(verified: &sealtune_attestation::verify::VerifiedReport) -> TcbVerdict {
    let PlatformClaims::Tdx { tcb, .. } = &verified.claims.platform else { panic!("TDX claims expected") };
    tcb.clone()
}

const OUTOFDATE_AT: OffsetDateTime = datetime!(2025-11-01 0:00 UTC);

#[test]
fn trustee_outofdate_is_out_of_date_without_crls() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/trustee-v4-outofdate");
    let quote = common::read(&base, "tdx_quote_6.dat");
    let text = |f: &str| String::from_utf8(common::read(&base, f)).unwrap();
    let json = partial_collateral(&dir, &text("tcbInfo.json"), Some(&text("enclaveIdentity.json")));
    let c = TdxCollateral::from_json(&json.to_string()).unwrap();
    let ev = evidence(quote.clone());

    // The default policy refuses collateral that cannot show revocation.
    let err = verify_tdx_report(&ev, &c, None, &policy_for(&quote, false), OUTOFDATE_AT).unwrap_err();
    assert!(matches!(err, VerifyError::PartialCollateral), "{err}");

    // Allowed, the TCB is OutOfDate: the PCE SVN (11) is below the
    // UpToDate level's (13). That level names no advisory, so no allow-list
    // can excuse it.
    let policy = partial_policy(&quote);
    let err = verify_tdx_report(&ev, &c, None, &policy, OUTOFDATE_AT).unwrap_err();
    assert!(matches!(&err, VerifyError::TcbStatus { status, advisories } if status == "OutOfDate" && advisories.is_empty()), "{err}");
    let parsed = TdxQuote::parse(&quote).unwrap();
    let signed = parsed.verify_signatures(None, OUTOFDATE_AT).unwrap();
    let verdict = sealtune_attestation::tdx::appraise(&quote, &parsed, &signed, &c, false, OUTOFDATE_AT).unwrap();
    assert_eq!(verdict, TcbVerdict { status: "OutOfDate".into(), advisory_ids: vec![], unchecked: vec!["revocation"] });
    let excused = Policy { tdx: Some(TdxPolicy { allowed_advisories: vec!["INTEL-SA-00837".into()], ..policy.tdx.clone().unwrap() }), ..policy.clone() };
    assert!(matches!(verify_tdx_report(&ev, &c, None, &excused, OUTOFDATE_AT), Err(VerifyError::TcbStatus { .. })));

    // Past the TCB info's nextUpdate (2025-11-26) it is stale.
    let late = datetime!(2025-11-27 0:00 UTC);
    let err = verify_tdx_report(&ev, &c, None, &policy, late).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(CollateralError::NotCurrent { item: "TCB info", .. })), "{err}");

    // One changed byte in the signed TCB info or QE identity is refused.
    for key in ["tcb_info", "qe_identity"] {
        let mut bad = json.clone();
        let body = bad[key].as_str().unwrap().replacen("\"version\":", "\"version\": ", 1);
        bad[key] = body.into();
        let c = TdxCollateral::from_json(&bad.to_string()).unwrap();
        let err = verify_tdx_report(&ev, &c, None, &policy, OUTOFDATE_AT).unwrap_err();
        assert!(matches!(err, VerifyError::Collateral(CollateralError::BadSignature { .. })), "{key}: {err}");
    }
    // A signer that does not chain to Intel's root.
    let mut bad = json.clone();
    bad["tcb_info_issuer_chain"] = String::from_utf8(common::read(&dir.join("gpu/nvtrust-hopper-sample"), "verifier_device_root.pem")).unwrap().into();
    let err = verify_tdx_report(&ev, &TdxCollateral::from_json(&bad.to_string()).unwrap(), None, &policy, OUTOFDATE_AT).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(CollateralError::SignerChain { item: "TCB info", .. })), "{err}");
    // TCB info for another platform (go-tdx-guest-v5's FMSPC 90C06F000000).
    let other = partial_collateral(&dir, &String::from_utf8(common::read(&dir.join("tdx/go-tdx-guest-v5"), "sample_tcbinfo_response_v5")).unwrap(), None);
    let err = verify_tdx_report(&ev, &TdxCollateral::from_json(&other.to_string()).unwrap(), None, &policy, datetime!(2026-02-03 1:00 UTC)).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(CollateralError::FmspcMismatch { .. })), "{err}");
}

#[test]
fn go_tdx_guest_v5_is_up_to_date_from_tcb_info_alone() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/go-tdx-guest-v5");
    let quote = common::read(&base, "quote_v5_sample.dat");
    let parsed = TdxQuote::parse(&quote).unwrap();
    assert_eq!(parsed.version, 5);
    assert!(hex::encode(parsed.report.mr_td).starts_with("7348651a34b2d2d3"));
    let at = datetime!(2026-02-03 1:00 UTC);
    let json = partial_collateral(&dir, &String::from_utf8(common::read(&base, "sample_tcbinfo_response_v5")).unwrap(), None);
    let c = TdxCollateral::from_json(&json.to_string()).unwrap();
    let verified = verify_tdx_report(&evidence(quote.clone()), &c, None, &partial_policy(&quote), at).unwrap();
    assert_eq!(verified.claims.version, 5);
    let tcb = tcb_of(&verified);
    assert_eq!((tcb.status.as_str(), tcb.unchecked), ("UpToDate", vec!["revocation", "qe_identity"]));
    // Before the TCB info's issueDate (2026-02-01T14:49:26Z) it is not yet valid.
    let err = verify_tdx_report(&evidence(quote.clone()), &c, None, &partial_policy(&quote), datetime!(2026-02-01 14:00 UTC)).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(CollateralError::NotCurrent { .. })), "{err}");
}

/// The partial path against dcap-qvl on the vectors that have full
/// collateral: with the CRLs taken out, the same verdict.
#[test]
fn partial_appraisal_agrees_with_dcap_qvl() {
    let Some(dir) = common::vectors_dir() else { return };
    let strip = |c: serde_json::Value| {
        let mut c = c;
        for key in ["pck_crl_issuer_chain", "root_ca_crl", "pck_crl"] {
            c.as_object_mut().unwrap().remove(key);
        }
        TdxCollateral::from_json(&c.to_string()).unwrap()
    };
    let read_json = |folder: &str, file: &str| serde_json::from_slice::<serde_json::Value>(&common::read(&dir.join(folder), file)).unwrap();

    let quote = common::read(&dir.join("tdx/dcap-qvl-v4-uptodate"), "tdx_quote.bin");
    let full = collateral(&dir.join("tdx/dcap-qvl-v4-uptodate"), "tdx_quote_collateral.json");
    let partial = strip(read_json("tdx/dcap-qvl-v4-uptodate", "tdx_quote_collateral.json"));
    let policy = partial_policy(&quote);
    let by_dcap = tcb_of(&verify_tdx_report(&evidence(quote.clone()), &full, None, &policy, UPTODATE_AT).unwrap());
    let by_partial = tcb_of(&verify_tdx_report(&evidence(quote.clone()), &partial, None, &policy, UPTODATE_AT).unwrap());
    assert_eq!(by_dcap, TcbVerdict { status: "UpToDate".into(), advisory_ids: vec![], unchecked: vec![] });
    assert_eq!(by_partial, TcbVerdict { unchecked: vec!["revocation"], ..by_dcap });

    let quote = common::read(&dir.join("tdx/dcap-qvl-v5-no-tcb-match"), "tdx_quote_outdated.bin");
    let partial = strip(read_json("tdx/dcap-qvl-v5-no-tcb-match", "tdx_quote_outdated_collateral.json"));
    let err = verify_tdx_report(&evidence(quote.clone()), &partial, None, &partial_policy(&quote), datetime!(2026-03-20 10:41:14 UTC)).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(CollateralError::NoMatchingTcbLevel)), "{err}");

    let base = dir.join("tdx/go-tdx-guest-v4-spr-e4");
    let quote = common::read(&base, "tdx_prod_quote_SPR_E4.dat");
    let text = |f: &str| String::from_utf8(common::read(&base, f)).unwrap();
    let mut json = partial_collateral(&dir, &text("sample_tcbInfo_response"), Some(&text("sample_qeIdentity_response")));
    for key in ["tcb_info_issuer_chain", "qe_identity_issuer_chain"] {
        json[key] = text(&format!("{key}.pem")).into();
    }
    let partial = TdxCollateral::from_json(&json.to_string()).unwrap();
    let err = verify_tdx_report(&evidence(quote.clone()), &partial, None, &partial_policy(&quote), datetime!(2023-07-01 1:00 UTC)).unwrap_err();
    assert!(matches!(err, VerifyError::Collateral(CollateralError::NoMatchingTcbLevel)), "{err}");
}

#[test]
fn collateral_is_full_or_partial_never_in_between() {
    let Some(dir) = common::vectors_dir() else { return };
    let full: serde_json::Value = serde_json::from_slice(&common::read(&dir.join("tdx/dcap-qvl-v4-uptodate"), "tdx_quote_collateral.json")).unwrap();
    let without = |keys: &[&str]| {
        let mut c = full.clone();
        for key in keys {
            c.as_object_mut().unwrap().remove(*key);
        }
        TdxCollateral::from_json(&c.to_string())
    };
    assert!(matches!(without(&[]), Ok(TdxCollateral::Full(_))));
    assert!(matches!(without(&["pck_crl"]), Err(CollateralError::Malformed(_))));
    assert!(matches!(without(&["pck_crl", "root_ca_crl", "pck_crl_issuer_chain", "qe_identity"]), Err(CollateralError::Malformed(_))));
    assert!(matches!(without(&["pck_crl", "root_ca_crl", "pck_crl_issuer_chain", "tcb_info"]), Err(CollateralError::Malformed(_))));
    let partial = without(&["pck_crl", "root_ca_crl", "pck_crl_issuer_chain", "qe_identity", "qe_identity_signature", "qe_identity_issuer_chain"]);
    assert!(matches!(partial, Ok(TdxCollateral::Partial(_))));
}

#[test]
fn tampered_quotes_are_rejected() {
    let Some(dir) = common::vectors_dir() else { return };
    let base = dir.join("tdx/dcap-qvl-v4-uptodate");
    let quote = common::read(&base, "tdx_quote.bin");
    // Every byte of the header and TD report (the signed region) is covered.
    for i in (0..632).step_by(7) {
        let mut bad = quote.clone();
        bad[i] ^= 0x01;
        let result = TdxQuote::parse(&bad).and_then(|q| q.verify_signatures(None, UPTODATE_AT));
        assert!(result.is_err(), "flip at {i} accepted");
    }
    // The quote signature (r ‖ s right after the 4-byte signature length).
    let mut bad = quote.clone();
    bad[636] ^= 0x01;
    assert_eq!(TdxQuote::parse(&bad).unwrap().verify_signatures(None, UPTODATE_AT).unwrap_err(), QuoteError::BadQuoteSignature);
    // The QE report (after signature, key, cert type and size: 636 + 64 + 64 + 6).
    let mut bad = quote.clone();
    bad[636 + 128 + 6 + 100] ^= 0x01;
    assert_eq!(TdxQuote::parse(&bad).unwrap().verify_signatures(None, UPTODATE_AT).unwrap_err(), QuoteError::BadQeReportSignature);
    // A root that is not Intel's.
    let nvidia = sealtune_attestation::snp::chain::pem_certificates(&String::from_utf8(common::read(&dir.join("gpu/nvtrust-hopper-sample"), "verifier_device_root.pem")).unwrap()).unwrap();
    let err = TdxQuote::parse(&quote).unwrap().verify_signatures(Some(&nvidia[0]), UPTODATE_AT).unwrap_err();
    assert!(matches!(err, QuoteError::PckChain(EcChainError::UntrustedRoot { .. })), "{err}");
}
