//! The Intel TDX quote (versions 4 and 5) and the checks that need no
//! collateral: the PCK chain inside the quote up to the pinned Intel SGX
//! Root CA, the PCK's signature over the Quoting Enclave's report, that
//! report's binding of the attestation key, and the attestation key's
//! signature over the TD report. Parsing is dcap-qvl's.

use crate::x509::{verify_chain, EcChainError, EcKey};
use p256::ecdsa::{signature::Verifier as _, Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// SHA-384 of the SubjectPublicKeyInfo of Intel's SGX Root CA
/// (CN=Intel SGX Root CA, O=Intel Corporation), which roots every PCK chain.
pub const INTEL_SGX_ROOT_CA_SPKI_SHA384: [u8; 48] =
    hex_literal::hex!("3cdf1feb4e5eac629170f17625648da4a16effa22ae2bcca030b4358a8961c1bf26cf54a9598cd6a2d4a9cbb62377d22");

/// TEE type of a TDX quote header (0 would be SGX).
const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type: ECDSA P-256 with SHA-256, the only one defined for TDX.
const ECDSA_P256: u16 = 2;
/// Certification data type: PEM PCK leaf ‖ PCK CA ‖ root.
const PCK_CERT_CHAIN: u16 = 5;
/// PCK leaf, PCK Platform (or Processor) CA, Intel SGX Root CA.
const PCK_CHAIN_LEN: usize = 3;

/// Why a quote cannot be read or its signatures do not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The bytes are not a DCAP quote.
    #[error("not a DCAP quote: {0}")]
    Malformed(String),
    /// The quote comes from another TEE (SGX enclaves are not sealtune enclaves).
    #[error("quote TEE type {0:#x} is not TDX (0x81)")]
    NotTdx(u32),
    /// The quote version is not 4 or 5.
    #[error("unsupported TDX quote version {0} (supported: 4, 5)")]
    UnsupportedVersion(u16),
    /// The attestation key is not ECDSA P-256.
    #[error("unsupported attestation key type {0} (only 2, ECDSA P-256, is defined)")]
    AttestationKeyType(u16),
    /// The quote does not carry its PCK certificate chain.
    #[error("quote certification data type {0} is not a PCK certificate chain (5)")]
    CertificationDataType(u16),
    /// The PCK chain inside the quote (or given with `--root`) is not valid.
    #[error("PCK certificate chain: {0}")]
    PckChain(#[from] EcChainError),
    /// The PCK leaf's key is not ECDSA P-256.
    #[error("the PCK certificate's key is not an ECDSA P-256 key")]
    PckKey,
    /// The Quoting Enclave's report is not signed by the PCK.
    #[error("the Quoting Enclave report is not signed by the PCK certificate")]
    BadQeReportSignature,
    /// The QE report does not bind the attestation key.
    #[error("the Quoting Enclave report does not bind the attestation key (REPORTDATA != SHA-256(key || QE auth data) || zeros)")]
    QeReportDataMismatch,
    /// The attestation key is not a valid P-256 point.
    #[error("the attestation key in the quote is not a P-256 point")]
    AttestationKey,
    /// The TD report's signature does not verify.
    #[error("quote signature over the TD report is invalid")]
    BadQuoteSignature,
}

/// The TD report fields sealtune reads (TDX module ABI, TDREPORT / TD 1.5 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// TEE_TCB_SVN: TDX module and platform SVNs.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: the TDX module's measurement.
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM: the TDX module's signer (zero for Intel's own modules).
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES: the TDX module's attributes.
    pub seam_attributes: [u8; 8],
    /// TD_ATTRIBUTES.
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD: the initial TD contents (firmware), sealtune's launch measurement.
    pub mr_td: [u8; 48],
    /// MRCONFIGID: set by the host at launch; sealtune puts the job manifest hash here.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0–3: run-time extendable measurements (firmware config, kernel, command line, application).
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA: 64 bytes chosen by the TD.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN2 of a TD 1.5 report (quote v5): the current TCB, which
    /// differs from the launch TCB after a TD-preserving module update.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD of a TD 1.5 report: the service TDs bound to this TD (zero: none).
    pub mr_service_td: [u8; 48],
}

