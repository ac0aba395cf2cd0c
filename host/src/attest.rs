//! `sealtune attest`: verify attestation evidence offline.

use crate::failure::{Failure, Outcome};
use crate::files;
use clap::{Subcommand, ValueEnum};
use sealtune_attestation::evidence::{EnclavePublicKeys, Evidence, TeeKind, EVIDENCE_VERSION};
use sealtune_attestation::policy::{Policy, POLICY_VERSION};
use sealtune_attestation::snp::chain::{pem_certificates, CertChain};
use sealtune_attestation::snp::report::{SnpReport, REPORT_LEN};
use sealtune_attestation::verify::{verify_report, Claims, PlatformClaims, VerifyError};
use std::path::{Path, PathBuf};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Tee {
    /// AMD SEV-SNP hardware.
    Snp,
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
        /// The attestation report: raw binary or hex.
        #[arg(long, required_unless_present = "evidence", conflicts_with = "evidence")]
        report: Option<PathBuf>,
        /// A sealtune evidence document (CBOR) instead of --report/--chain.
        #[arg(long)]
        evidence: Option<PathBuf>,
        /// The VCEK certificate (DER or PEM).
        #[arg(long, conflicts_with = "vlek")]
        vcek: Option<PathBuf>,
        /// The VLEK certificate (DER or PEM).
        #[arg(long)]
        vlek: Option<PathBuf>,
        /// PEM file with the ASK (or ASVK) and ARK.
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
        /// Print the claims as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: Command) -> Outcome {
    let Command::Verify { tee, report, evidence, vcek, vlek, chain, at, policy, allow_debug, json } = command;
    let at = match at {
        Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|e| Failure::input(format!("--at {text}: not an RFC 3339 time ({e})")))?,
        None => OffsetDateTime::now_utc(),
    };
    let kind = match tee {
        Tee::Snp => TeeKind::SevSnp,
        Tee::Sim => TeeKind::Sim,
    };
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
        Some(path) => {
            let text = files::read_text(&path)?;
            (Policy::from_toml(&text).map_err(|e| Failure::input(format!("{}: {e}", path.display())))?, true)
        }
        None => {
            // Without a policy there is no allow-list: accept the report's own
            // measurement, and say so.
            let report = SnpReport::parse(&evidence.report).map_err(|e| Failure::rejected(VerifyError::from(e)))?;
            let open = Policy {
                version: POLICY_VERSION,
                allow_simulated: kind == TeeKind::Sim,
                allow_debug: false,
                max_vmpl: 0,
                measurements: vec![hex::encode(report.measurement)],
                min_tcb: None,
        tdx: None,
                job: None,
            };
            (open, false)
        }
    };
    let policy = Policy { allow_debug: policy.allow_debug || allow_debug, ..policy };
    let verified = verify_report(&evidence, &policy, at).map_err(Failure::rejected)?;
    if json {
        let mut value = serde_json::to_value(&verified.claims).expect("claims serialise");
        value["measurement_checked"] = serde_json::Value::Bool(measurement_checked);
        println!("{value}");
    } else {
        let c = &verified.claims;
        if c.simulated {
            println!("WARNING: SIMULATED evidence: it proves nothing about confidentiality");
        }
        print_claims(c, measurement_checked);
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
    let bytes = files::read(report)?;
    let report_bytes = if bytes.len() == REPORT_LEN {
        bytes
    } else {
        let text = String::from_utf8(bytes).map_err(|_| Failure::input(format!("{}: neither a raw report nor hex", report.display())))?;
        hex::decode(text.trim()).map_err(|_| Failure::input(format!("{}: neither a raw report nor hex", report.display())))?
    };
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
        }
    }
}
