//! Where evidence comes from: the platform's attestation interface. Every
//! implementation returns a raw hardware report and its endorsement chain;
//! callers cannot tell the simulated platform from real hardware except by
//! the evidence kind it declares.

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
}

/// A platform that produces attestation reports.
pub trait Tee {
    /// A report whose REPORT_DATA is `report_data`.
    fn attest(&self, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError>;
}