impl TdReport {
    /// TD_ATTRIBUTES.DEBUG (bit 0): the host can read and write the TD's state.
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }

    /// TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28).
    pub fn sept_ve_disable(&self) -> bool {
        self.td_attributes[3] & 0x10 != 0
    }

    /// The first TD attribute that makes the TD untrustworthy, as Intel's QVL
    /// judges them: profiling (unless `allow_debug`), migration, service-TD
    /// binding, EPT violations delivered to the TD as #VE, or a reserved bit.
    /// The DEBUG bit itself is checked on its own, first.
    pub fn refused_attribute(&self, allow_debug: bool) -> Option<&'static str> {
        let Ok(attributes) = dcap_qvl::quote::TDAttributes::parse(self.td_attributes) else {
            return Some("unreadable TD_ATTRIBUTES");
        };
        if attributes.tud & 0x70 != 0 && !allow_debug {
            Some("TD profiling is enabled")
        } else if attributes.reserved != 0 {
            Some("reserved TD_ATTRIBUTES bits are set")
        } else if attributes.sec.migratable {
            Some("TD migration is enabled (MIGRATABLE)")
        } else if attributes.sec.servtd_ext || self.mr_service_td != [0; 48] {
            Some("the TD is bound to service TDs")
        } else if !attributes.sec.sept_ve_disable {
            Some("SEPT_VE_DISABLE is not set: EPT violations reach the TD as #VE")
        } else {
            None
        }
    }
}

/// A parsed TDX quote.
#[derive(Debug, Clone)]
pub struct TdxQuote {
    /// Quote format version (4 or 5).
    pub version: u16,
    /// The TD report.
    pub report: TdReport,
    signed: Vec<u8>,
    attestation_key: [u8; 64],
    signature: [u8; 64],
    /// The Quoting Enclave's SGX report (REPORTBODY layout), signed by the PCK.
    pub(super) qe_report: [u8; 384],
    qe_report_signature: [u8; 64],
    qe_auth_data: Vec<u8>,
    pck_chain_pem: Vec<u8>,
}

/// Proof that a quote's PCK chain and signatures verified at a given time.
#[derive(Debug, Clone)]
pub struct SignaturesVerified {
    /// The pinned Intel root the chain ended in, DER; collateral must chain to it too.
    pub root: Vec<u8>,
    /// The verified PCK certificate, DER: its SGX extension gives the
    /// platform's FMSPC and SVNs for the TCB appraisal.
    pub pck: Vec<u8>,
}

impl TdxQuote {
    /// Parses a quote and checks its header before anything else.
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        let quote = dcap_qvl::quote::Quote::parse(bytes).map_err(|e| QuoteError::Malformed(format!("{e:#}")))?;
        let header = quote.header;
        if header.tee_type != TEE_TYPE_TDX {
            return Err(QuoteError::NotTdx(header.tee_type));
        }
        if !matches!(header.version, 4 | 5) {
            return Err(QuoteError::UnsupportedVersion(header.version));
        }
        if header.attestation_key_type != ECDSA_P256 {
            return Err(QuoteError::AttestationKeyType(header.attestation_key_type));
        }
        let td = quote.report.as_td10().ok_or_else(|| QuoteError::Malformed("the quote body is not a TD report".into()))?;
        let report = TdReport {
            tee_tcb_svn: td.tee_tcb_svn,
            mr_seam: td.mr_seam,
            mr_signer_seam: td.mr_signer_seam,
            seam_attributes: td.seam_attributes,
            td_attributes: td.td_attributes,
            xfam: td.xfam,
            mr_td: td.mr_td,
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            mr_owner_config: td.mr_owner_config,
            rtmr: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
            report_data: td.report_data,
            tee_tcb_svn2: quote.report.as_td15().map(|td15| td15.tee_tcb_svn2),
            mr_service_td: quote.report.as_td15().map_or([0; 48], |td15| td15.mr_service_td),
        };
        let signed = bytes
            .get(..quote.signed_length())
            .ok_or_else(|| QuoteError::Malformed("shorter than its signed region".into()))?
            .to_vec();
        let auth = quote.auth_data.into_v3();
        if auth.certification_data.cert_type != PCK_CERT_CHAIN {
            return Err(QuoteError::CertificationDataType(auth.certification_data.cert_type));
        }
        Ok(TdxQuote {
            version: header.version,
            report,
            signed,
            attestation_key: auth.ecdsa_attestation_key,
            signature: auth.ecdsa_signature,
            qe_report: auth.qe_report,
            qe_report_signature: auth.qe_report_signature,
            qe_auth_data: auth.qe_auth_data.data,
            pck_chain_pem: auth.certification_data.body.data,
        })
    }

    /// The PCK chain the quote carries, DER, leaf first.
    pub fn pck_chain(&self) -> Result<Vec<Vec<u8>>, QuoteError> {
        let text = std::str::from_utf8(&self.pck_chain_pem).map_err(|_| QuoteError::Malformed("PCK chain is not PEM text".into()))?;
        crate::snp::chain::pem_certificates(text.trim_end_matches('\0')).map_err(|e| QuoteError::Malformed(e.to_string()))
    }

    /// Verifies, in order: the PCK chain to the pinned Intel root (`root`
    /// replaces the quote's own copy of the root when given) with every
    /// certificate valid at `at`; the QE report signature; the QE report's
    /// binding of the attestation key; the quote signature.
    pub fn verify_signatures(&self, root: Option<&[u8]>, at: OffsetDateTime) -> Result<SignaturesVerified, QuoteError> {
        let mut chain = self.pck_chain()?;
        if let (Some(root), Some(last)) = (root, chain.last_mut()) {
            *last = root.to_vec();
        }
        let certs = verify_chain(&chain, PCK_CHAIN_LEN, "Intel SGX", &[INTEL_SGX_ROOT_CA_SPKI_SHA384], at)?;
        let Some(EcKey::P256(pck_key)) = certs[0].ec_key() else {
            return Err(QuoteError::PckKey);
        };
        let qe_sig = Signature::from_slice(&self.qe_report_signature).map_err(|_| QuoteError::BadQeReportSignature)?;
        pck_key.verify(&self.qe_report, &qe_sig).map_err(|_| QuoteError::BadQeReportSignature)?;

        // QE REPORTDATA (offset 320 of the SGX report) = SHA-256(key ‖ auth data) ‖ 32 zero bytes.
        let mut hasher = Sha256::new();
        hasher.update(self.attestation_key);
        hasher.update(&self.qe_auth_data);
        let mut expected = [0u8; 64];
        expected[..32].copy_from_slice(&hasher.finalize());
        if self.qe_report[320..384] != expected {
            return Err(QuoteError::QeReportDataMismatch);
        }

        let mut sec1 = [4u8; 65];
        sec1[1..].copy_from_slice(&self.attestation_key);
        let key = VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| QuoteError::AttestationKey)?;
        let sig = Signature::from_slice(&self.signature).map_err(|_| QuoteError::BadQuoteSignature)?;
        key.verify(&self.signed, &sig).map_err(|_| QuoteError::BadQuoteSignature)?;
        let root = chain.pop().expect("verified chain has a root");
        Ok(SignaturesVerified { root, pck: chain.swap_remove(0) })
    }
}

