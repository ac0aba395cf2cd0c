//! Intel TDX: the quote (versions 4 and 5), its signatures up to the pinned
//! Intel SGX Root CA, and its appraisal against DCAP collateral (TCB info,
//! QE identity, CRLs) by the `dcap-qvl` crate, or against partial
//! collateral (no CRLs) by [`partial`].
//!
//! Collateral is an input (Intel's PCS or a PCCS serves it; fetching it is
//! the caller's business): this crate never goes online.

pub mod partial;
pub mod quote;

use partial::{PartialCollateral, SignedBody};
use quote::{SignaturesVerified, TdxQuote};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// DCAP collateral for one quote, in dcap-qvl's `QuoteCollateralV3` JSON
/// layout (`docs/formats/tdx-collateral.md`).
#[derive(Debug, Clone)]
pub enum TdxCollateral {
    /// Everything DCAP needs, CRLs included: dcap-qvl appraises.
    Full(Box<dcap_qvl::QuoteCollateralV3>),
    /// TCB info (and optionally QE identity) without CRLs; accepted only
    /// under a policy that allows partial collateral.
    Partial(PartialCollateral),
}

/// The keys that carry revocation data: all present, or none.
const CRL_KEYS: [&str; 3] = ["pck_crl_issuer_chain", "root_ca_crl", "pck_crl"];
/// The keys of the QE identity: all present, or none.
const QE_IDENTITY_KEYS: [&str; 3] = ["qe_identity_issuer_chain", "qe_identity", "qe_identity_signature"];

/// Why collateral cannot be read, or does not support the quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollateralError {
    /// Not collateral JSON.
    #[error("not DCAP collateral (QuoteCollateralV3 JSON): {0}")]
    Malformed(String),
    /// dcap-qvl refused the quote with this collateral: a TCB info, QE
    /// identity or CRL signature or chain failed, the collateral or a CRL
    /// is outside its validity window, the PCK is revoked, the QE identity or
    /// TDX module identity does not match, FMSPC differs, no TCB level
    /// matches, the TCB is Revoked, or a TD attribute is refused.
    #[error("DCAP appraisal failed: {0}")]
    Appraisal(String),
    /// The certificate that signed the TCB info or QE identity does not chain to the pinned Intel root.
    #[error("{item} signer: {source}")]
    SignerChain {
        /// "TCB info" or "QE identity".
        item: &'static str,
        /// Why the chain failed.
        source: crate::x509::EcChainError,
    },
    /// The TCB info or QE identity is not what Intel signed.
    #[error("{item} signature does not verify: the body is not what Intel signed")]
    BadSignature {
        /// "TCB info" or "QE identity".
        item: &'static str,
    },
    /// The TCB info or QE identity is not valid at the verification time.
    #[error("{item} is valid from {issue_date} to {next_update}, not at {at}")]
    NotCurrent {
        /// "TCB info" or "QE identity".
        item: &'static str,
        /// issueDate.
        issue_date: String,
        /// nextUpdate.
        next_update: String,
        /// The verification time.
        at: String,
    },
    /// The TCB info is not TDX's, or the QE identity not the TD QE's.
    #[error("{item} is {actual}, expected {expected}")]
    WrongKind {
        /// "TCB info" or "QE identity".
        item: &'static str,
        /// Its id and version.
        actual: String,
        /// What a TDX quote needs.
        expected: &'static str,
    },
    /// The PCK certificate's SGX extension cannot be read.
    #[error("PCK certificate SGX extension: {0}")]
    PckExtension(String),
    /// The TCB info is for another platform type.
    #[error("the TCB info is for FMSPC {collateral}, the PCK certificate says {quote}")]
    FmspcMismatch {
        /// The TCB info's FMSPC.
        collateral: String,
        /// The PCK certificate's.
        quote: String,
    },
    /// The TCB info is for another PCE.
    #[error("the TCB info is for PCE {collateral}, the PCK certificate says {quote}")]
    PceIdMismatch {
        /// The TCB info's PCE id.
        collateral: String,
        /// The PCK certificate's.
        quote: String,
    },
    /// The platform's SVNs are below every TCB level.
    #[error("no TCB level of the TCB info matches the platform's SVNs")]
    NoMatchingTcbLevel,
    /// The TDX module is not the one the TCB info describes, or is below all its levels.
    #[error("TDX module: {0}")]
    TdxModule(String),
    /// The Quoting Enclave is not the one the QE identity describes, or is below all its levels.
    #[error("Quoting Enclave: {0}")]
    QeIdentity(String),
    /// The TCB is Revoked: the platform's keys are compromised.
    #[error("the platform's TCB status is Revoked")]
    Revoked,
}

