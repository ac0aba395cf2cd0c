//! The AMD SEV-SNP attestation report (SEV-SNP ABI specification, table
//! "ATTESTATION_REPORT Structure"), versions 2, 3 and 5.
//!
//! The struct holds one field per specification field, named as the
//! specification names them. Reserved ranges are not kept: they are covered
//! by the signature, which is checked over the exact bytes received.

use super::tcb::TcbVersion;

/// Size of every report version this crate accepts.
pub const REPORT_LEN: usize = 0x4A0;
/// The signature covers bytes `0..SIGNED_LEN`.
pub const SIGNED_LEN: usize = 0x2A0;
/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only one defined.
pub const ECDSA_P384_SHA384: u32 = 1;

/// Why bytes are not an SNP report this crate can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The input is not exactly [`REPORT_LEN`] bytes long.
    #[error("an SEV-SNP report is {REPORT_LEN} bytes, got {0}")]
    Length(usize),
    /// The VERSION field names a layout this crate does not know.
    #[error("unsupported SEV-SNP report version {0} (supported: 2, 3, 5)")]
    UnsupportedVersion(u32),
    /// SIGNATURE_ALGO is not ECDSA P-384 with SHA-384.
    #[error("unsupported report signature algorithm {0}")]
    UnsupportedSignatureAlgorithm(u32),
    /// The unsigned tail of the signature field is not zero. Nothing
    /// authenticates those bytes, so they must carry nothing.
    #[error("the reserved bytes after the signature are not zero")]
    UnsignedBytesNotZero,
    /// KEY_INFO.SIGNING_KEY says the report is unsigned or names an unknown key.
    #[error("report signing key field {0} is neither VCEK (0) nor VLEK (1)")]
    UnknownSigningKey(u32),
}

/// The guest policy the VM was launched with (POLICY field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 19: the hypervisor may debug the guest (read and write its memory).
    pub fn debug(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Bit 18: a migration agent may be associated with the guest.
    pub fn migrate_ma(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bit 16: simultaneous multithreading allowed.
    pub fn smt(self) -> bool {
        self.0 & (1 << 16) != 0
    }
}

/// Which key signed the report (KEY_INFO.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// The chip-unique Versioned Chip Endorsement Key.
    Vcek,
    /// The cloud provider's Versioned Loaded Endorsement Key.
    Vlek,
}

impl SigningKey {
    /// The name used in claims and documents.
    pub fn name(self) -> &'static str {
        match self {
            SigningKey::Vcek => "vcek",
            SigningKey::Vlek => "vlek",
        }
    }
}

/// A parsed SEV-SNP attestation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    /// VERSION.
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: GuestPolicy,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// SIGNATURE_ALGO.
    pub signature_algo: u32,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// KEY_INFO.SIGNING_KEY.
    pub signing_key: SigningKey,
    /// KEY_INFO.MASK_CHIP_KEY: CHIP_ID is zeroed when set.
    pub mask_chip_key: bool,
    /// REPORT_DATA: 64 bytes chosen by the guest (sealtune binds nonces and keys here).
    pub report_data: [u8; 64],
    /// MEASUREMENT: the launch digest of the guest.
    pub measurement: [u8; 48],
    /// HOST_DATA: 32 bytes chosen at launch (sealtune: the job manifest hash).
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORT_ID.
    pub report_id: [u8; 32],
    /// REPORT_ID_MA.
    pub report_id_ma: [u8; 32],
    /// REPORTED_TCB: the TCB the VCEK was derived from.
    pub reported_tcb: TcbVersion,
    /// CPUID family, model and stepping (version 3 and later; zero before).
    pub cpuid_fms: [u8; 3],
    /// CHIP_ID.
    pub chip_id: [u8; 64],
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbVersion,
    /// The signature's r, as a big-endian P-384 scalar.
    pub signature_r: [u8; 48],
    /// The signature's s, as a big-endian P-384 scalar.
    pub signature_s: [u8; 48],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("in-bounds slice")
}

/// The report stores r and s as 72-byte little-endian fields, zero-padded
/// beyond the 48 bytes of a P-384 scalar; anything in the padding is invalid.
fn scalar_at(b: &[u8], at: usize) -> Option<[u8; 48]> {
    let field = &b[at..at + 72];
    if field[48..].iter().any(|&x| x != 0) {
        return None;
    }
    let mut be: [u8; 48] = field[..48].try_into().expect("48 bytes");
    be.reverse();
    Some(be)
}

