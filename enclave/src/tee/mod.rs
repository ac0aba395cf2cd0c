//! Where evidence comes from: the platform's attestation interface. Every
//! implementation returns a raw hardware report and its endorsement chain;
//! callers cannot tell the simulated platform from real hardware except by
//! the evidence kind it declares.

pub mod configfs;
pub mod launch;
pub mod sim;

use sealtune_attestation::evidence::TeeKind;

/// A report and the DER certificates that endorse it (leaf first, root last).
pub struct RawEvidence {
    /// The kind of TEE.
    pub tee: TeeKind,
    /// The raw report.
    pub report: Vec<u8>,
    /// Endorsement certificates, leaf first.
    pub certs: Vec<Vec<u8>>,
}

/// Why the platform could not produce evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeeError {
    /// The platform's files or device could not be used.
    #[error("attestation platform unavailable: {0}")]
    Unavailable(String),
    /// The configfs-tsm entry belongs to another kind of TEE.
    #[error("configfs-tsm provider is {found:?}, expected {expected:?}")]
    WrongProvider {
        /// The provider the requested TEE kind has.
        expected: &'static str,
        /// What the entry says.
        found: String,
    },
    /// Another process wrote to the report entry while we used it.
    #[error("configfs-tsm generation is {found} after our request, expected {expected}: another writer raced us, the report may not answer our data")]
    Conflict {
        /// The generation after exactly our one write.
        expected: u64,
        /// The generation read.
        found: u64,
    },
    /// The SEV-SNP certificate table (auxblob) is malformed.
    #[error("SEV-SNP certificate table: {0}")]
    CertTable(String),
}

/// A platform that produces attestation reports.
pub trait Tee {
    /// A report whose REPORT_DATA is `report_data`.
    fn attest(&self, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError>;
}
