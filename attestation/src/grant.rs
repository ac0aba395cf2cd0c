//! Key grants (CBOR, `docs/formats/grant.md`): a data owner's DEK sealed to
//! one enclave's X25519 key with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-256-GCM) and signed with the owner's identity key.
//!
//! The HPKE info binds the manifest hash, the digest of the evidence the
//! owner verified and the dataset commitment, so a grant opens only in the
//! enclave, for the job and for the dataset it was made for.

use crate::cbor::{self, CborError};
use crate::identity::{verify_signature, IdentityKey};
use crate::manifest::JobManifest;
use crate::policy::{Policy, TermsViolation};
use crate::verify::BoundEvidence;
use hpke::{aead::AesGcm256, kdf::HkdfSha256, kem::X25519HkdfSha256, Deserializable, Kem, OpModeS, Serializable};
use serde::{Deserialize, Serialize};

/// The grant format version this crate writes and reads.
pub const GRANT_VERSION: u32 = 1;
/// Domain tag at the start of the HPKE info.
pub const GRANT_INFO_TAG: &[u8] = b"sealtune/v1/grant";

/// The signed part of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBody {
    /// Always [`GRANT_VERSION`].
    pub version: u32,
    /// SHA-256 of the job manifest the enclave was launched with.
    #[serde(with = "serde_bytes")]
    pub manifest_hash: [u8; 32],
    /// SHA-256 of the evidence document the owner verified.
    #[serde(with = "serde_bytes")]
    pub evidence_digest: [u8; 32],
    /// Commitment of the dataset whose key this is.
    #[serde(with = "serde_bytes")]
    pub dataset: [u8; 32],
    /// The enclave X25519 key the DEK is sealed to.
    #[serde(with = "serde_bytes")]
    pub recipient: [u8; 32],
    /// The owner's Ed25519 identity key.
    #[serde(with = "serde_bytes")]
    pub owner: [u8; 32],
    /// HPKE encapsulated key.
    #[serde(with = "serde_bytes")]
    pub encapsulated_key: [u8; 32],
    /// HPKE ciphertext of the 32-byte DEK (with its 16-byte tag).
    #[serde(with = "serde_bytes")]
    pub sealed_key: Vec<u8>,
}

/// A grant as sent: the exact body bytes and the owner's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedGrant {
    /// Always [`GRANT_VERSION`].
    pub version: u32,
    /// Canonical CBOR of a [`GrantBody`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Ed25519 signature by `body.owner` over `body`.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; 64],
}

/// Why a grant cannot be made or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// Not a CBOR grant.
    #[error("not a key grant: {0}")]
    Malformed(#[from] CborError),
    /// Unknown grant format version.
    #[error("unsupported grant version {0} (this build reads version {GRANT_VERSION})")]
    UnsupportedVersion(u32),
    /// The manifest given is not the one the evidence binds.
    #[error("the manifest is not the one the enclave was launched with")]
    ManifestMismatch,
    /// The owner's policy rejects the job's terms.
    #[error("job terms rejected: {0}")]
    Terms(#[from] TermsViolation),
    /// The job does not list this dataset.
    #[error("the job manifest does not list dataset {0}")]
    UnknownDataset(String),
    /// The manifest names another owner for the dataset.
    #[error("the job manifest lists dataset {dataset} under another owner key")]
    OwnerMismatch {
        /// Commitment, hex.
        dataset: String,
    },
    /// The owner's signature does not verify.
    #[error("grant signature is invalid")]
    BadSignature,
    /// The grant is sealed to another enclave's key.
    #[error("grant is sealed to another enclave's key")]
    WrongEnclave,
    /// The grant names evidence this enclave never issued.
    #[error("grant names evidence this enclave did not issue")]
    UnknownEvidence,
    /// HPKE failed to seal or open the key.
    #[error("the sealed key does not open")]
    Decryption,
}

/// The HPKE info string: tag ‖ manifest hash ‖ evidence digest ‖ dataset.
pub fn hpke_info(manifest_hash: &[u8; 32], evidence_digest: &[u8; 32], dataset: &[u8; 32]) -> Vec<u8> {
    [GRANT_INFO_TAG, manifest_hash, evidence_digest, dataset].concat()
}

/// HPKE suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
pub type GrantKem = X25519HkdfSha256;
/// HPKE KDF of grants.
pub type GrantKdf = HkdfSha256;
/// HPKE AEAD of grants.
pub type GrantAead = AesGcm256;

/// Makes a grant of `dek` for `dataset` to the enclave `evidence` attests,
/// after checking the job's terms against the owner's policy.
pub fn make_grant(
    evidence: &BoundEvidence,
    manifest: &JobManifest,
    policy: &Policy,
    dataset: &[u8; 32],
    dek: &[u8; 32],
    owner: &IdentityKey,
) -> Result<Vec<u8>, GrantError> {
    if manifest.hash() != evidence.manifest_hash {
        return Err(GrantError::ManifestMismatch);
    }
    policy.check_job(manifest)?;
    let listed = manifest.dataset(dataset).ok_or_else(|| GrantError::UnknownDataset(hex::encode(dataset)))?;
    if listed.owner != owner.public() {
        return Err(GrantError::OwnerMismatch { dataset: hex::encode(dataset) });
    }
    let recipient =
        <GrantKem as Kem>::PublicKey::from_bytes(&evidence.keys.kem).map_err(|_| GrantError::Decryption)?;
    let info = hpke_info(&evidence.manifest_hash, &evidence.evidence_digest, dataset);
    let (encapsulated, sealed_key) = hpke::single_shot_seal::<GrantAead, GrantKdf, GrantKem, _>(
        &OpModeS::Base,
        &recipient,
        &info,
        dek,
        &[],
        &mut rand_core::OsRng,
    )
    .map_err(|_| GrantError::Decryption)?;
    let body = cbor::to_vec(&GrantBody {
        version: GRANT_VERSION,
        manifest_hash: evidence.manifest_hash,
        evidence_digest: evidence.evidence_digest,
        dataset: *dataset,
        recipient: evidence.keys.kem,
        owner: owner.public(),
        encapsulated_key: encapsulated.to_bytes().into(),
        sealed_key,
    });
    let signature = owner.sign(&body);
    Ok(cbor::to_vec(&SignedGrant { version: GRANT_VERSION, body, signature }))
}

/// Decodes a grant and checks its owner's signature over the exact body bytes
/// received, and that `manifest` lists the dataset under that owner.
pub fn check_grant(bytes: &[u8], manifest: &JobManifest) -> Result<GrantBody, GrantError> {
    let version = cbor::version_of(bytes)?;
    if version != GRANT_VERSION {
        return Err(GrantError::UnsupportedVersion(version));
    }
    let signed: SignedGrant = cbor::from_slice(bytes)?;
    let body: GrantBody = cbor::from_slice(&signed.body)?;
    if body.version != GRANT_VERSION {
        return Err(GrantError::UnsupportedVersion(body.version));
    }
    if !verify_signature(&body.owner, &signed.body, &signed.signature) {
        return Err(GrantError::BadSignature);
    }
    if body.manifest_hash != manifest.hash() {
        return Err(GrantError::ManifestMismatch);
    }
    let listed = manifest.dataset(&body.dataset).ok_or_else(|| GrantError::UnknownDataset(hex::encode(body.dataset)))?;
    if listed.owner != body.owner {
        return Err(GrantError::OwnerMismatch { dataset: hex::encode(body.dataset) });
    }
    Ok(body)
}