impl TdxCollateral {
    /// Parses collateral JSON: full when the CRL keys are there, partial when none is.
    pub fn from_json(text: &str) -> Result<Self, CollateralError> {
        let malformed = |e: serde_json::Error| CollateralError::Malformed(e.to_string());
        let value: Value = serde_json::from_str(text).map_err(malformed)?;
        let present = |keys: &[&str]| keys.iter().filter(|k| value.get(**k).is_some()).count();
        match present(&CRL_KEYS) {
            3 => {
                let mut collateral: dcap_qvl::QuoteCollateralV3 = serde_json::from_value(value).map_err(malformed)?;
                // The PCK chain is the quote's own, already verified by
                // `TdxQuote::verify_signatures`; a replacement here would make
                // dcap-qvl appraise a different certificate than the one checked.
                collateral.pck_certificate_chain = None;
                Ok(TdxCollateral::Full(Box::new(collateral)))
            }
            0 => {
                let signed = |keys: [&str; 3]| -> Result<SignedBody, CollateralError> {
                    let field = |key: &str| {
                        value.get(key).and_then(Value::as_str).ok_or_else(|| CollateralError::Malformed(format!("{key}: missing or not a string")))
                    };
                    let signature = hex::decode(field(keys[2])?).map_err(|_| CollateralError::Malformed(format!("{}: not hex", keys[2])))?;
                    Ok(SignedBody { issuer_chain: field(keys[0])?.to_string(), body: field(keys[1])?.to_string(), signature })
                };
                let tcb_info = signed(["tcb_info_issuer_chain", "tcb_info", "tcb_info_signature"])?;
                let qe_identity = match present(&QE_IDENTITY_KEYS) {
                    0 => None,
                    3 => Some(signed(QE_IDENTITY_KEYS)?),
                    _ => return Err(CollateralError::Malformed(format!("give all of {} or none", QE_IDENTITY_KEYS.join(", ")))),
                };
                Ok(TdxCollateral::Partial(PartialCollateral { tcb_info, qe_identity }))
            }
            _ => Err(CollateralError::Malformed(format!("give all of {} or none", CRL_KEYS.join(", ")))),
        }
    }
}

/// The TCB appraisal of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcbVerdict {
    /// `UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`, `OutOfDate`, ...
    pub status: String,
    /// Intel security advisories (INTEL-SA-xxxxx) that apply to this TCB.
    pub advisory_ids: Vec<String>,
    /// Checks the collateral could not support: `revocation` (no CRLs) and
    /// `qe_identity` (no QE identity). Empty for full collateral.
    pub unchecked: Vec<&'static str>,
}

/// Appraises a quote whose signatures `verified` proves, with `collateral`,
/// at `at`: full collateral through dcap-qvl (which checks the signatures
/// again, with revocation), partial collateral through [`partial`].
pub fn appraise(
    raw_quote: &[u8],
    quote: &TdxQuote,
    verified: &SignaturesVerified,
    collateral: &TdxCollateral,
    allow_debug: bool,
    at: OffsetDateTime,
) -> Result<TcbVerdict, CollateralError> {
    match collateral {
        TdxCollateral::Full(full) => {
            let now = u64::try_from(at.unix_timestamp()).map_err(|_| CollateralError::Appraisal("time before 1970".into()))?;
            let report = dcap_qvl::verify::QuoteVerifier::<dcap_qvl::configs::RustCryptoConfig>::new_with_config(verified.root.clone())
                .allow_debug(allow_debug)
                .verify(raw_quote, full, now)
                .map_err(|e| CollateralError::Appraisal(format!("{e:#}")))?;
            Ok(TcbVerdict { status: report.status, advisory_ids: report.advisory_ids, unchecked: vec![] })
        }
        TdxCollateral::Partial(partial) => partial::appraise(quote, partial, verified, at),
    }
}
