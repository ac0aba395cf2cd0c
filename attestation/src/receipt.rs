//! Training receipts (CBOR, `docs/formats/receipt.md`): what the enclave
//! signs about a finished job, shipped with fresh evidence that binds the
//! receipt and the signing key, so a vendor can check offline where, how and
//! with what privacy guarantee the weights were trained.

use crate::accountant::{self, AccountantError, AccountantKind, Segment};
use crate::binding::receipt_report_data;
use crate::cbor::{self, CborError};
use crate::evidence::{Evidence, EvidenceError};
use crate::identity::verify_signature;
use crate::manifest::DatasetRef;
use crate::policy::Policy;
use crate::verify::{verify_report, Claims, VerifyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The receipt format version this crate writes and reads.
pub const RECEIPT_VERSION: u32 = 1;

/// The receipt's file name in an output directory, beside the files it lists.
pub const RECEIPT_FILE: &str = "receipt.cbor";

/// What the enclave attests about a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Always [`RECEIPT_VERSION`].
    pub version: u32,
    /// SHA-256 of the job manifest (the launch's HOST_DATA).
    #[serde(with = "serde_bytes")]
    pub manifest_hash: [u8; 32],
    /// SHA-256 of the base model file.
    #[serde(with = "serde_bytes")]
    pub base_model: [u8; 32],
    /// The datasets trained on.
    pub datasets: Vec<DatasetRef>,
    /// The privacy parameters actually used and the ε they spent.
    pub privacy: PrivacySpent,
    /// Every output file, by name and SHA-256.
    pub outputs: Vec<OutputFile>,
    /// The enclave software version.
    pub software_version: String,
    /// The enclave's launch measurement.
    #[serde(with = "serde_bytes")]
    pub measurement: [u8; 48],
    /// True when trained on the simulated platform.
    pub simulated: bool,
}

/// The DP-SGD parameters of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// Poisson sampling rate q.
    pub sampling_rate: f64,
    /// Noise multiplier σ (noise std = σ·C).
    pub noise_multiplier: f64,
    /// Clipping norm C.
    pub clip_norm: f64,
    /// Declared expected batch size B̄.
    pub expected_batch_size: f64,
    /// Steps taken.
    pub steps: u64,
    /// δ.
    pub delta: f64,
    /// `record` or `user`.
    pub privacy_unit: String,
    /// The neighbouring relation, e.g. `add/remove one record`.
    pub neighbouring: String,
    /// `pld` or `rdp`.
    pub accountant: String,
    /// The accountant implementation's version.
    pub accountant_version: String,
    /// ε spent, by `accountant`.
    pub epsilon: f64,
}

/// An output file's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// File name (no directories).
    pub name: String,
    /// SHA-256 of its contents.
    #[serde(with = "serde_bytes")]
    pub sha256: [u8; 32],
}

/// A receipt with the enclave's signature and the evidence that binds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// Always [`RECEIPT_VERSION`].
    pub version: u32,
    /// Canonical CBOR of a [`Receipt`].
    #[serde(with = "serde_bytes")]
    pub receipt: Vec<u8>,
    /// Ed25519 by the enclave's signing key over `receipt`.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
    /// Canonical CBOR of an [`Evidence`] whose REPORT_DATA binds the receipt.
    #[serde(with = "serde_bytes")]
    pub evidence: Vec<u8>,
}