/// The MRCONFIGID a TD launched for a job carries: the 32-byte manifest hash
/// followed by 16 zero bytes (MRCONFIGID is 48 bytes; the zero tail is
/// checked too, so no other value can ride along with the manifest).
pub fn mr_config_id_for(manifest_hash: &[u8; 32]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out[..32].copy_from_slice(manifest_hash);
    out
}

#[cfg(test)]
mod tests {
    use super::TdReport;

    fn td(attributes: u64) -> TdReport {
        TdReport {
            tee_tcb_svn: [0; 16],
            mr_seam: [0; 48],
            mr_signer_seam: [0; 48],
            seam_attributes: [0; 8],
            td_attributes: attributes.to_le_bytes(),
            xfam: [0; 8],
            mr_td: [0; 48],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmr: [[0; 48]; 4],
            report_data: [0; 64],
            tee_tcb_svn2: None,
            mr_service_td: [0; 48],
        }
    }

    const SEPT_VE_DISABLE: u64 = 1 << 28;

    #[test]
    fn each_untrustworthy_attribute_is_refused_by_name() {
        assert_eq!(td(SEPT_VE_DISABLE).refused_attribute(false), None);
        assert!(td(0).refused_attribute(false).unwrap().contains("SEPT_VE_DISABLE"));
        assert!(td(SEPT_VE_DISABLE | 1 << 29).refused_attribute(false).unwrap().contains("MIGRATABLE"));
        assert!(td(SEPT_VE_DISABLE | 1 << 17).refused_attribute(false).unwrap().contains("service TDs"));
        assert!(td(SEPT_VE_DISABLE | 1 << 2).refused_attribute(false).unwrap().contains("reserved"));
        assert!(td(SEPT_VE_DISABLE | 1 << 40).refused_attribute(false).unwrap().contains("reserved"));
        // Profiling is a debug feature: refused unless debugging is allowed.
        assert!(td(SEPT_VE_DISABLE | 1 << 4).refused_attribute(false).unwrap().contains("profiling"));
        assert_eq!(td(SEPT_VE_DISABLE | 1 << 4).refused_attribute(true), None);
        let mut bound = td(SEPT_VE_DISABLE);
        bound.mr_service_td[0] = 1;
        assert!(bound.refused_attribute(false).unwrap().contains("service TDs"));
    }
}
