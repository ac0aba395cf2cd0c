//! `sealtune attest verify` for TDX, NVIDIA GPU and Azure HCL evidence, run
//! as the built binary against the real vectors in `../shared/vectors`
//! (`SEALTUNE_VECTORS` overrides; in CI a missing folder is a failure).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SEALTUNE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    if dir.join("README.md").is_file() {
        Some(dir)
    } else {
        assert!(std::env::var_os("CI").is_none(), "attestation vectors not found at {}", dir.display());
        eprintln!("SKIPPED: attestation vectors not found at {} (set SEALTUNE_VECTORS)", dir.display());
        None
    }
}

fn sealtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealtune")).args(args).output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(dir: &Path, rel: &str) -> String {
    dir.join(rel).to_str().unwrap().to_string()
}

fn tdx(dir: &Path, quote: &str, collateral: &str, at: &str, extra: &[&str]) -> Output {
    let quote = p(dir, quote);
    let collateral = p(dir, collateral);
    let mut args = vec!["attest", "verify", "--tee", "tdx", "--quote", &quote, "--collateral", &collateral, "--at", at];
    args.extend_from_slice(extra);
    sealtune(&args)
}

const V4: &str = "tdx/dcap-qvl-v4-uptodate/tdx_quote.bin";
const V4_COLLATERAL: &str = "tdx/dcap-qvl-v4-uptodate/tdx_quote_collateral.json";
const V4_AT: &str = "2025-07-19T10:00:34Z";

