//! NVIDIA Hopper confidential-computing GPU evidence: an SPDM 1.1
//! GET_MEASUREMENTS request and the signed MEASUREMENTS response (DMTF
//! DSP0274), with the GPU's device certificate chain up to the NVIDIA
//! Device Identity CA.
//!
//! Checked offline: the chain to the pinned NVIDIA root, the ECDSA P-384
//! signature over SHA-384(request ‖ response without the signature), the
//! leaf's FWID against the one the report carries, and the nonce binding
//! to the CPU TEE's evidence. Not checked offline: certificate revocation
//! (NVIDIA's OCSP) and the measurements themselves against NVIDIA's
//! reference integrity manifests (RIMs), both served online.

use crate::x509::{verify_chain, EcChainError, EcKey};
use der::asn1::ObjectIdentifier;
use p384::ecdsa::{signature::Verifier as _, Signature};
use time::OffsetDateTime;

/// SHA-384 of the SubjectPublicKeyInfo of the NVIDIA Device Identity CA
/// (O=NVIDIA, CN=NVIDIA Device Identity CA).
pub const NVIDIA_DEVICE_ROOT_SPKI_SHA384: [u8; 48] =
    hex_literal::hex!("e108f61de3fce5261151f8a0eb562a920639ef1b0fcebba785ee52f54420e4248be3400366d45c2880bdf13044325393");

/// GSP FMC leaf, GSP BROM, provisioner ICA, GH100 identity, device identity CA.
const CHAIN_LEN: usize = 5;
const SPDM_1_1: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;
/// Version, code, param1, param2, nonce, slot.
const REQUEST_LEN: usize = 37;
const NONCE_LEN: usize = 32;
/// Raw r ‖ s of ECDSA P-384.
const SIGNATURE_LEN: usize = 96;
/// Opaque-data TLV types in NVIDIA's MEASUREMENTS response.
const OPAQUE_DRIVER_VERSION: u16 = 3;
const OPAQUE_VBIOS_VERSION: u16 = 6;
const OPAQUE_FWID: u16 = 20;
/// TCG DICE TcbInfo, which carries the FWID in NVIDIA's leaf certificate.
const TCG_DICE_TCB_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");

/// Why GPU evidence cannot be read or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// Not an SPDM 1.1 GET_MEASUREMENTS exchange in the expected layout.
    #[error("not an SPDM 1.1 GET_MEASUREMENTS request and response: {0}")]
    Malformed(&'static str),
    /// Bytes follow the signature that are not the one zero byte some tools append.
    #[error("{0} unexpected bytes after the signature")]
    TrailingBytes(usize),
    /// The device certificate chain is not valid.
    #[error("GPU certificate chain: {0}")]
    Chain(#[from] EcChainError),
    /// The leaf's key is not ECDSA P-384.
    #[error("the GPU leaf certificate's key is not an ECDSA P-384 key")]
    LeafKey,
    /// The response signature does not verify with the leaf key.
    #[error("SPDM MEASUREMENTS signature is invalid")]
    BadSignature,
    /// The report has no FWID, or the leaf certificate does not carry it.
    #[error("the report's FWID is not the one in the GPU leaf certificate")]
    FwidMismatch,
    /// The request nonce is not the expected one.
    #[error("SPDM nonce {actual} is not the expected {expected} (replayed or unbound GPU evidence)")]
    NonceMismatch {
        /// What the verifier expected, hex.
        expected: String,
        /// What the request carries, hex.
        actual: String,
    },
}

/// One measurement block (DMTF measurement specification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// Block index (1-based).
    pub index: u8,
    /// DMTF value type.
    pub value_type: u8,
    /// The measurement value (a SHA-384 digest on Hopper).
    pub value: Vec<u8>,
}

