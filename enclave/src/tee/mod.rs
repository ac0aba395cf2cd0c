//! Where evidence comes from: the platform's attestation interface. Every
//! implementation returns a raw hardware report and its endorsement chain;
//! callers cannot tell the simulated platform from real hardware except by
//! the evidence kind it declares.

pub mod configfs;
pub mod launch;
pub mod sev_guest;
pub mod sim;

use configfs::ConfigfsTsm;
use sealtune_attestation::evidence::TeeKind;
use sev_guest::SevGuestDevice;
use std::path::Path;

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

/// The certificates that endorse an SEV-SNP report, in verification order:
/// endorsement key (VCEK or VLEK), ASK/ASVK, ARK. Without an endorsement
/// key there are none (the verifier then fetches them from AMD); without
/// the intermediate or root, only the leaf.
pub(crate) fn snp_endorsements(leaf: Option<Vec<u8>>, ask: Option<Vec<u8>>, ark: Option<Vec<u8>>) -> Vec<Vec<u8>> {
    match (leaf, ask, ark) {
        (Some(leaf), Some(ask), Some(ark)) => vec![leaf, ask, ark],
        (Some(leaf), _, _) => vec![leaf],
        (None, _, _) => Vec::new(),
    }
}

/// A real confidential VM's attestation interface: configfs-tsm when the
/// kernel has it, otherwise (SEV-SNP only) the `/dev/sev-guest` device.
pub enum Hardware {
    /// Linux configfs-tsm (SEV-SNP and TDX).
    Configfs(ConfigfsTsm),
    /// `/dev/sev-guest` (SEV-SNP).
    SevGuest(SevGuestDevice),
}

impl Hardware {
    /// Picks the interface for `kind`: configfs-tsm if `configfs_root`
    /// exists, else `/dev/sev-guest` for SEV-SNP.
    pub fn select(kind: TeeKind, configfs_root: &Path) -> Result<Self, TeeError> {
        Self::select_with(kind, configfs_root, Path::new(sev_guest::DEVICE))
    }

    fn select_with(kind: TeeKind, configfs_root: &Path, sev_device: &Path) -> Result<Self, TeeError> {
        if configfs_root.is_dir() {
            return Ok(Hardware::Configfs(ConfigfsTsm::new(configfs_root, kind)));
        }
        match kind {
            TeeKind::SevSnp if sev_device.exists() => Ok(Hardware::SevGuest(SevGuestDevice)),
            TeeKind::SevSnp => Err(TeeError::Unavailable(format!(
                "neither configfs-tsm ({}) nor {} exists: is this an SEV-SNP guest?",
                configfs_root.display(),
                sev_device.display()
            ))),
            TeeKind::Tdx => Err(TeeError::Unavailable(format!("no configfs-tsm at {}: is this a TDX guest?", configfs_root.display()))),
            TeeKind::Sim => Err(TeeError::Unavailable("the simulated platform is not hardware".into())),
        }
    }
}

impl Tee for Hardware {
    fn attest(&self, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError> {
        match self {
            Hardware::Configfs(tee) => tee.attest(report_data),
            Hardware::SevGuest(tee) => tee.attest(report_data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configfs_first_then_sev_guest_for_snp_only() {
        let tmp = tempfile::tempdir().unwrap();
        let configfs = tmp.path().join("tsm/report");
        let device = tmp.path().join("sev-guest");
        let select = |kind| Hardware::select_with(kind, &configfs, &device);
        let err = select(TeeKind::SevSnp).err().unwrap();
        assert!(err.to_string().contains("neither configfs-tsm"), "{err}");
        assert!(select(TeeKind::Tdx).err().unwrap().to_string().contains("TDX guest"));

        std::fs::write(&device, b"").unwrap();
        assert!(matches!(select(TeeKind::SevSnp), Ok(Hardware::SevGuest(_))));
        assert!(select(TeeKind::Tdx).is_err(), "TDX has no device fallback");

        std::fs::create_dir_all(&configfs).unwrap();
        assert!(matches!(select(TeeKind::SevSnp), Ok(Hardware::Configfs(_))));
        assert!(matches!(select(TeeKind::Tdx), Ok(Hardware::Configfs(_))));
    }
}