/// Why a receipt does not verify; each check has its own variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not a CBOR receipt.
    #[error("not a receipt: {0}")]
    Malformed(#[from] CborError),
    /// Unknown receipt version.
    #[error("unsupported receipt version {0} (this build reads version {RECEIPT_VERSION})")]
    UnsupportedVersion(u32),
    /// The embedded evidence cannot be read.
    #[error("receipt evidence: {0}")]
    Evidence(#[from] EvidenceError),
    /// The evidence fails verification under the policy.
    #[error("receipt evidence: {0}")]
    Verify(#[from] VerifyError),
    /// HOST_DATA is not the receipt's manifest hash.
    #[error("the evidence's HOST_DATA is not the receipt's manifest hash")]
    ManifestMismatch,
    /// REPORT_DATA does not bind this receipt and signing key.
    #[error("the evidence does not bind this receipt and signing key")]
    BindingMismatch,
    /// The signature does not verify.
    #[error("receipt signature is invalid")]
    BadSignature,
    /// The receipt's measurement or simulated flag differs from the evidence.
    #[error("the receipt's {0} differs from what the evidence attests")]
    ClaimMismatch(&'static str),
    /// An output file named by the receipt is missing.
    #[error("output file {0} is missing")]
    MissingOutput(String),
    /// An output file's digest differs from the receipt.
    #[error("output file {0} does not match its digest in the receipt")]
    OutputDigest(String),
    /// An output name is not a plain file name.
    #[error("output name {0:?} is not a plain file name")]
    OutputName(String),
    /// The ε recomputed from the receipt's parameters exceeds the claimed ε.
    #[error("recomputed epsilon {recomputed} exceeds the receipt's claim {claimed}")]
    EpsilonUnderstated {
        /// What the receipt says.
        claimed: f64,
        /// What the verifier's accountant says.
        recomputed: f64,
    },
    /// The ε spent exceeds the verifier's policy.
    #[error("epsilon {epsilon} exceeds the policy maximum {max}")]
    EpsilonOverPolicy {
        /// ε of the receipt.
        epsilon: f64,
        /// The policy's `[job] max_epsilon`.
        max: f64,
    },
    /// δ exceeds the verifier's policy.
    #[error("delta {delta} exceeds the policy maximum {max}")]
    DeltaOverPolicy {
        /// δ of the receipt.
        delta: f64,
        /// The policy's `[job] max_delta`.
        max: f64,
    },
    /// The policy has no `[job]` section to check ε against.
    #[error("the policy has no [job] section with max_epsilon and max_delta")]
    NoJobTerms,
    /// The receipt names an accountant this build does not have.
    #[error("unknown accountant {0:?}")]
    UnknownAccountant(String),
    /// This build's accountant cannot compute ε from the receipt's terms.
    #[error("cannot recompute epsilon: {0}")]
    Recomputation(AccountantError),
}

impl Receipt {
    /// The canonical encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }
}

/// A receipt whose evidence, binding, signature and output digests verified.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// What the evidence attests.
    pub claims: Claims,
}

/// SHA-256 of the receipt bytes, as bound into REPORT_DATA.
pub fn receipt_digest(receipt_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(receipt_bytes).into()
}

/// Verifies a signed receipt offline: the evidence chain and policy, that
/// REPORT_DATA binds this receipt and signing key, the signature, and the
/// digests of the output files in `outputs_dir`. ε is checked separately,
/// by [`recompute_epsilon`] and [`check_epsilon`], with the verifier's own accountant.
pub fn verify_receipt(
    bytes: &[u8],
    outputs_dir: &std::path::Path,
    policy: &Policy,
    at: OffsetDateTime,
) -> Result<VerifiedReceipt, ReceiptError> {
    let version = cbor::version_of(bytes)?;
    if version != RECEIPT_VERSION {
        return Err(ReceiptError::UnsupportedVersion(version));
    }
    let signed: SignedReceipt = cbor::from_slice(bytes)?;
    let receipt: Receipt = cbor::from_slice(&signed.receipt)?;
    if receipt.version != RECEIPT_VERSION {
        return Err(ReceiptError::UnsupportedVersion(receipt.version));
    }
    let evidence = Evidence::from_cbor(&signed.evidence)?;
    let verified = verify_report(&evidence, policy, at)?;
    let expected = receipt_report_data(&receipt_digest(&signed.receipt), &evidence.keys);
    let bound = verified.bind_receipt(&receipt.manifest_hash, &expected).map_err(|e| match e {
        VerifyError::ManifestMismatch { .. } => ReceiptError::ManifestMismatch,
        _ => ReceiptError::BindingMismatch,
    })?;
    if !verify_signature(&evidence.keys.signing, &signed.receipt, &signed.signature) {
        return Err(ReceiptError::BadSignature);
    }
    if hex::encode(receipt.measurement) != bound.measurement {
        return Err(ReceiptError::ClaimMismatch("measurement"));
    }
    if receipt.simulated != bound.simulated {
        return Err(ReceiptError::ClaimMismatch("simulated flag"));
    }
    for output in &receipt.outputs {
        let plain = std::path::Path::new(&output.name);
        if plain.components().count() != 1 || plain.file_name().is_none() {
            return Err(ReceiptError::OutputName(output.name.clone()));
        }
        let mut file = std::fs::File::open(outputs_dir.join(plain))
            .map_err(|_| ReceiptError::MissingOutput(output.name.clone()))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(|_| ReceiptError::MissingOutput(output.name.clone()))?;
        if <[u8; 32]>::from(hasher.finalize()) != output.sha256 {
            return Err(ReceiptError::OutputDigest(output.name.clone()));
        }
    }
    Ok(VerifiedReceipt { receipt, claims: bound })
}

/// The receipt's ε recomputed from its own terms (q, σ, steps, δ) with
/// this build's accountant of the kind it names, for [`check_epsilon`]. An
/// accountant that cannot answer is an error: verification fails closed.
pub fn recompute_epsilon(receipt: &Receipt) -> Result<f64, ReceiptError> {
    let p = &receipt.privacy;
    let kind = AccountantKind::parse(&p.accountant).ok_or_else(|| ReceiptError::UnknownAccountant(p.accountant.clone()))?;
    let segment = Segment { sampling_rate: p.sampling_rate, noise_multiplier: p.noise_multiplier, steps: p.steps };
    accountant::epsilon(kind, &[segment], p.delta).map_err(ReceiptError::Recomputation)
}

/// Checks the receipt's ε against a recomputation and the policy's limits.
pub fn check_epsilon(receipt: &Receipt, recomputed: f64, policy: &Policy) -> Result<(), ReceiptError> {
    let claimed = receipt.privacy.epsilon;
    // The claim must not be below what an independent computation gives
    // (a 1e-9 relative slack absorbs floating-point summation order).
    if !(recomputed <= claimed * (1.0 + 1e-9)) {
        return Err(ReceiptError::EpsilonUnderstated { claimed, recomputed });
    }
    let terms = policy.job.as_ref().ok_or(ReceiptError::NoJobTerms)?;
    if !(claimed <= terms.max_epsilon) {
        return Err(ReceiptError::EpsilonOverPolicy { epsilon: claimed, max: terms.max_epsilon });
    }
    if !(receipt.privacy.delta <= terms.max_delta) {
        return Err(ReceiptError::DeltaOverPolicy { delta: receipt.privacy.delta, max: terms.max_delta });
    }
    Ok(())
}