/// A parsed GPU attestation report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuReport {
    /// The requester's nonce (the verifier's challenge).
    pub nonce: [u8; 32],
    /// The responder's nonce.
    pub response_nonce: [u8; 32],
    /// The measurement blocks.
    pub measurements: Vec<Measurement>,
    /// Opaque-data TLVs (type, value).
    pub opaque: Vec<(u16, Vec<u8>)>,
    signed: Vec<u8>,
    signature: [u8; SIGNATURE_LEN],
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize, what: &'static str) -> Result<&'a [u8], GpuError> {
    let out = at.checked_add(n).and_then(|end| b.get(*at..end)).ok_or(GpuError::Malformed(what))?;
    *at += n;
    Ok(out)
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

impl GpuReport {
    /// Parses request ‖ response by its structure (not by "last 96 bytes").
    pub fn parse(bytes: &[u8]) -> Result<Self, GpuError> {
        let at = &mut 0;
        let request = take(bytes, at, REQUEST_LEN, "shorter than the request")?;
        if request[0] != SPDM_1_1 || request[1] != GET_MEASUREMENTS {
            return Err(GpuError::Malformed("request is not SPDM 1.1 GET_MEASUREMENTS"));
        }
        if request[2] & 1 == 0 {
            return Err(GpuError::Malformed("the request did not ask for a signature"));
        }
        let nonce: [u8; 32] = request[4..36].try_into().expect("32 bytes");
        let head = take(bytes, at, 8, "response header")?;
        if head[0] != SPDM_1_1 || head[1] != MEASUREMENTS {
            return Err(GpuError::Malformed("response is not SPDM 1.1 MEASUREMENTS"));
        }
        let blocks = head[4];
        let record_len = usize::from(head[5]) | usize::from(head[6]) << 8 | usize::from(head[7]) << 16;
        let record = take(bytes, at, record_len, "measurement record")?;
        let measurements = parse_blocks(record, blocks)?;
        let response_nonce: [u8; 32] = take(bytes, at, NONCE_LEN, "response nonce")?.try_into().expect("32 bytes");
        let opaque_len = usize::from(u16_le(take(bytes, at, 2, "opaque length")?));
        let opaque = parse_opaque(take(bytes, at, opaque_len, "opaque data")?)?;
        let signed = bytes[..*at].to_vec();
        let signature: [u8; SIGNATURE_LEN] = take(bytes, at, SIGNATURE_LEN, "signature")?.try_into().expect("96 bytes");
        let rest = &bytes[*at..];
        if !(rest.is_empty() || rest == [0]) {
            return Err(GpuError::TrailingBytes(rest.len()));
        }
        Ok(GpuReport { nonce, response_nonce, measurements, opaque, signed, signature })
    }

    fn opaque_field(&self, kind: u16) -> Option<&[u8]> {
        self.opaque.iter().find(|(t, _)| *t == kind).map(|(_, v)| v.as_slice())
    }

    /// The driver version the report states.
    pub fn driver_version(&self) -> Option<String> {
        self.opaque_field(OPAQUE_DRIVER_VERSION).map(|v| String::from_utf8_lossy(v).trim_end_matches('\0').to_string())
    }

    /// The VBIOS version, formatted as NVIDIA's tools do (`96.00.9f.00.01`).
    pub fn vbios_version(&self) -> Option<String> {
        let v = self.opaque_field(OPAQUE_VBIOS_VERSION)?;
        if v.len() < 8 {
            return None;
        }
        // A little-endian u64: bytes 3..0 are major.minor.x.y, byte 4 the OEM number.
        Some(format!("{:02x}.{:02x}.{:02x}.{:02x}.{:02x}", v[3], v[2], v[1], v[0], v[4]))
    }

    /// Verifies, in order: the chain (leaf first; `root` replaces the
    /// chain's own root when given) to the pinned NVIDIA root with every
    /// certificate valid at `at`; the response signature with the leaf key;
    /// the leaf's FWID against the report's.
    pub fn verify(&self, chain: &[Vec<u8>], root: Option<&[u8]>, at: OffsetDateTime) -> Result<(), GpuError> {
        let mut chain = chain.to_vec();
        if let (Some(root), Some(last)) = (root, chain.last_mut()) {
            *last = root.to_vec();
        }
        let certs = verify_chain(&chain, CHAIN_LEN, "NVIDIA Device Identity", &[NVIDIA_DEVICE_ROOT_SPKI_SHA384], at)?;
        let leaf = &certs[0];
        let Some(EcKey::P384(key)) = leaf.ec_key() else {
            return Err(GpuError::LeafKey);
        };
        let signature = Signature::from_slice(&self.signature).map_err(|_| GpuError::BadSignature)?;
        key.verify(&self.signed, &signature).map_err(|_| GpuError::BadSignature)?;
        // The FWID is a SHA-384 digest inside the DICE TcbInfo's fwids; a
        // 48-byte digest cannot occur there by accident.
        let fwid = self.opaque_field(OPAQUE_FWID).filter(|f| f.len() == 48).ok_or(GpuError::FwidMismatch)?;
        let tcb_info = leaf
            .cert
            .tbs_certificate
            .extensions
            .as_ref()
            .and_then(|exts| exts.iter().find(|e| e.extn_id == TCG_DICE_TCB_INFO))
            .ok_or(GpuError::FwidMismatch)?;
        if !tcb_info.extn_value.as_bytes().windows(fwid.len()).any(|w| w == fwid) {
            return Err(GpuError::FwidMismatch);
        }
        Ok(())
    }

    /// Checks the request nonce against the expected one.
    pub fn check_nonce(&self, expected: &[u8; 32]) -> Result<(), GpuError> {
        if &self.nonce != expected {
            return Err(GpuError::NonceMismatch { expected: hex::encode(expected), actual: hex::encode(self.nonce) });
        }
        Ok(())
    }
}

/// The SPDM nonce that binds GPU evidence to a CPU TEE's evidence: the first
/// 32 bytes of the CPU report's REPORT_DATA (as Confidential Containers do).
pub fn nonce_for_cpu_report_data(report_data: &[u8; 64]) -> [u8; 32] {
    report_data[..32].try_into().expect("32 bytes")
}

fn parse_blocks(record: &[u8], count: u8) -> Result<Vec<Measurement>, GpuError> {
    let at = &mut 0;
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let head = take(record, at, 4, "measurement block header")?;
        let block = take(record, at, usize::from(u16_le(&head[2..4])), "measurement block")?;
        if block.len() < 3 || usize::from(u16_le(&block[1..3])) != block.len() - 3 {
            return Err(GpuError::Malformed("measurement value size disagrees with its block"));
        }
        out.push(Measurement { index: head[0], value_type: block[0], value: block[3..].to_vec() });
    }
    if *at != record.len() {
        return Err(GpuError::Malformed("measurement record longer than its blocks"));
    }
    Ok(out)
}

fn parse_opaque(data: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, GpuError> {
    let at = &mut 0;
    let mut out = Vec::new();
    while *at < data.len() {
        let head = take(data, at, 4, "opaque TLV header")?;
        let value = take(data, at, usize::from(u16_le(&head[2..4])), "opaque TLV value")?;
        out.push((u16_le(&head[..2]), value.to_vec()));
    }
    Ok(out)
}
