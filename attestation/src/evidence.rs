//! The evidence bundle an enclave hands to a verifier (format: see
//! `docs/formats/evidence.md`): the hardware report, the certificates that
//! endorse it and the enclave public keys the report binds.

use crate::cbor::{self, CborError};
use crate::snp::chain::CertChain;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The format version this crate writes and reads.
pub const EVIDENCE_VERSION: u32 = 1;

/// The kind of trusted execution environment that produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TeeKind {
    /// An AMD SEV-SNP report.
    #[serde(rename = "sev-snp")]
    SevSnp,
    /// An Intel TDX quote.
    #[serde(rename = "tdx")]
    Tdx,
    /// A report in the SEV-SNP layout from sealtune's simulated platform.
    #[serde(rename = "sim")]
    Sim,
}

impl TeeKind {
    /// The name used in documents and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TeeKind::SevSnp => "sev-snp",
            TeeKind::Tdx => "tdx",
            TeeKind::Sim => "sim",
        }
    }
}

/// The enclave's public keys, generated inside it and bound by its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnclavePublicKeys {
    /// X25519 key that grants are sealed to (HPKE).
    #[serde(with = "serde_bytes")]
    pub kem: [u8; 32],
    /// Ed25519 key that signs receipts.
    #[serde(with = "serde_bytes")]
    pub signing: [u8; 32],
}

/// A hardware report with its endorsement certificates and bound keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Always [`EVIDENCE_VERSION`].
    pub version: u32,
    /// Which TEE produced `report`.
    pub tee: TeeKind,
    /// The raw report or quote, exactly as the hardware produced it.
    #[serde(with = "serde_bytes")]
    pub report: Vec<u8>,
    /// DER certificates: endorsement key (VCEK/VLEK), intermediate (ASK/ASVK), root (ARK).
    pub certs: Vec<serde_bytes::ByteBuf>,
    /// The keys `report` binds through its report data.
    pub keys: EnclavePublicKeys,
}

/// Why bytes are not evidence this crate can read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The bytes are not a CBOR evidence document.
    #[error("not an evidence document: {0}")]
    Malformed(#[from] CborError),
    /// The document's version is not [`EVIDENCE_VERSION`].
    #[error("unsupported evidence format version {0} (this build reads version {EVIDENCE_VERSION})")]
    UnsupportedVersion(u32),
    /// SEV-SNP evidence needs exactly three certificates.
    #[error("SEV-SNP evidence carries {0} certificates; expected 3 (VCEK/VLEK, ASK/ASVK, ARK)")]
    CertCount(usize),
}

impl Evidence {
    /// Decodes evidence, checking the version before anything else.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, EvidenceError> {
        let version = cbor::version_of(bytes)?;
        if version != EVIDENCE_VERSION {
            return Err(EvidenceError::UnsupportedVersion(version));
        }
        Ok(cbor::from_slice(bytes)?)
    }

    /// The canonical encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::to_vec(self)
    }

    /// The SHA-256 of the canonical encoding; grants name the evidence they trusted by it.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_cbor()).into()
    }

    /// The certificate chain of SNP-layout evidence.
    pub fn snp_chain(&self) -> Result<CertChain, EvidenceError> {
        match self.certs.as_slice() {
            [endorsement, intermediate, root] => Ok(CertChain {
                endorsement: endorsement.to_vec(),
                intermediate: intermediate.to_vec(),
                root: root.to_vec(),
            }),
            other => Err(EvidenceError::CertCount(other.len())),
        }
    }
}
