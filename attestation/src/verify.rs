//! Verification of evidence against a policy, in a fixed order:
//! signature and chain → certificate validity at a given time → debug →
//! VMPL → measurement allow-list → minimum TCB, then, for evidence that
//! answers a challenge, HOST_DATA (the job manifest) → REPORT_DATA (the fresh
//! nonce and the enclave's keys).
//!
//! Success is a value only this module can construct ([`VerifiedReport`],
//! then [`BoundEvidence`]); whatever releases a key must be handed one, so a
//! skipped check fails to compile rather than at run time.

use crate::evidence::{EnclavePublicKeys, Evidence, EvidenceError, TeeKind};
use crate::policy::{Policy, PolicyError};
use crate::snp::chain::{Anchor, ChainError, ValidityError};
use crate::snp::report::{ReportError, SnpReport};
use crate::snp::tcb::{Product, Tcb};
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
    /// This build cannot verify evidence of this kind yet.
    #[error("verification of {0} evidence is not supported by this build")]
    UnsupportedTee(&'static str),
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

/// What a verified report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Which TEE produced the evidence.
    pub tee: &'static str,
    /// True when the evidence comes from sealtune's simulated platform.
    pub simulated: bool,
    /// AMD product the chain belongs to.
    pub product: Product,
    /// Report format version.
    pub version: u32,
    /// Launch measurement, hex.
    pub measurement: String,
    /// HOST_DATA, hex.
    pub host_data: String,
    /// REPORT_DATA, hex.
    pub report_data: String,
    /// CHIP_ID, hex.
    pub chip_id: String,
    /// REPORTED_TCB.
    pub reported_tcb: Tcb,
    /// POLICY.DEBUG.
    pub debug: bool,
    /// POLICY.MIGRATE_MA.
    pub migration_agent: bool,
    /// VMPL.
    pub vmpl: u32,
    /// `vcek` or `vlek`.
    pub signing_key: &'static str,
}

/// A report that passed every check that does not depend on a challenge.
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    /// What the report says.
    pub claims: Claims,
    report: SnpReport,
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
        return Err(VerifyError::UnsupportedTee("tdx"));
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
        product,
        version: report.version,
        measurement: hex::encode(report.measurement),
        host_data: hex::encode(report.host_data),
        report_data: hex::encode(report.report_data),
        chip_id: hex::encode(report.chip_id),
        reported_tcb,
        debug: report.policy.debug(),
        migration_agent: report.policy.migrate_ma(),
        vmpl: report.vmpl,
        signing_key: report.signing_key.name(),
    };
    Ok(VerifiedReport { claims, report, _proof: ReportVerified(()) })
}

impl VerifiedReport {
    /// Checks HOST_DATA and REPORT_DATA of receipt evidence; returns the claims.
    pub(crate) fn bind_receipt(self, manifest_hash: &[u8; 32], expected_report_data: &[u8; 64]) -> Result<Claims, VerifyError> {
        self.check_binding(manifest_hash, expected_report_data)?;
        Ok(self.claims)
    }

    fn check_binding(&self, manifest_hash: &[u8; 32], expected_report_data: &[u8; 64]) -> Result<(), VerifyError> {
        if &self.report.host_data != manifest_hash {
            return Err(VerifyError::ManifestMismatch {
                expected: hex::encode(manifest_hash),
                actual: hex::encode(self.report.host_data),
            });
        }
        if &self.report.report_data != expected_report_data {
            return Err(VerifyError::ReportDataMismatch);
        }
        Ok(())
    }

    /// Checks HOST_DATA against the manifest hash, then REPORT_DATA against
    /// the binding the verifier computed for its own challenge.
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
