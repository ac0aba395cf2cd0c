//! What the enclave learns about its own launch from its platform: the
//! launch measurement a receipt states, and whether the job it was launched
//! for (HOST_DATA on SEV-SNP, MRCONFIGID on TDX) is the manifest it was
//! given. An enclave started with another manifest than its launch bound
//! refuses to serve: clients would refuse its evidence anyway, and it must
//! not train a job nobody attested.

use super::{Tee, TeeError};
use sealtune_attestation::evidence::TeeKind;
use sealtune_attestation::snp::report::SnpReport;
use sealtune_attestation::tdx::quote::{mr_config_id_for, TdxQuote};

/// Why the enclave's own launch does not fit the job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The platform produced no report.
    #[error(transparent)]
    Platform(#[from] TeeError),
    /// The platform's report cannot be parsed.
    #[error("the platform's own report is unreadable: {0}")]
    Report(String),
    /// The launch bound another job.
    #[error("this guest was launched for job {launched} but given manifest {manifest}: relaunch it with the manifest's hash")]
    OtherJob {
        /// What the launch bound, hex.
        launched: String,
        /// The manifest's hash, hex.
        manifest: String,
    },
}

/// Asks the platform for a report and returns the launch measurement (MRTD
/// on TDX) after checking that the launch bound `manifest_hash`.
pub fn check_launch(tee: &dyn Tee, kind: TeeKind, manifest_hash: &[u8; 32]) -> Result<[u8; 48], LaunchError> {
    let raw = tee.attest(&[0; 64])?;
    let (measurement, launched, expected) = match kind {
        TeeKind::Tdx => {
            let quote = TdxQuote::parse(&raw.report).map_err(|e| LaunchError::Report(e.to_string()))?;
            (quote.report.mr_td, quote.report.mr_config_id.to_vec(), mr_config_id_for(manifest_hash).to_vec())
        }
        _ => {
            let report = SnpReport::parse(&raw.report).map_err(|e| LaunchError::Report(e.to_string()))?;
            (report.measurement, report.host_data.to_vec(), manifest_hash.to_vec())
        }
    };
    if launched != expected {
        return Err(LaunchError::OtherJob { launched: hex::encode(launched), manifest: hex::encode(manifest_hash) });
    }
    Ok(measurement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tee::sim::{SimLaunch, SimPlatform, SimTee};

    #[test]
    fn the_launch_must_bind_the_manifest_given() {
        let (measurement, job) = ([0x5e; 48], [0x10; 32]);
        let tee = SimTee::launch(SimPlatform::generate(), SimLaunch::new(measurement, job));
        assert_eq!(check_launch(&tee, TeeKind::SevSnp, &job).unwrap(), measurement);
        match check_launch(&tee, TeeKind::SevSnp, &[0x11; 32]) {
            Err(LaunchError::OtherJob { launched, manifest }) => {
                assert_eq!((launched, manifest), (hex::encode(job), hex::encode([0x11; 32])));
            }
            other => panic!("expected OtherJob, got {other:?}"),
        }
        // An SNP report is not a TDX quote.
        assert!(matches!(check_launch(&tee, TeeKind::Tdx, &job), Err(LaunchError::Report(_))));
    }
}
