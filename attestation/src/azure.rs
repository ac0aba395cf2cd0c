//! Azure confidential VMs wrap the hardware report in an "HCL report"
//! (magic `HCLA`): a 32-byte header, the SEV-SNP report or TD report padded
//! to 1184 bytes, then a runtime-claims block whose JSON (the vTPM's
//! attestation and encryption keys, VM configuration, user data) the
//! paravisor binds by putting its hash in REPORT_DATA[0..32] (SNP) or in
//! the TD quote's REPORTDATA[0..32] (TDX).
//!
//! Parsing and checking that binding is all this module does: the inner SNP
//! report, or the TD quote, is verified by the ordinary path.

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 4] = b"HCLA";
const HEADER_LEN: usize = 0x20;
/// The hardware report slot: an SEV-SNP report exactly, a TD report padded.
const HW_REPORT_LEN: usize = 1184;
const CLAIMS_AT: usize = HEADER_LEN + HW_REPORT_LEN;
/// data_size, version, report_type, hash_type, variable_data_size (LE u32 each).
const CLAIMS_HEADER_LEN: usize = 20;
const HASH_SHA256: u32 = 1;

/// What the wrapped hardware report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HclReportType {
    /// An AMD SEV-SNP attestation report.
    Snp,
    /// An Intel TDX TD report (its quote comes separately).
    Tdx,
}

/// Why bytes are not an HCL report, or its runtime claims are not bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HclError {
    /// Too short, wrong magic, or a length field pointing outside the data.
    #[error("not an Azure HCL report: {0}")]
    Malformed(&'static str),
    /// The report type is neither SNP (2) nor TDX (4).
    #[error("HCL report type {0} is neither SEV-SNP (2) nor TDX (4)")]
    UnknownReportType(u32),
    /// The runtime claims are hashed with something other than SHA-256.
    #[error("HCL runtime claims hash type {0} is not SHA-256 (1)")]
    UnsupportedHash(u32),
    /// REPORT_DATA does not hold SHA-256(runtime claims) ‖ 32 zero bytes.
    #[error("REPORT_DATA does not bind the HCL runtime claims (expected SHA-256 {expected} followed by zeros)")]
    BindingMismatch {
        /// SHA-256 of the runtime-claims JSON, hex.
        expected: String,
    },
}

/// A parsed HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport {
    /// What `hw_report` holds.
    pub report_type: HclReportType,
    /// The hardware report: for SNP exactly the 1184-byte report.
    pub hw_report: Vec<u8>,
    /// The runtime-claims JSON, byte for byte as hashed.
    pub runtime_claims: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl HclReport {
    /// True when `bytes` start with the HCL magic.
    pub fn is_hcl(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Parses an HCL report.
    pub fn parse(bytes: &[u8]) -> Result<Self, HclError> {
        if !Self::is_hcl(bytes) {
            return Err(HclError::Malformed("no HCLA magic"));
        }
        if bytes.len() < CLAIMS_AT + CLAIMS_HEADER_LEN {
            return Err(HclError::Malformed("shorter than header, hardware report and claims header"));
        }
        let report_type = match u32_at(bytes, CLAIMS_AT + 8) {
            2 => HclReportType::Snp,
            4 => HclReportType::Tdx,
            other => return Err(HclError::UnknownReportType(other)),
        };
        let hash_type = u32_at(bytes, CLAIMS_AT + 12);
        if hash_type != HASH_SHA256 {
            return Err(HclError::UnsupportedHash(hash_type));
        }
        let data_size = u32_at(bytes, CLAIMS_AT) as usize;
        let json_len = u32_at(bytes, CLAIMS_AT + 16) as usize;
        let json_at = CLAIMS_AT + CLAIMS_HEADER_LEN;
        if json_len > data_size || json_at.checked_add(json_len).is_none_or(|end| end > bytes.len()) {
            return Err(HclError::Malformed("runtime claims length points outside the report"));
        }
        Ok(HclReport {
            report_type,
            hw_report: bytes[HEADER_LEN..CLAIMS_AT].to_vec(),
            runtime_claims: bytes[json_at..json_at + json_len].to_vec(),
        })
    }

    /// Checks that `report_data` (of the inner SNP report, or of the TD
    /// quote) is SHA-256(runtime claims) followed by 32 zero bytes.
    pub fn check_binding(&self, report_data: &[u8; 64]) -> Result<(), HclError> {
        let digest: [u8; 32] = Sha256::digest(&self.runtime_claims).into();
        if report_data[..32] != digest || report_data[32..].iter().any(|&b| b != 0) {
            return Err(HclError::BindingMismatch { expected: hex::encode(digest) });
        }
        Ok(())
    }
}