#[test]
fn tdx_up_to_date_quote_exits_0_with_claims() {
    let Some(dir) = vectors_dir() else { return };
    let root = p(&dir, "tdx/dcap-qvl-v4-uptodate/TrustedRootCA.der");
    let out = tdx(&dir, V4, V4_COLLATERAL, V4_AT, &["--root", &root, "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["tee"], "tdx");
    assert_eq!(claims["version"], 4);
    assert_eq!(claims["signing_key"], "pck");
    assert_eq!(claims["tcb"]["status"], "UpToDate");
    assert_eq!(claims["measurement_checked"], false);
    assert!(claims["measurement"].as_str().unwrap().starts_with("91eb2b44"));
    assert_eq!(claims["host_data"], "00".repeat(48));
    assert_eq!(claims["rtmr"].as_array().unwrap().len(), 4);
}

#[test]
fn tdx_failures_exit_1_and_unusable_input_exits_2() {
    let Some(dir) = vectors_dir() else { return };
    // No matching TCB level.
    let out = tdx(&dir, "tdx/dcap-qvl-v5-no-tcb-match/tdx_quote_outdated.bin", "tdx/dcap-qvl-v5-no-tcb-match/tdx_quote_outdated_collateral.json", "2026-03-20T10:41:14Z", &[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("No matching TCB level"), "{}", stderr(&out));
    // Stale collateral.
    let out = tdx(&dir, V4, V4_COLLATERAL, "2025-08-01T00:00:00Z", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // A policy whose MRTD allow-list does not hold this TD.
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, format!("version = 1\nmeasurements = [\"{}\"]\n", "11".repeat(48))).unwrap();
    let out = tdx(&dir, V4, V4_COLLATERAL, V4_AT, &["--policy", policy.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("not in the policy's allow-list"), "{}", stderr(&out));
    // Unusable input: not a quote, not collateral, missing argument.
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"\x04\x00 not a quote").unwrap();
    let out = tdx(&dir, junk.to_str().unwrap(), V4_COLLATERAL, V4_AT, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = tdx(&dir, V4, "tdx/dcap-qvl-v4-uptodate/TrustedRootCA.der", V4_AT, &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let quote = p(&dir, V4);
    assert_eq!(code(&sealtune(&["attest", "verify", "--tee", "tdx", "--quote", &quote])), 2);
}

#[test]
fn tdx_partial_collateral_needs_its_flag_and_is_reported() {
    let Some(dir) = vectors_dir() else { return };
    // TCB info alone (PCS response body and signature), signed by the TCB
    // Signing certificate that dcap-qvl-v4's collateral carries.
    let response = std::fs::read_to_string(dir.join("tdx/go-tdx-guest-v5/sample_tcbinfo_response_v5")).unwrap();
    let donor: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(V4_COLLATERAL)).unwrap()).unwrap();
    let sig_at = response.rfind(",\"signature\":\"").unwrap();
    let collateral = serde_json::json!({
        "tcb_info_issuer_chain": donor["tcb_info_issuer_chain"],
        "tcb_info": &response["{\"tcbInfo\":".len()..sig_at],
        "tcb_info_signature": response[sig_at + 14..].trim_end().trim_end_matches("\"}"),
    });
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("collateral.json");
    std::fs::write(&path, collateral.to_string()).unwrap();
    let quote = "tdx/go-tdx-guest-v5/quote_v5_sample.dat";
    let at = "2026-02-03T01:00:00Z";
    let out = tdx(&dir, quote, path.to_str().unwrap(), at, &[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no CRLs"), "{}", stderr(&out));
    let out = tdx(&dir, quote, path.to_str().unwrap(), at, &["--allow-partial-collateral", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((claims["version"].as_u64(), claims["tcb"]["status"].as_str()), (Some(5), Some("UpToDate")));
    assert_eq!(claims["tcb"]["unchecked"], serde_json::json!(["revocation", "qe_identity"]));
    let out = tdx(&dir, quote, path.to_str().unwrap(), at, &["--allow-partial-collateral"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("unchecked    revocation, qe_identity"));
}

#[test]
fn debug_td_is_rejected_unless_allowed() {
    let Some(dir) = vectors_dir() else { return };
    let quote = "tdx/trustee-v4-debug-td/tdx_quote_4.dat";
    let out = tdx(&dir, quote, V4_COLLATERAL, "2024-01-01T00:00:00Z", &[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("TD_ATTRIBUTES.DEBUG"), "{}", stderr(&out));
    // Allowed, debug passes; this vector ships no collateral of its own, so
    // the other platform's collateral is what is refused next.
    let out = tdx(&dir, quote, V4_COLLATERAL, "2024-01-01T00:00:00Z", &["--allow-debug"]);
    assert_eq!(code(&out), 1);
    assert!(!stderr(&out).contains("DEBUG") && stderr(&out).contains("DCAP appraisal"), "{}", stderr(&out));
}

#[test]
fn nvidia_gpu_report_verifies_and_binds_its_nonce() {
    let Some(dir) = vectors_dir() else { return };
    let report = p(&dir, "gpu/nvtrust-hopper-sample/hopperAttestationReport.txt");
    let chain = p(&dir, "gpu/nvtrust-hopper-sample/hopperCertChain.txt");
    let root = p(&dir, "gpu/nvtrust-hopper-sample/verifier_device_root.pem");
    let nonce = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";
    let base = ["attest", "verify", "--tee", "nvidia-gpu", "--report", &report, "--chain", &chain];
    let out = sealtune(&[&base[..], &["--root", &root, "--nonce", nonce, "--json"]].concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((claims["nonce"].as_str(), claims["nonce_checked"].as_bool()), (Some(nonce), Some(true)));
    assert_eq!(claims["driver_version"], "550.90.07");
    assert_eq!(claims["measurements"].as_object().unwrap().len(), 64);

    let out = sealtune(&[&base[..], &["--nonce", &"00".repeat(32)]].concat());
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("nonce"), "{}", stderr(&out));
    // The other GPU's chain does not sign this report.
    let other = p(&dir, "gpu/trustee-hopper-coco/hopper_coco_certs1.txt");
    let out = sealtune(&["attest", "verify", "--tee", "nvidia-gpu", "--report", &report, "--chain", &other]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // Unusable: a bad nonce and a report that is not SPDM.
    assert_eq!(code(&sealtune(&[&base[..], &["--nonce", "abc"]].concat())), 2);
    let out = sealtune(&["attest", "verify", "--tee", "nvidia-gpu", "--report", &chain, "--chain", &chain]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn azure_hcl_report_is_unwrapped_and_its_binding_checked() {
    let Some(dir) = vectors_dir() else { return };
    let base = dir.join("snp/trustee-azure-hcl-genoa-v3");
    let hcl = std::fs::read(base.join("hcl-report.bin")).unwrap();
    let vcek = p(&base, "vcek-genoa.pem");
    let chain = p(&base, "genoa_ask_ark_asvk.pem");
    let run = |report: &str| {
        sealtune(&["attest", "verify", "--tee", "snp", "--report", report, "--vcek", &vcek, "--chain", &chain, "--at", "2025-06-01T00:00:00Z", "--json"])
    };
    let out = run(&p(&base, "hcl-report.bin"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["product"], "genoa");
    assert!(claims["report_data"].as_str().unwrap().starts_with("b581f12e"));
    // A changed runtime claim no longer matches REPORT_DATA.
    let tmp = tempfile::tempdir().unwrap();
    let mut tampered = hcl.clone();
    tampered[0x4C0 + 20 + 10] ^= 1;
    let path = tmp.path().join("hcl.bin");
    std::fs::write(&path, &tampered).unwrap();
    let out = run(path.to_str().unwrap());
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("runtime claims"), "{}", stderr(&out));
}
