//! Appraisal of partial collateral: Intel-signed TCB info, and the signed
//! QE identity when there is one, but no CRLs.
//!
//! Archived evidence often outlives its CRLs (they expire within a month,
//! and old ones are not published), and dcap-qvl refuses to appraise
//! without them. This path does the same matching with dcap-qvl's own
//! types (TCB levels and their shortfalls, TDX module identities, the PCK
//! extension), leaving out only the revocation checks and, when the QE
//! identity is absent, the Quoting Enclave's identity and SVN. The verdict
//! names what was left out; only a policy that says
//! `tdx.allow_partial_collateral` accepts it.

use super::quote::{SignaturesVerified, TdxQuote, INTEL_SGX_ROOT_CA_SPKI_SHA384};
use super::{CollateralError, TcbVerdict};
use crate::x509::{verify_chain, EcKey};
use dcap_qvl::{QeIdentity, TcbInfo, TcbLevel, TcbStatus};
use p256::ecdsa::{signature::Verifier as _, Signature};
use serde::de::DeserializeOwned;
use std::cmp::Ordering;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The TCB Signing certificate and the Intel SGX Root CA.
const SIGNER_CHAIN_LEN: usize = 2;

/// A PCS response body with its signature and the signer's chain.
#[derive(Debug, Clone)]
pub(super) struct SignedBody {
    /// The exact bytes the signature covers.
    pub(super) body: String,
    /// Raw r ‖ s.
    pub(super) signature: Vec<u8>,
    /// PEM: TCB Signing certificate, then the root.
    pub(super) issuer_chain: String,
}

/// Collateral without CRLs.
#[derive(Debug, Clone)]
pub struct PartialCollateral {
    pub(super) tcb_info: SignedBody,
    pub(super) qe_identity: Option<SignedBody>,
}

/// A matched TCB level, reduced to what the verdict reports.
struct Level {
    status: TcbStatus,
    advisory_ids: Vec<String>,
}

impl Level {
    /// Intel QVL's convergence: only an OutOfDate or Revoked component
    /// (TDX module, QE) lowers the platform's status.
    fn converge(mut self, component: &Level) -> Level {
        use TcbStatus::*;
        self.status = match (component.status, self.status) {
            (Revoked, _) => Revoked,
            (OutOfDate, UpToDate | SWHardeningNeeded) => OutOfDate,
            (OutOfDate, ConfigurationNeeded | ConfigurationAndSWHardeningNeeded) => OutOfDateConfigurationNeeded,
            (_, platform) => platform,
        };
        for id in &component.advisory_ids {
            if !self.advisory_ids.contains(id) {
                self.advisory_ids.push(id.clone());
            }
        }
        self
    }
}

/// Intel QVL's `checkForRelaunch`: a TD launched on an out-of-date TCB
/// whose current TCB (after a TD-preserving update) is not out of date
/// should be relaunched.
fn relaunch_status(launch: TcbStatus, current: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    let configuration = |s| {
        matches!(s, ConfigurationNeeded | OutOfDateConfigurationNeeded | ConfigurationAndSWHardeningNeeded)
    };
    match (launch, current) {
        (OutOfDate | OutOfDateConfigurationNeeded, UpToDate | SWHardeningNeeded | ConfigurationNeeded | ConfigurationAndSWHardeningNeeded) => {
            if configuration(launch) || configuration(current) {
                TDRelaunchAdvisedConfigurationNeeded
            } else {
                TDRelaunchAdvised
            }
        }
        _ => launch,
    }
}

/// Verifies the signer chain to the pinned root and the signature over the
/// body, then parses it.
fn open<T: DeserializeOwned>(item: &'static str, signed: &SignedBody, root: &[u8], at: OffsetDateTime) -> Result<T, CollateralError> {
    let mut chain = crate::snp::chain::pem_certificates(&signed.issuer_chain)
        .map_err(|e| CollateralError::Malformed(format!("{item} issuer chain: {e}")))?;
    // The pinned root the PCK chain ended in stands for the chain's own copy.
    if let Some(last) = chain.last_mut() {
        *last = root.to_vec();
    }
    let certs = verify_chain(&chain, SIGNER_CHAIN_LEN, "Intel SGX", &[INTEL_SGX_ROOT_CA_SPKI_SHA384], at)
        .map_err(|source| CollateralError::SignerChain { item, source })?;
    let Some(EcKey::P256(key)) = certs[0].ec_key() else {
        return Err(CollateralError::SignerChain { item, source: crate::x509::EcChainError::UnsupportedAlgorithm { index: 0, subject: certs[0].subject_cn() } });
    };
    let signature = Signature::from_slice(&signed.signature).map_err(|_| CollateralError::BadSignature { item })?;
    key.verify(signed.body.as_bytes(), &signature).map_err(|_| CollateralError::BadSignature { item })?;
    serde_json::from_str(&signed.body).map_err(|e| CollateralError::Malformed(format!("{item}: {e}")))
}