impl SnpReport {
    /// Parses a report; the length is checked before any byte is read.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() != REPORT_LEN {
            return Err(ReportError::Length(bytes.len()));
        }
        let version = u32_at(bytes, 0x00);
        if !matches!(version, 2 | 3 | 5) {
            return Err(ReportError::UnsupportedVersion(version));
        }
        let signature_algo = u32_at(bytes, 0x34);
        if signature_algo != ECDSA_P384_SHA384 {
            return Err(ReportError::UnsupportedSignatureAlgorithm(signature_algo));
        }
        if bytes[SIGNED_LEN + 144..].iter().any(|&b| b != 0) {
            return Err(ReportError::UnsignedBytesNotZero);
        }
        let key_info = u32_at(bytes, 0x48);
        let signing_key = match (key_info >> 2) & 0b111 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            other => return Err(ReportError::UnknownSigningKey(other)),
        };
        // A non-zero padding byte cannot be part of a valid signature; it is
        // reported as an all-zero scalar, which no verifier accepts.
        let signature_r = scalar_at(bytes, 0x2A0).unwrap_or([0; 48]);
        let signature_s = scalar_at(bytes, 0x2A0 + 72).unwrap_or([0; 48]);
        Ok(SnpReport {
            version,
            guest_svn: u32_at(bytes, 0x04),
            policy: GuestPolicy(u64_at(bytes, 0x08)),
            family_id: array_at(bytes, 0x10),
            image_id: array_at(bytes, 0x20),
            vmpl: u32_at(bytes, 0x30),
            signature_algo,
            current_tcb: TcbVersion(u64_at(bytes, 0x38)),
            platform_info: u64_at(bytes, 0x40),
            signing_key,
            mask_chip_key: key_info & 0b10 != 0,
            report_data: array_at(bytes, 0x50),
            measurement: array_at(bytes, 0x90),
            host_data: array_at(bytes, 0xC0),
            id_key_digest: array_at(bytes, 0xE0),
            author_key_digest: array_at(bytes, 0x110),
            report_id: array_at(bytes, 0x140),
            report_id_ma: array_at(bytes, 0x160),
            reported_tcb: TcbVersion(u64_at(bytes, 0x180)),
            cpuid_fms: if version >= 3 { array_at(bytes, 0x188) } else { [0; 3] },
            chip_id: array_at(bytes, 0x1A0),
            committed_tcb: TcbVersion(u64_at(bytes, 0x1E0)),
            launch_tcb: TcbVersion(u64_at(bytes, 0x1F0)),
            signature_r,
            signature_s,
        })
    }
}

/// Field offsets, for code that builds reports (the simulated platform) and
/// for tests that tamper with single fields.
pub mod offset {
    /// VERSION.
    pub const VERSION: usize = 0x00;
    /// POLICY.
    pub const POLICY: usize = 0x08;
    /// VMPL.
    pub const VMPL: usize = 0x30;
    /// SIGNATURE_ALGO.
    pub const SIGNATURE_ALGO: usize = 0x34;
    /// CURRENT_TCB.
    pub const CURRENT_TCB: usize = 0x38;
    /// KEY_INFO.
    pub const KEY_INFO: usize = 0x48;
    /// REPORT_DATA.
    pub const REPORT_DATA: usize = 0x50;
    /// MEASUREMENT.
    pub const MEASUREMENT: usize = 0x90;
    /// HOST_DATA.
    pub const HOST_DATA: usize = 0xC0;
    /// REPORT_ID.
    pub const REPORT_ID: usize = 0x140;
    /// REPORTED_TCB.
    pub const REPORTED_TCB: usize = 0x180;
    /// CPUID family, model and stepping (version 3 and later).
    pub const CPUID_FMS: usize = 0x188;
    /// CHIP_ID.
    pub const CHIP_ID: usize = 0x1A0;
    /// COMMITTED_TCB.
    pub const COMMITTED_TCB: usize = 0x1E0;
    /// LAUNCH_TCB.
    pub const LAUNCH_TCB: usize = 0x1F0;
    /// SIGNATURE (r, then s, 72 little-endian bytes each).
    pub const SIGNATURE: usize = 0x2A0;
}
