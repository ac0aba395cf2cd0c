//! Evidence through `/dev/sev-guest` (the SNP_GET_EXT_REPORT request), for
//! SEV-SNP guests whose kernel has no configfs-tsm (before Linux 6.7). The
//! ioctl is issued by virtee's `sev` crate, which keeps this crate free of
//! `unsafe` code; the host's certificate table arrives with the report.

use super::{snp_endorsements, RawEvidence, Tee, TeeError};
use sealtune_attestation::evidence::TeeKind;
use sev::firmware::guest::Firmware;
use sev::firmware::host::CertType;

/// The device node the SEV guest driver creates.
pub const DEVICE: &str = "/dev/sev-guest";

/// The VMPL reports are requested for: the most privileged, as configfs-tsm's default `privlevel`.
const VMPL: u32 = 0;

/// The SEV guest device.
pub struct SevGuestDevice;

impl Tee for SevGuestDevice {
    fn attest(&self, report_data: &[u8; 64]) -> Result<RawEvidence, TeeError> {
        let mut firmware = Firmware::open().map_err(|e| TeeError::Unavailable(format!("{DEVICE}: {e}")))?;
        let (report, table) = firmware
            .get_ext_report(None, Some(*report_data), Some(VMPL))
            .map_err(|e| TeeError::Unavailable(format!("{DEVICE}: SNP_GET_EXT_REPORT: {e}")))?;
        let table = table.unwrap_or_default();
        let get = |kind: CertType| table.iter().find(|entry| entry.cert_type == kind).map(|entry| entry.data.clone());
        let certs = snp_endorsements(get(CertType::VCEK).or_else(|| get(CertType::VLEK)), get(CertType::ASK), get(CertType::ARK));
        Ok(RawEvidence { tee: TeeKind::SevSnp, report, certs })
    }
}
