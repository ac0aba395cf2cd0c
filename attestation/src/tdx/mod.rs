//! Intel TDX: the quote (versions 4 and 5), its signatures up to the pinned
//! Intel SGX Root CA, and its appraisal against DCAP collateral (TCB info,
//! QE identity, CRLs) by the `dcap-qvl` crate.
//!
//! Collateral is an input (Intel's PCS or a PCCS serves it; fetching it is
//! the caller's business): this crate never goes online.

pub mod quote;

use serde::Serialize;
use time::OffsetDateTime;

/// DCAP collateral for one quote, in dcap-qvl's `QuoteCollateralV3` JSON
/// layout (`docs/formats/tdx-collateral.md`).
#[derive(Debug, Clone)]
pub struct TdxCollateral(dcap_qvl::QuoteCollateralV3);

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
}

impl TdxCollateral {
    /// Parses collateral JSON.
    pub fn from_json(text: &str) -> Result<Self, CollateralError> {
        let mut collateral: dcap_qvl::QuoteCollateralV3 =
            serde_json::from_str(text).map_err(|e| CollateralError::Malformed(e.to_string()))?;
        // The PCK chain is the quote's own, already verified by
        // `TdxQuote::verify_signatures`; a replacement here would make
        // dcap-qvl appraise a different certificate than the one checked.
        collateral.pck_certificate_chain = None;
        Ok(TdxCollateral(collateral))
    }
}

/// The TCB appraisal of a quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TcbVerdict {
    /// `UpToDate`, `SWHardeningNeeded`, `ConfigurationNeeded`, `OutOfDate`, ...
    pub status: String,
    /// Intel security advisories (INTEL-SA-xxxxx) that apply to this TCB.
    pub advisory_ids: Vec<String>,
}

/// Runs dcap-qvl's full verification of `raw_quote` with `collateral`
/// against `root` (the pinned Intel root) at `at`.
pub fn appraise(
    raw_quote: &[u8],
    collateral: &TdxCollateral,
    root: &[u8],
    allow_debug: bool,
    at: OffsetDateTime,
) -> Result<TcbVerdict, CollateralError> {
    let now = u64::try_from(at.unix_timestamp()).map_err(|_| CollateralError::Appraisal("time before 1970".into()))?;
    let report = dcap_qvl::verify::QuoteVerifier::<dcap_qvl::configs::RustCryptoConfig>::new_with_config(root.to_vec())
        .allow_debug(allow_debug)
        .verify(raw_quote, &collateral.0, now)
        .map_err(|e| CollateralError::Appraisal(format!("{e:#}")))?;
    Ok(TcbVerdict { status: report.status, advisory_ids: report.advisory_ids })
}