fn check_current(item: &'static str, issue_date: &str, next_update: &str, at: OffsetDateTime) -> Result<(), CollateralError> {
    let parse = |text: &str| {
        OffsetDateTime::parse(text, &Rfc3339).map_err(|e| CollateralError::Malformed(format!("{item} date {text}: {e}")))
    };
    if at < parse(issue_date)? || at > parse(next_update)? {
        return Err(CollateralError::NotCurrent {
            item,
            issue_date: issue_date.to_string(),
            next_update: next_update.to_string(),
            at: at.format(&Rfc3339).unwrap_or_default(),
        });
    }
    Ok(())
}

fn hex_array<const N: usize>(text: &str, field: &str) -> Result<[u8; N], CollateralError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or_else(|| CollateralError::Malformed(format!("TCB info {field}: not {N} bytes of hex")))
}

/// Appraises `quote` (whose signatures `verified` proves) with TCB info and,
/// when present, QE identity, at `at`. The verdict's `unchecked` names the
/// checks this collateral could not support.
pub(super) fn appraise(
    quote: &TdxQuote,
    collateral: &PartialCollateral,
    verified: &SignaturesVerified,
    at: OffsetDateTime,
) -> Result<TcbVerdict, CollateralError> {
    let mut tcb_info: TcbInfo = open("TCB info", &collateral.tcb_info, &verified.root, at)?;
    check_current("TCB info", &tcb_info.issue_date, &tcb_info.next_update, at)?;
    if tcb_info.id != "TDX" || tcb_info.version < 3 {
        return Err(CollateralError::WrongKind { item: "TCB info", actual: format!("{} v{}", tcb_info.id, tcb_info.version), expected: "TDX v3" });
    }
    let pck = dcap_qvl::intel::parse_pck_extension(&verified.pck).map_err(|e| CollateralError::PckExtension(format!("{e:#}")))?;
    if hex_array::<6>(&tcb_info.fmspc, "fmspc")? != pck.fmspc {
        return Err(CollateralError::FmspcMismatch { collateral: tcb_info.fmspc.to_uppercase(), quote: hex::encode_upper(pck.fmspc) });
    }
    if !hex::decode(&tcb_info.pce_id).is_ok_and(|id| id == pck.pce_id) {
        return Err(CollateralError::PceIdMismatch { collateral: tcb_info.pce_id.clone(), quote: hex::encode_upper(&pck.pce_id) });
    }
    // Intel QVL matches levels in its own order, not the JSON's.
    tcb_info.tcb_levels.sort_by(|a, b| intel_order(b, a));

    let td = &quote.report;
    check_tdx_module(&tcb_info, td)?;
    let platform = |tee_tcb_svn: &[u8; 16]| -> Result<Level, CollateralError> {
        let mut level = None;
        for candidate in &tcb_info.tcb_levels {
            let shortfalls = candidate
                .shortfalls(&pck.cpu_svn, pck.pce_svn, Some(tee_tcb_svn))
                .map_err(|e| CollateralError::Malformed(format!("TCB info: {e:#}")))?;
            if shortfalls.is_empty() {
                level = Some(candidate);
                break;
            }
        }
        let level = level.ok_or(CollateralError::NoMatchingTcbLevel)?;
        let platform = Level { status: level.tcb_status, advisory_ids: level.advisory_ids.clone() };
        Ok(match module_level(&tcb_info, tee_tcb_svn)? {
            Some(module) => platform.converge(&module),
            None => platform,
        })
    };
    let launch = platform(&td.tee_tcb_svn)?;
    let current = td.tee_tcb_svn2.as_ref().map(platform).transpose()?;

    let mut unchecked = vec!["revocation"];
    let qe = match &collateral.qe_identity {
        Some(signed) => Some(qe_level(quote, signed, &verified.root, at)?),
        None => {
            unchecked.push("qe_identity");
            None
        }
    };
    let with_qe = |level: Level| match &qe {
        Some(qe) => level.converge(qe),
        None => level,
    };
    let mut verdict = with_qe(launch);
    let current = current.map(with_qe).map(|level| level.status);
    if verdict.status == TcbStatus::Revoked || current == Some(TcbStatus::Revoked) {
        return Err(CollateralError::Revoked);
    }
    if let Some(current) = current {
        verdict.status = relaunch_status(verdict.status, current);
    }
    Ok(TcbVerdict { status: verdict.status.to_string(), advisory_ids: verdict.advisory_ids, unchecked })
}

/// Intel QVL's level order: SGX components, then PCE SVN, then TDX components.
fn intel_order(a: &TcbLevel, b: &TcbLevel) -> Ordering {
    a.tcb.sgx_components
        .cmp(&b.tcb.sgx_components)
        .then(a.tcb.pce_svn.cmp(&b.tcb.pce_svn))
        .then_with(|| a.tcb.tdx_components.cmp(&b.tcb.tdx_components))
}

