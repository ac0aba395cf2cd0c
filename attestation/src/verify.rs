//! Verification of evidence against a policy, in a fixed order:
//! signature and chain → certificate validity at a given time → debug →
//! VMPL → measurement allow-list → minimum TCB, then, for evidence that
//! answers a challenge, HOST_DATA (the job manifest) → REPORT_DATA (the fresh
//! nonce and the enclave's keys). TDX quotes follow the same order with
//! their own fields (`docs/attestation.md`): MRTD is the measurement,
//! MRCONFIGID carries the manifest hash, REPORTDATA the binding.
//!
//! Success is a value only this module can construct ([`VerifiedReport`],
//! then [`BoundEvidence`]); whatever releases a key must be handed one, so a
//! skipped check fails to compile rather than at run time.

use crate::evidence::{EnclavePublicKeys, Evidence, EvidenceError, TeeKind};
use crate::policy::{Policy, PolicyError};
use crate::snp::chain::{Anchor, ChainError, ValidityError};
use crate::snp::report::{ReportError, SnpReport};
use crate::snp::tcb::{Product, Tcb};
use crate::tdx::quote::{mr_config_id_for, QuoteError, TdxQuote};
use crate::tdx::{CollateralError, TcbVerdict, TdxCollateral};
use serde::Serialize;
use time::OffsetDateTime;

