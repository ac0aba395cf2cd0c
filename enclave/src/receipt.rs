//! Issuing the receipt of a finished job: sign it with the enclave's key and
//! attach fresh evidence whose REPORT_DATA binds the receipt and that key.

use crate::keys::EnclaveKeys;
use crate::tee::{Tee, TeeError};
use sealtune_attestation::binding::receipt_report_data;
use sealtune_attestation::cbor;
use sealtune_attestation::evidence::{Evidence, EVIDENCE_VERSION};
use sealtune_attestation::receipt::{receipt_digest, Receipt, SignedReceipt, RECEIPT_VERSION};

/// The signed receipt with its evidence, encoded.
pub fn issue_receipt(receipt: &Receipt, keys: &EnclaveKeys, tee: &dyn Tee) -> Result<Vec<u8>, TeeError> {
    let receipt_bytes = receipt.to_cbor();
    let public = keys.public();
    let raw = tee.attest(&receipt_report_data(&receipt_digest(&receipt_bytes), &public))?;
    let evidence = Evidence {
        version: EVIDENCE_VERSION,
        tee: raw.tee,
        report: raw.report,
        certs: raw.certs.into_iter().map(Into::into).collect(),
        keys: public,
    };
    let signature = keys.sign(&receipt_bytes);
    Ok(cbor::to_vec(&SignedReceipt { version: RECEIPT_VERSION, receipt: receipt_bytes, signature, evidence: evidence.to_cbor() }))
}
