//! The job manifest (CBOR, `docs/formats/job-manifest.md`): everything that
//! defines a training job. Its SHA-256 is the HOST_DATA the enclave is
//! launched with, so a report names exactly one job.

use crate::cbor::{self, CborError};
use crate::identity::{verify_signature, IdentityKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest format version this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// The LoRA target modules a manifest may name (Llama-family projection names).
pub const LORA_TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// A training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobManifest {
    /// Always [`MANIFEST_VERSION`].
    pub version: u32,
    /// A name for humans; not interpreted.
    pub job_id: String,
    /// The model to fine-tune.
    pub base_model: BaseModel,
    /// The adapter to train.
    pub lora: LoraTerms,
    /// Optimiser settings.
    pub training: TrainingTerms,
    /// The differential-privacy terms.
    pub privacy: PrivacyTerms,
    /// The sealed corpora, by commitment and owner.
    pub datasets: Vec<DatasetRef>,
    /// Ed25519 keys of the vendors who may receive the outputs.
    pub recipients: Vec<serde_bytes::ByteArray<32>>,
}

/// The base model, named by the SHA-256 of its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModel {
    /// A name for humans (for example the Hugging Face repository).
    pub name: String,
    /// SHA-256 of the model file the enclave must load.
    #[serde(with = "serde_bytes")]
    pub sha256: [u8; 32],
}

/// The LoRA adapter's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraTerms {
    /// Rank r.
    pub rank: u32,
    /// Scaling numerator: the update is (alpha / r)·B·A.
    pub alpha: f64,
    /// Target modules, from [`LORA_TARGETS`].
    pub targets: Vec<String>,
}

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingTerms {
    /// `adamw` or `sgd`.
    pub optimizer: String,
    /// Learning rate.
    pub learning_rate: f64,
    /// Sequences are truncated to this many tokens.
    pub max_seq_len: u32,
}

/// The differential-privacy terms of the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyTerms {
    /// Target ε.
    pub epsilon: f64,
    /// Target δ.
    pub delta: f64,
    /// Per-unit gradient clipping norm C.
    pub clip_norm: f64,
    /// Poisson sampling rate q.
    pub sampling_rate: f64,
    /// The declared expected batch size B̄ = q·N_declared: the public
    /// normaliser of every noisy update.
    pub expected_batch_size: f64,
    /// Training stops at this many steps, or earlier when ε is spent.
    pub max_steps: u64,
    /// `pld` or `rdp`.
    pub accountant: String,
    /// `record` or `user`: what one neighbouring dataset adds or removes.
    pub privacy_unit: String,
}

impl PrivacyTerms {
    /// N_declared = B̄ / q, the public bound on the dataset's units; `None`
    /// where it is not a whole number (both are terms the vendor chose together).
    pub fn declared_units(&self) -> Option<u64> {
        let declared = (self.expected_batch_size / self.sampling_rate).round();
        let whole = declared >= 1.0 && (declared * self.sampling_rate - self.expected_batch_size).abs() <= 1e-9 * self.expected_batch_size;
        whole.then_some(declared as u64)
    }
}

/// A dataset a job trains on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// SHA-256 of the complete sealed file.
    #[serde(with = "serde_bytes")]
    pub commitment: [u8; 32],
    /// The owner's Ed25519 identity key, which signs the key grant.
    #[serde(with = "serde_bytes")]
    pub owner: [u8; 32],
}

/// The format version of a vendor-signed job file.
pub const SIGNED_MANIFEST_VERSION: u32 = 1;

/// Domain tag of the vendor's signature over a manifest.
pub const MANIFEST_SIGNATURE_TAG: &[u8] = b"sealtune/v1/job-manifest";

/// A job file as vendors write it (`job.cbor`): the exact manifest bytes and
/// the vendor's Ed25519 signature over them. The vendor must be one of the
/// manifest's recipients; HOST_DATA and receipts name the manifest's own hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// Always [`SIGNED_MANIFEST_VERSION`].
    pub version: u32,
    /// Canonical CBOR of a [`JobManifest`].
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// The vendor's Ed25519 key.
    #[serde(with = "serde_bytes")]
    pub vendor: [u8; 32],
    /// Signature by `vendor` over [`MANIFEST_SIGNATURE_TAG`] ‖ `manifest`.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// A job file whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedJob {
    /// The manifest.
    pub manifest: JobManifest,
    /// The vendor who signed it (one of its recipients).
    pub vendor: [u8; 32],
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [MANIFEST_SIGNATURE_TAG, manifest].concat()
}

impl SignedManifest {
    /// Signs `manifest` with the vendor's key; the vendor must be a recipient.
    pub fn sign(manifest: &JobManifest, vendor: &IdentityKey) -> Result<Self, ManifestError> {
        manifest.validate()?;
        if !manifest.recipients.iter().any(|r| **r == vendor.public()) {
            return Err(ManifestError::VendorNotRecipient(hex::encode(vendor.public())));
        }
        let bytes = manifest.to_cbor();
        let signature = vendor.sign(&signed_message(&bytes));
        Ok(SignedManifest { version: SIGNED_MANIFEST_VERSION, manifest: bytes, vendor: vendor.public(), signature })
    }