/// Why evidence does not verify. Each check has its own variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence document cannot be read.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The policy cannot be used.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The report cannot be parsed.
    #[error("SEV-SNP report: {0}")]
    Report(#[from] ReportError),
    /// TDX evidence was handed to the SNP entry point, which has no collateral.
    #[error("TDX evidence needs DCAP collateral: verify it with verify_tdx_report")]
    TdxNeedsCollateral,
    /// The TDX quote cannot be parsed or its signatures do not verify.
    #[error("TDX quote: {0}")]
    Quote(#[from] QuoteError),
    /// The DCAP collateral cannot be read or does not support the quote.
    #[error("TDX collateral: {0}")]
    Collateral(#[from] CollateralError),
    /// The collateral has no CRLs and the policy does not accept that.
    #[error("the TDX collateral has no CRLs, so revocation cannot be checked; the policy must set tdx.allow_partial_collateral to accept it")]
    PartialCollateral,
    /// The TD was launched with debugging enabled.
    #[error("the TD has debugging enabled (TD_ATTRIBUTES.DEBUG = 1): the host can read its memory")]
    TdDebugEnabled,
    /// Another TD attribute makes the TD untrustworthy.
    #[error("TD attributes refused: {0}")]
    TdAttributes(&'static str),
    /// The platform TCB is not UpToDate and not every advisory is allow-listed.
    #[error("TDX TCB status is {status} (advisories: {advisories}); the policy accepts UpToDate, or a lower status only when every advisory is in tdx.allowed_advisories")]
    TcbStatus {
        /// dcap-qvl's status.
        status: String,
        /// The advisories, comma-separated.
        advisories: String,
    },
    /// An RTMR is not in the policy's allow-list for it.
    #[error("RTMR{register} {value} is not in the policy's allow-list")]
    RtmrNotAllowed {
        /// Which RTMR.
        register: usize,
        /// Its value, hex.
        value: String,
    },
    /// The signature chain does not verify.
    #[error("signature chain: {0}")]
    Chain(#[from] ChainError),
    /// The evidence says it is simulated but chains to a real root, or the reverse.
    #[error("evidence claims to be {claimed} but chains to a {actual} root")]
    KindMismatch {
        /// The evidence's `tee` field.
        claimed: &'static str,
        /// What the root is.
        actual: &'static str,
    },
    /// The root is the simulated platform's, and the policy does not allow simulation.
    #[error("evidence comes from a SIMULATED platform, which this policy does not allow (allow_simulated = false)")]
    SimulatedNotAllowed,
    /// A certificate is not valid at the verification time.
    #[error("certificate validity: {0}")]
    Validity(#[from] ValidityError),
    /// The guest was launched with debugging enabled.
    #[error("the TEE has debugging enabled (POLICY.DEBUG = 1): the host can read its memory")]
    DebugEnabled,
    /// The report comes from a less privileged VMPL than the policy allows.
    #[error("report was requested from VMPL {vmpl}; the policy allows at most VMPL {max}")]
    Vmpl {
        /// The report's VMPL.
        vmpl: u32,
        /// The policy's `max_vmpl`.
        max: u32,
    },
    /// The launch measurement is not in the policy's allow-list.
    #[error("measurement {0} is not in the policy's allow-list")]
    MeasurementNotAllowed(String),
    /// The firmware is older than the policy's minimum.
    #[error("reported TCB ({reported}) is below the policy minimum ({minimum})")]
    StaleTcb {
        /// From the report.
        reported: Tcb,
        /// From the policy.
        minimum: Tcb,
    },
    /// HOST_DATA is not the hash of the expected job manifest.
    #[error("HOST_DATA {actual} is not the job manifest hash {expected}")]
    ManifestMismatch {
        /// The expected manifest hash.
        expected: String,
        /// What the report carries.
        actual: String,
    },
    /// REPORT_DATA does not bind the expected nonce, keys and manifest.
    #[error("REPORT_DATA does not bind this challenge (wrong or replayed nonce, or other enclave keys)")]
    ReportDataMismatch,
}

/// Proof that a report's signature, chain, validity and policy checks passed.
/// Only this module constructs it.
#[derive(Debug, Clone, Copy)]
pub struct ReportVerified(());

/// Proof that verified evidence also binds the expected manifest and challenge.
#[derive(Debug, Clone, Copy)]
pub struct BindingVerified(());

/// What a verified report says. SNP and TDX share the fields a verifier
/// decides on; the rest is in [`PlatformClaims`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Which TEE produced the evidence.
    pub tee: &'static str,
    /// True when the evidence comes from sealtune's simulated platform.
    pub simulated: bool,
    /// Report (SNP) or quote (TDX) format version.
    pub version: u32,
    /// Launch measurement, hex: SNP MEASUREMENT, TDX MRTD.
    pub measurement: String,
    /// Launch-time host data, hex: SNP HOST_DATA, TDX MRCONFIGID.
    pub host_data: String,
    /// REPORT_DATA / REPORTDATA, hex.
    pub report_data: String,
    /// SNP POLICY.DEBUG / TDX TD_ATTRIBUTES.DEBUG.
    pub debug: bool,
    /// `vcek`, `vlek` or `pck`.
    pub signing_key: &'static str,
    /// The TEE-specific claims.
    #[serde(flatten)]
    pub platform: PlatformClaims,
}

/// Claims only one kind of TEE makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PlatformClaims {
    /// AMD SEV-SNP (and the simulated platform).
    Snp {
        /// AMD product the chain belongs to.
        product: Product,
        /// CHIP_ID, hex.
        chip_id: String,
        /// REPORTED_TCB.
        reported_tcb: Tcb,
        /// POLICY.MIGRATE_MA.
        migration_agent: bool,
        /// VMPL.
        vmpl: u32,
    },
    /// Intel TDX.
    Tdx {
        /// RTMR0–3, hex.
        rtmr: [String; 4],
        /// MRSEAM (the TDX module), hex.
        mr_seam: String,
        /// TEE_TCB_SVN, hex.
        tee_tcb_svn: String,
        /// TD_ATTRIBUTES, hex.
        td_attributes: String,
        /// The DCAP TCB appraisal.
        tcb: TcbVerdict,
    },
}

/// A report that passed every check that does not depend on a challenge.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    /// What the report says.
    pub claims: Claims,
    /// What the manifest hash must appear as: HOST_DATA, or MRCONFIGID.
    host_data: Vec<u8>,
    report_data: [u8; 64],
    tee: TeeKind,
    _proof: ReportVerified,
}

/// Evidence that passed every check, including its binding to a manifest and
/// a challenge; the only thing a key grant can be made for.
#[derive(Debug, Clone)]
pub struct BoundEvidence {
    /// What the report says.
    pub claims: Claims,
    /// The enclave keys the report binds.
    pub keys: EnclavePublicKeys,
    /// The job manifest hash the report binds.
    pub manifest_hash: [u8; 32],
    /// SHA-256 of the evidence document.
    pub evidence_digest: [u8; 32],
    _proof: BindingVerified,
}

/// Verifies SNP-layout evidence (real or simulated) against `policy` at time `at`.
pub fn verify_report(evidence: &Evidence, policy: &Policy, at: OffsetDateTime) -> Result<VerifiedReport, VerifyError> {
    if evidence.tee == TeeKind::Tdx {
        return Err(VerifyError::TdxNeedsCollateral);
    }
    let allowed = policy.measurement_list()?;
    let report = SnpReport::parse(&evidence.report)?;
    let chain = evidence.snp_chain()?;
    let verified_chain = chain.verify()?;
    verified_chain.verify_report(&evidence.report, &report)?;
    let anchor = verified_chain.anchor();
    let simulated = match (evidence.tee, anchor) {
        (TeeKind::SevSnp, Anchor::Amd(_)) => false,
        (TeeKind::Sim, Anchor::Simulated(_)) => true,
        (claimed, Anchor::Amd(_)) => return Err(VerifyError::KindMismatch { claimed: claimed.name(), actual: "AMD" }),
        (claimed, Anchor::Simulated(_)) => {
            return Err(VerifyError::KindMismatch { claimed: claimed.name(), actual: "simulated" })
        }
    };
    if simulated && !policy.allow_simulated {
        return Err(VerifyError::SimulatedNotAllowed);
    }
    verified_chain.check_validity(at)?;
    if report.policy.debug() && !policy.allow_debug {
        return Err(VerifyError::DebugEnabled);
    }
    if report.vmpl > policy.max_vmpl {
        return Err(VerifyError::Vmpl { vmpl: report.vmpl, max: policy.max_vmpl });
    }
    if !allowed.contains(&report.measurement) {
        return Err(VerifyError::MeasurementNotAllowed(hex::encode(report.measurement)));
    }
    let product = anchor.product();
    let reported_tcb = report.reported_tcb.decode(product);
    if let Some(minimum) = &policy.min_tcb {
        if !reported_tcb.meets(minimum) {
            return Err(VerifyError::StaleTcb { reported: reported_tcb, minimum: *minimum });
        }
    }
    let claims = Claims {
        tee: evidence.tee.name(),
        simulated,
        version: report.version,
        measurement: hex::encode(report.measurement),
        host_data: hex::encode(report.host_data),
        report_data: hex::encode(report.report_data),
        debug: report.policy.debug(),
        signing_key: report.signing_key.name(),
        platform: PlatformClaims::Snp {
            product,
            chip_id: hex::encode(report.chip_id),
            reported_tcb,
            migration_agent: report.policy.migrate_ma(),
            vmpl: report.vmpl,
        },
    };
    Ok(VerifiedReport {
        claims,
        host_data: report.host_data.to_vec(),
        report_data: report.report_data,
        tee: evidence.tee,
        _proof: ReportVerified(()),
    })
}

/// Verifies TDX evidence (the quote in `evidence.report`) with DCAP
/// `collateral` against `policy` at time `at`. `root`, when given, is the
/// Intel SGX Root CA to use instead of the quote's own copy; either way it
/// must be the pinned Intel root.
///
/// Order: quote header → PCK chain, QE report and quote signatures,
/// certificate validity → TD debug → partial collateral allowed? → DCAP
/// appraisal (collateral signatures, CRLs and freshness, QE identity, TDX
/// module, TCB level) → other TD attributes → TCB status → MRTD allow-list →
/// RTMR allow-lists.
pub fn verify_tdx_report(
    evidence: &Evidence,
    collateral: &TdxCollateral,
    root: Option<&[u8]>,
    policy: &Policy,
    at: OffsetDateTime,
) -> Result<VerifiedReport, VerifyError> {
    if evidence.tee != TeeKind::Tdx {
        return Err(VerifyError::KindMismatch { claimed: evidence.tee.name(), actual: "Intel TDX" });
    }
    let allowed = policy.measurement_list()?;
    let tdx_policy = policy.tdx.clone().unwrap_or_default();
    let rtmr_lists = tdx_policy.rtmr_lists()?;
    let quote = TdxQuote::parse(&evidence.report)?;
    let signed = quote.verify_signatures(root, at)?;
    let td = &quote.report;
    if td.debug() && !policy.allow_debug {
        return Err(VerifyError::TdDebugEnabled);
    }
    if matches!(collateral, TdxCollateral::Partial(_)) && !tdx_policy.allow_partial_collateral {
        return Err(VerifyError::PartialCollateral);
    }
    let tcb = crate::tdx::appraise(&evidence.report, &quote, &signed, collateral, policy.allow_debug, at)?;
    // After the appraisal, as in Intel's QVL (dcap-qvl has already checked
    // these for full collateral; partial collateral relies on this check).
    if let Some(reason) = td.refused_attribute(policy.allow_debug) {
        return Err(VerifyError::TdAttributes(reason));
    }
    let advisories_allowed = !tcb.advisory_ids.is_empty()
        && tcb.advisory_ids.iter().all(|id| tdx_policy.allowed_advisories.iter().any(|a| a.eq_ignore_ascii_case(id)));
    if tcb.status != "UpToDate" && !advisories_allowed {
        return Err(VerifyError::TcbStatus { status: tcb.status.clone(), advisories: tcb.advisory_ids.join(",") });
    }
    if !allowed.contains(&td.mr_td) {
        return Err(VerifyError::MeasurementNotAllowed(hex::encode(td.mr_td)));
    }
    for (register, list) in rtmr_lists.iter().enumerate() {
        if let Some(list) = list {
            if !list.contains(&td.rtmr[register]) {
                return Err(VerifyError::RtmrNotAllowed { register, value: hex::encode(td.rtmr[register]) });
            }
        }
    }
    let claims = Claims {
        tee: TeeKind::Tdx.name(),
        simulated: false,
        version: u32::from(quote.version),
        measurement: hex::encode(td.mr_td),
        host_data: hex::encode(td.mr_config_id),
        report_data: hex::encode(td.report_data),
        debug: td.debug(),
        signing_key: "pck",
        platform: PlatformClaims::Tdx {
            rtmr: td.rtmr.map(hex::encode),
            mr_seam: hex::encode(td.mr_seam),
            tee_tcb_svn: hex::encode(td.tee_tcb_svn),
            td_attributes: hex::encode(td.td_attributes),
            tcb,
        },
    };
    Ok(VerifiedReport {
        claims,
        host_data: td.mr_config_id.to_vec(),
        report_data: td.report_data,
        tee: TeeKind::Tdx,
        _proof: ReportVerified(()),
    })
}

impl VerifiedReport {
    /// Checks HOST_DATA and REPORT_DATA of receipt evidence; returns the claims.
    pub(crate) fn bind_receipt(self, manifest_hash: &[u8; 32], expected_report_data: &[u8; 64]) -> Result<Claims, VerifyError> {
        self.check_binding(manifest_hash, expected_report_data)?;
        Ok(self.claims)
    }

    /// Checks HOST_DATA (TDX: MRCONFIGID = hash ‖ 16 zero bytes) against the
    /// manifest hash, then REPORT_DATA against the binding the verifier
    /// computed.
    fn check_binding(&self, manifest_hash: &[u8; 32], expected_report_data: &[u8; 64]) -> Result<(), VerifyError> {
        let expected_host_data = match self.tee {
            TeeKind::Tdx => mr_config_id_for(manifest_hash).to_vec(),
            TeeKind::SevSnp | TeeKind::Sim => manifest_hash.to_vec(),
        };
        if self.host_data != expected_host_data {
            return Err(VerifyError::ManifestMismatch {
                expected: hex::encode(expected_host_data),
                actual: hex::encode(&self.host_data),
            });
        }
        if &self.report_data != expected_report_data {
            return Err(VerifyError::ReportDataMismatch);
        }
        Ok(())
    }

    /// Checks the binding to the manifest and to the verifier's own
    /// challenge; the result is what a key grant can be made for.
    pub fn bind(
        self,
        evidence: &Evidence,
        manifest_hash: &[u8; 32],
        expected_report_data: &[u8; 64],
    ) -> Result<BoundEvidence, VerifyError> {
        self.check_binding(manifest_hash, expected_report_data)?;
        Ok(BoundEvidence {
            claims: self.claims,
            keys: evidence.keys,
            manifest_hash: *manifest_hash,
            evidence_digest: evidence.digest(),
            _proof: BindingVerified(()),
        })
    }
}