/// The TDX module must be signed by the signer the TCB info names for its
/// version, with the attributes it names.
fn check_tdx_module(tcb_info: &TcbInfo, td: &super::quote::TdReport) -> Result<(), CollateralError> {
    let base = tcb_info.tdx_module.as_ref().ok_or_else(|| CollateralError::Malformed("TDX TCB info without tdxModule".into()))?;
    let identity = tcb_info.tdx_module_identity(&td.tee_tcb_svn).map_err(|e| CollateralError::TdxModule(format!("{e:#}")))?;
    let (signer, attributes, mask) = match identity {
        Some(id) => (&id.mrsigner, &id.attributes, &id.attributes_mask),
        None => (&base.mrsigner, &base.attributes, &base.attributes_mask),
    };
    if hex_array::<48>(signer, "mrsigner")? != td.mr_signer_seam {
        return Err(CollateralError::TdxModule(format!("MRSIGNERSEAM {} is not {signer}", hex::encode(td.mr_signer_seam))));
    }
    let (attributes, mask) = (hex_array::<8>(attributes, "attributes")?, hex_array::<8>(mask, "attributesMask")?);
    for ((have, want), mask) in td.seam_attributes.iter().zip(attributes).zip(mask) {
        if have & mask != want & mask || have & !mask != 0 {
            return Err(CollateralError::TdxModule(format!("SEAMATTRIBUTES {} do not match", hex::encode(td.seam_attributes))));
        }
    }
    Ok(())
}

/// The TDX module TCB level met by the module's ISVSVN, when the module
/// version is not 0 (version 0 is judged by the platform level alone).
fn module_level(tcb_info: &TcbInfo, tee_tcb_svn: &[u8; 16]) -> Result<Option<Level>, CollateralError> {
    let Some(identity) = tcb_info.tdx_module_identity(tee_tcb_svn).map_err(|e| CollateralError::TdxModule(format!("{e:#}")))? else {
        return Ok(None);
    };
    let level = identity
        .tcb_levels
        .iter()
        .find(|level| level.shortfall(tee_tcb_svn).is_none())
        .ok_or_else(|| CollateralError::TdxModule(format!("ISVSVN {} is below every level of {}", tee_tcb_svn[0], identity.id)))?;
    if !matches!(level.tcb_status, TcbStatus::UpToDate | TcbStatus::OutOfDate | TcbStatus::Revoked) {
        return Err(CollateralError::Malformed(format!("TDX module level status {}", level.tcb_status)));
    }
    Ok(Some(Level { status: level.tcb_status, advisory_ids: level.advisory_ids.clone() }))
}

/// Checks the Quoting Enclave's report against the QE identity and returns
/// the level its ISVSVN meets. Offsets are the SGX REPORTBODY's.
fn qe_level(quote: &TdxQuote, signed: &SignedBody, root: &[u8], at: OffsetDateTime) -> Result<Level, CollateralError> {
    let identity: QeIdentity = open("QE identity", signed, root, at)?;
    check_current("QE identity", &identity.issue_date, &identity.next_update, at)?;
    if identity.id != "TD_QE" || !matches!(identity.version, 2 | 3) {
        return Err(CollateralError::WrongKind { item: "QE identity", actual: format!("{} v{}", identity.id, identity.version), expected: "TD_QE v2 or v3" });
    }
    let report = &quote.qe_report;
    let u16_at = |offset: usize| u16::from_le_bytes([report[offset], report[offset + 1]]);
    let miscselect: [u8; 4] = report[16..20].try_into().expect("4 bytes");
    let mismatch = |field: &str| Err(CollateralError::QeIdentity(format!("the QE report's {field} does not match the QE identity")));
    if report[128..160] != identity.mrsigner {
        return mismatch("MRSIGNER");
    }
    if u16_at(256) != identity.isvprodid {
        return mismatch("ISVPRODID");
    }
    if (0..4).any(|i| miscselect[i] & identity.miscselect_mask[i] != identity.miscselect[i] & identity.miscselect_mask[i]) {
        return mismatch("MISCSELECT");
    }
    if (0..16).any(|i| report[48 + i] & identity.attributes_mask[i] != identity.attributes[i] & identity.attributes_mask[i]) {
        return mismatch("ATTRIBUTES");
    }
    let isvsvn = u16_at(258);
    let level = identity
        .tcb_levels
        .iter()
        .find(|level| isvsvn >= level.tcb.isvsvn)
        .ok_or_else(|| CollateralError::QeIdentity(format!("ISVSVN {isvsvn} is below every QE identity level")))?;
    Ok(Level { status: level.tcb_status, advisory_ids: level.advisory_ids.clone() })
}