    /// The canonical encoding (the contents of `job.cbor`).
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// Decodes a job file and checks the vendor's signature, the manifest and
    /// that the vendor is one of its recipients.
    pub fn open(bytes: &[u8]) -> Result<SignedJob, ManifestError> {
        let version = cbor::version_of(bytes)?;
        if version != SIGNED_MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let signed: SignedManifest = cbor::from_slice(bytes)?;
        if !verify_signature(&signed.vendor, &signed_message(&signed.manifest), &signed.signature) {
            return Err(ManifestError::BadSignature);
        }
        let manifest = JobManifest::from_cbor(&signed.manifest)?;
        if !manifest.recipients.iter().any(|r| **r == signed.vendor) {
            return Err(ManifestError::VendorNotRecipient(hex::encode(signed.vendor)));
        }
        Ok(SignedJob { manifest, vendor: signed.vendor })
    }
}

/// Why bytes are not a usable job manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not a CBOR manifest.
    #[error("not a job manifest: {0}")]
    Malformed(#[from] CborError),
    /// Unknown format version.
    #[error("unsupported job manifest version {0} (this build reads version {MANIFEST_VERSION})")]
    UnsupportedVersion(u32),
    /// The vendor's signature over the manifest does not verify.
    #[error("the vendor's signature over the job manifest is invalid")]
    BadSignature,
    /// The signing vendor is not among the manifest's recipients.
    #[error("the job is signed by {0}, which is not one of its recipients")]
    VendorNotRecipient(String),
    /// A field has a value no job can have.
    #[error("job manifest field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field's path, e.g. `privacy.delta`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field, reason: reason.into() }
}

impl JobManifest {
    /// Decodes and validates a manifest.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ManifestError> {
        let version = cbor::version_of(bytes)?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let manifest: JobManifest = cbor::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The canonical encoding; its SHA-256 is the manifest hash.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// SHA-256 of the canonical encoding: the launch's HOST_DATA.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_cbor()).into()
    }

    /// Checks every field's range; a manifest that fails here is never launched.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(self.version));
        }
        let p = &self.privacy;
        let positive_finite = |x: f64| x.is_finite() && x > 0.0;
        if !positive_finite(p.epsilon) {
            return Err(invalid("privacy.epsilon", "must be a positive finite number"));
        }
        if !(p.delta > 0.0 && p.delta < 1.0) {
            return Err(invalid("privacy.delta", "must be in (0, 1)"));
        }
        if !positive_finite(p.clip_norm) {
            return Err(invalid("privacy.clip_norm", "must be a positive finite number"));
        }
        if !(p.sampling_rate > 0.0 && p.sampling_rate <= 1.0) {
            return Err(invalid("privacy.sampling_rate", "must be in (0, 1]"));
        }
        if !positive_finite(p.expected_batch_size) {
            return Err(invalid("privacy.expected_batch_size", "must be a positive finite number"));
        }
        if p.max_steps == 0 {
            return Err(invalid("privacy.max_steps", "must be at least 1"));
        }
        if !matches!(p.accountant.as_str(), "pld" | "rdp") {
            return Err(invalid("privacy.accountant", format!("`{}` is not `pld` or `rdp`", p.accountant)));
        }
        if !matches!(p.privacy_unit.as_str(), "record" | "user") {
            return Err(invalid("privacy.privacy_unit", format!("`{}` is not `record` or `user`", p.privacy_unit)));
        }
        if self.lora.rank == 0 {
            return Err(invalid("lora.rank", "must be at least 1"));
        }
        if !positive_finite(self.lora.alpha) {
            return Err(invalid("lora.alpha", "must be a positive finite number"));
        }
        if self.lora.targets.is_empty() {
            return Err(invalid("lora.targets", "names no module"));
        }
        if let Some(t) = self.lora.targets.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
            return Err(invalid("lora.targets", format!("unknown module `{t}`")));
        }
        if !matches!(self.training.optimizer.as_str(), "adamw" | "sgd") {
            return Err(invalid("training.optimizer", format!("`{}` is not `adamw` or `sgd`", self.training.optimizer)));
        }
        if !positive_finite(self.training.learning_rate) {
            return Err(invalid("training.learning_rate", "must be a positive finite number"));
        }
        if self.training.max_seq_len < 2 {
            return Err(invalid("training.max_seq_len", "must be at least 2 tokens"));
        }
        if self.datasets.is_empty() {
            return Err(invalid("datasets", "names no dataset"));
        }
        for (i, d) in self.datasets.iter().enumerate() {
            if self.datasets[..i].iter().any(|e| e.commitment == d.commitment) {
                return Err(invalid("datasets", format!("dataset {} is listed twice", hex::encode(d.commitment))));
            }
        }
        if self.recipients.is_empty() {
            return Err(invalid("recipients", "names no recipient"));
        }
        Ok(())
    }

    /// The dataset entry with this commitment, if the job lists it.
    pub fn dataset(&self, commitment: &[u8; 32]) -> Option<&DatasetRef> {
        self.datasets.iter().find(|d| &d.commitment == commitment)
    }
}
