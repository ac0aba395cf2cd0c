//! `sealtune attest`: verify attestation evidence offline.

use crate::failure::{Failure, Outcome};
use crate::files;
use clap::{Subcommand, ValueEnum};
use sealtune_attestation::evidence::{EnclavePublicKeys, Evidence, TeeKind, EVIDENCE_VERSION};
use sealtune_attestation::policy::{Policy, POLICY_VERSION};
use sealtune_attestation::snp::chain::{pem_certificates, CertChain};
use sealtune_attestation::snp::report::{SnpReport, REPORT_LEN};
use sealtune_attestation::azure::{HclReport, HclReportType};
use sealtune_attestation::nvidia::GpuReport;
use sealtune_attestation::tdx::quote::TdxQuote;
use sealtune_attestation::tdx::TdxCollateral;
use sealtune_attestation::verify::{verify_report, verify_tdx_report, Claims, PlatformClaims, VerifyError};
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Tee {
    /// AMD SEV-SNP hardware (an Azure HCL report is unwrapped and its binding checked).
    Snp,
    /// Intel TDX: a DCAP quote with its collateral.
    Tdx,
    /// An NVIDIA Hopper GPU: SPDM measurements with the device certificate chain.
    NvidiaGpu,
    /// sealtune's simulated SEV-SNP platform.
    Sim,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Verify a report (raw or hex) with its endorsement chain, or a sealtune evidence document.
    Verify {
        /// Kind of TEE the report claims to come from.
        #[arg(long, value_enum)]
        tee: Tee,
        /// The attestation report: raw binary or hex (SNP, or an Azure HCL
        /// report); for nvidia-gpu the SPDM request and response, hex.
        #[arg(long, conflicts_with = "evidence")]
        report: Option<PathBuf>,
        /// TDX: the quote, raw binary or hex.
        #[arg(long, conflicts_with_all = ["evidence", "report"])]
        quote: Option<PathBuf>,
        /// TDX: DCAP collateral, QuoteCollateralV3 JSON (docs/formats/tdx-collateral.md).
        #[arg(long, requires = "quote")]
        collateral: Option<PathBuf>,
        /// TDX: the Intel SGX Root CA; nvidia-gpu: the NVIDIA Device Identity CA
        /// (DER or PEM). Default: the root at the end of the quote's or the
        /// chain's certificates. Either way it must be the pinned root.
        #[arg(long)]
        root: Option<PathBuf>,
        /// nvidia-gpu: the expected SPDM nonce (32 bytes, hex), e.g. the
        /// first 32 bytes of the CPU report's report data.
        #[arg(long)]
        nonce: Option<String>,
        /// A sealtune evidence document (CBOR) instead of --report/--chain.
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// The VCEK certificate (DER or PEM).
        #[arg(long, conflicts_with = "vlek")]
        vcek: Option<PathBuf>,
        /// The VLEK certificate (DER or PEM).
        #[arg(long)]
        vlek: Option<PathBuf>,
        /// PEM file with the ASK (or ASVK) and ARK; nvidia-gpu: the device
        /// certificate chain, leaf first.
        #[arg(long, requires = "report")]
        chain: Option<PathBuf>,
        /// Verification time, RFC 3339 (default: now).
        #[arg(long)]
        at: Option<String>,
        /// Policy file (TOML); without it the measurement is not checked.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Accept a TEE with debugging enabled.
        #[arg(long)]
        allow_debug: bool,
        /// TDX: accept collateral without CRLs (revocation then goes
        /// unchecked, and the claims say so); same as the policy's
        /// tdx.allow_partial_collateral.
        #[arg(long, requires = "quote")]
        allow_partial_collateral: bool,
        /// Print the claims as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: Command) -> Outcome {
    let Command::Verify {
        tee,
        report,
        quote,
        collateral,
        root,
        nonce,
        evidence,
        vcek,
        vlek,
        chain,
        at,
        policy,
        allow_debug,
        allow_partial_collateral,
        json,
    } = command;
    let at = parse_at(at)?;
    let kind = match tee {
        Tee::Snp => TeeKind::SevSnp,
        Tee::Sim => TeeKind::Sim,
        Tee::Tdx => {
            let quote = quote.ok_or_else(|| Failure::input("--tee tdx needs --quote"))?;
            let collateral = collateral.ok_or_else(|| Failure::input("--tee tdx needs --collateral"))?;
            let policy = policy.map(|p| read_policy(&p)).transpose()?;
            let allow = Allow { debug: allow_debug, partial_collateral: allow_partial_collateral };
            return run_tdx(&quote, &collateral, root.as_deref(), policy, allow, at, json);
        }
        Tee::NvidiaGpu => {
            let report = report.ok_or_else(|| Failure::input("--tee nvidia-gpu needs --report"))?;
            let chain = chain.ok_or_else(|| Failure::input("--tee nvidia-gpu needs --chain"))?;
            return run_gpu(&report, &chain, root.as_deref(), nonce.as_deref(), at, json);
        }
    };
    if quote.is_some() || collateral.is_some() || root.is_some() || nonce.is_some() {
        return Err(Failure::input("--quote, --collateral, --root and --nonce are for --tee tdx or nvidia-gpu"));
    }
    let evidence = match (evidence, report) {
        (Some(path), _) => Evidence::from_cbor(&files::read(&path)?).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?,
        (None, Some(report)) => {
            let leaf = vcek.or(vlek).ok_or_else(|| Failure::input("--report needs --vcek or --vlek"))?;
            let chain = chain.ok_or_else(|| Failure::input("--report needs --chain"))?;
            raw_evidence(kind, &report, &leaf, &chain)?
        }
        (None, None) => return Err(Failure::input("give --report or --evidence")),
    };
    if evidence.tee != kind {
        return Err(Failure::input(format!("the evidence is of kind {}, not {}", evidence.tee.name(), kind.name())));
    }
    let (policy, measurement_checked) = match policy {
        Some(path) => (read_policy(&path)?, true),
        None => {
            let report = SnpReport::parse(&evidence.report).map_err(|e| Failure::rejected(VerifyError::from(e)))?;
            (open_policy(report.measurement, kind == TeeKind::Sim), false)
        }
    };
    let policy = Policy { allow_debug: policy.allow_debug || allow_debug, ..policy };
    let verified = verify_report(&evidence, &policy, at).map_err(Failure::rejected)?;
    show(&verified.claims, measurement_checked, json);
    Ok(())
}

fn read_policy(path: &Path) -> Result<Policy, Failure> {
    let text = files::read_text(path)?;
    Policy::from_toml(&text).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}

/// Without a policy there is no allow-list: accept the report's own
/// measurement, and say so in the output.
fn open_policy(measurement: [u8; 48], allow_simulated: bool) -> Policy {
    Policy {
        version: POLICY_VERSION,
        allow_simulated,
        allow_debug: false,
        max_vmpl: 0,
        measurements: vec![hex::encode(measurement)],
        min_tcb: None,
        tdx: None,
        job: None,
        budget: None,
    }
}

fn show(claims: &Claims, measurement_checked: bool, json: bool) {
    if json {
        let mut value = serde_json::to_value(claims).expect("claims serialise");
        value["measurement_checked"] = serde_json::Value::Bool(measurement_checked);
        println!("{value}");
    } else {
        if claims.simulated {
            println!("WARNING: SIMULATED evidence: it proves nothing about confidentiality");
        }
        print_claims(claims, measurement_checked);
    }
}

/// Raw binary, or the same bytes as hex text.
fn read_binary_or_hex(path: &Path, looks_raw: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, Failure> {
    let bytes = files::read(path)?;
    if looks_raw(&bytes) {
        return Ok(bytes);
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| hex::decode(text.trim()).ok())
        .ok_or_else(|| Failure::input(format!("{}: neither raw binary nor hex", path.display())))
}

/// What the command line allows on top of the policy.
struct Allow {
    debug: bool,
    partial_collateral: bool,
}

fn run_tdx(
    quote: &Path,
    collateral: &Path,
    root: Option<&Path>,
    policy: Option<Policy>,
    allow: Allow,
    at: OffsetDateTime,
    json: bool,
) -> Outcome {
    // Raw quotes start with version 4 or 5 as a little-endian u16.
    let quote_bytes = read_binary_or_hex(quote, |b| matches!(b, [4 | 5, 0, ..]))?;
    let parsed = TdxQuote::parse(&quote_bytes).map_err(|e| Failure::input(format!("{}: {e}", quote.display())))?;
    let collateral = TdxCollateral::from_json(&files::read_text(collateral)?)
        .map_err(|e| Failure::input(format!("{}: {e}", collateral.display())))?;
    let root = root.map(read_cert).transpose()?;
    let measurement_checked = policy.is_some();
    let mut policy = policy.unwrap_or_else(|| open_policy(parsed.report.mr_td, false));
    policy.allow_debug |= allow.debug;
    policy.tdx.get_or_insert_with(Default::default).allow_partial_collateral |= allow.partial_collateral;
    let evidence = Evidence {
        version: EVIDENCE_VERSION,
        tee: TeeKind::Tdx,
        report: quote_bytes,
        certs: vec![],
        keys: EnclavePublicKeys { kem: [0; 32], signing: [0; 32] },
    };
    let verified =
        verify_tdx_report(&evidence, &collateral, root.as_deref(), &policy, at).map_err(Failure::rejected)?;
    show(&verified.claims, measurement_checked, json);
    Ok(())
}

fn run_gpu(report: &Path, chain: &Path, root: Option<&Path>, nonce: Option<&str>, at: OffsetDateTime, json: bool) -> Outcome {
    // A raw report starts with SPDM 1.1 GET_MEASUREMENTS (0x11 0xE0).
    let bytes = read_binary_or_hex(report, |b| b.starts_with(&[0x11, 0xE0]))?;
    let expected_nonce = nonce
        .map(|text| {
            hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| Failure::input(format!("--nonce {text}: not 32 bytes of hex")))
        })
        .transpose()?;
    let gpu = GpuReport::parse(&bytes).map_err(|e| Failure::input(format!("{}: {e}", report.display())))?;
    let chain_certs =
        pem_certificates(&files::read_text(chain)?).map_err(|e| Failure::input(format!("{}: {e}", chain.display())))?;
    let root = root.map(read_cert).transpose()?;
    gpu.verify(&chain_certs, root.as_deref(), at).map_err(Failure::rejected)?;
    if let Some(expected) = &expected_nonce {
        gpu.check_nonce(expected).map_err(Failure::rejected)?;
    }
    let claims = serde_json::json!({
        "tee": "nvidia-gpu",
        "nonce": hex::encode(gpu.nonce),
        "nonce_checked": expected_nonce.is_some(),
        "driver_version": gpu.driver_version(),
        "vbios_version": gpu.vbios_version(),
        "measurements": gpu.measurements.iter().map(|m| (m.index.to_string(), serde_json::Value::from(hex::encode(&m.value)))).collect::<serde_json::Map<_, _>>(),
        "signing_key": "nvidia-device-leaf",
        "online_checks_not_done": ["ocsp", "rim"],
    });
    if json {
        println!("{claims}");
    } else {
        println!("valid nvidia-gpu SPDM measurements ({} blocks)", gpu.measurements.len());
        println!("nonce        {}{}", hex::encode(gpu.nonce), if expected_nonce.is_some() { "" } else { "  (not checked: no --nonce)" });
        println!("driver       {}", gpu.driver_version().unwrap_or_default());
        println!("vbios        {}", gpu.vbios_version().unwrap_or_default());
        println!("not checked offline: certificate revocation (OCSP), measurements against NVIDIA's RIMs");
    }
    Ok(())
}

fn read_cert(path: &Path) -> Result<Vec<u8>, Failure> {
    let bytes = files::read(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => pem_certificates(text)
            .map_err(|e| Failure::input(format!("{}: {e}", path.display())))?
            .into_iter()
            .next()
            .ok_or_else(|| Failure::input(format!("{}: no certificate", path.display()))),
        _ => Ok(bytes),
    }
}

fn raw_evidence(tee: TeeKind, report: &Path, leaf: &Path, chain: &Path) -> Result<Evidence, Failure> {
    let mut report_bytes = read_binary_or_hex(report, |b| b.len() == REPORT_LEN || HclReport::is_hcl(b))?;
    if HclReport::is_hcl(&report_bytes) {
        // Azure: the SNP report is wrapped; its REPORT_DATA must bind the runtime claims.
        let hcl = HclReport::parse(&report_bytes).map_err(|e| Failure::input(format!("{}: {e}", report.display())))?;
        if hcl.report_type != HclReportType::Snp {
            return Err(Failure::input(format!("{}: the HCL report wraps a TD report, not an SEV-SNP report", report.display())));
        }
        let inner = SnpReport::parse(&hcl.hw_report).map_err(|e| Failure::rejected(VerifyError::from(e)))?;
        hcl.check_binding(&inner.report_data).map_err(Failure::rejected)?;
        report_bytes = hcl.hw_report;
    }
    let pool = pem_certificates(&files::read_text(chain)?).map_err(|e| Failure::input(format!("{}: {e}", chain.display())))?;
    let chain = CertChain::assemble(read_cert(leaf)?, &pool).map_err(Failure::rejected)?;
    Ok(Evidence {
        version: EVIDENCE_VERSION,
        tee,
        report: report_bytes,
        certs: vec![chain.endorsement.into(), chain.intermediate.into(), chain.root.into()],
        // A raw report binds no sealtune keys; REPORT_DATA is shown, not checked.
        keys: EnclavePublicKeys { kem: [0; 32], signing: [0; 32] },
    })
}

fn print_claims(c: &Claims, measurement_checked: bool) {
    println!("valid {} report v{} (signed by {})", c.tee, c.version, c.signing_key);
    println!("measurement  {}{}", c.measurement, if measurement_checked { "" } else { "  (not checked: no --policy)" });
    println!("host_data    {}", c.host_data);
    println!("report_data  {}", c.report_data);
    println!("debug        {}", c.debug);
    match &c.platform {
        PlatformClaims::Snp { product, chip_id, reported_tcb, migration_agent, vmpl } => {
            println!("product      {product:?}");
            println!("chip_id      {chip_id}");
            println!("reported_tcb {reported_tcb}");
            println!("vmpl {vmpl}  migration_agent {migration_agent}");
        }
        PlatformClaims::Tdx { rtmr, mr_seam, tee_tcb_svn, td_attributes, tcb } => {
            for (i, r) in rtmr.iter().enumerate() {
                println!("rtmr{i}        {r}");
            }
            println!("mr_seam      {mr_seam}");
            println!("tee_tcb_svn  {tee_tcb_svn}");
            println!("td_attributes {td_attributes}");
            println!("tcb_status   {} (advisories: {})", tcb.status, tcb.advisory_ids.join(","));
            if !tcb.unchecked.is_empty() {
                println!("unchecked    {} (partial collateral)", tcb.unchecked.join(", "));
            }
        }
    }
}

/// The `--at` time of a verification (RFC 3339), or now.
pub(crate) fn parse_at(at: Option<String>) -> Result<OffsetDateTime, Failure> {
    match at {
        Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|e| Failure::input(format!("--at {text}: not an RFC 3339 time ({e})"))),
        None => Ok(OffsetDateTime::now_utc()),
    }
}
