//! What an enclave puts in its report's REPORT_DATA, and how a verifier
//! recomputes it. Every input has a fixed length and the domain tag differs
//! per purpose, so no two purposes or field splits can produce the same bytes.

use crate::evidence::EnclavePublicKeys;
use sha2::{Digest, Sha512};

/// Domain tag for evidence that vouches for a training receipt.
pub const RECEIPT_TAG: &[u8] = b"sealtune/v1/receipt";

/// Domain tag for evidence that answers a challenge inside attested TLS.
pub const ATTESTED_TLS_TAG: &[u8] = b"sealtune/v1/attested-tls";

/// Domain tag of a recipient's signature that asks for a job's outputs.
pub const FETCH_OUTPUTS_TAG: &[u8] = b"sealtune/v1/fetch-outputs";

/// What a recipient signs to fetch a job's outputs on one TLS session:
/// tag ‖ exporter. The signature is worthless on any other session.
pub fn fetch_outputs_message(exporter: &[u8; TLS_EXPORTER_LEN]) -> Vec<u8> {
    [FETCH_OUTPUTS_TAG, exporter.as_slice()].concat()
}

/// The TLS exporter label (RFC 8446 §7.5; no context) both ends of an
/// attested session derive [`TLS_EXPORTER_LEN`] bytes with.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-sealtune-attested-tls";

/// Length of the exported value bound into REPORT_DATA.
pub const TLS_EXPORTER_LEN: usize = 32;

/// REPORT_DATA for evidence answering a challenge inside a TLS session:
/// SHA-512(tag ‖ exporter ‖ nonce ‖ KEM key ‖ signing key ‖ manifest hash).
/// The exporter is unique to one TLS session, so evidence obtained on one
/// session does not verify on another, even one relayed byte for byte.
pub fn attested_tls_report_data(
    exporter: &[u8; TLS_EXPORTER_LEN],
    nonce: &[u8; 32],
    keys: &EnclavePublicKeys,
    manifest_hash: &[u8; 32],
) -> [u8; 64] {
    Sha512::new()
        .chain_update(ATTESTED_TLS_TAG)
        .chain_update(exporter)
        .chain_update(nonce)
        .chain_update(keys.kem)
        .chain_update(keys.signing)
        .chain_update(manifest_hash)
        .finalize()
        .into()
}

/// REPORT_DATA for receipt evidence: SHA-512(tag ‖ receipt digest ‖ signing
/// key ‖ KEM key). The KEM key is bound too so that no byte of the evidence
/// document is unauthenticated.
pub fn receipt_report_data(receipt_digest: &[u8; 32], keys: &EnclavePublicKeys) -> [u8; 64] {
    Sha512::new()
        .chain_update(RECEIPT_TAG)
        .chain_update(receipt_digest)
        .chain_update(keys.signing)
        .chain_update(keys.kem)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_attested_tls_binding() {
        let keys = EnclavePublicKeys { kem: [1; 32], signing: [2; 32] };
        let data = attested_tls_report_data(&[5; 32], &[3; 32], &keys, &[4; 32]);
        // (printf 'sealtune/v1/attested-tls'; for b in 5 3 1 2 4; do head -c32 /dev/zero | tr '\0' "\\$b"; done) | sha512sum
        assert_eq!(
            hex::encode(data),
            "8aa2947a11ec3cab971396a61b6a89da22c937c1f0295e51bf76682f1dfa7f3667e9b85cd9b4ef2ad4f7323b733278c13b3ce79466fac0dce20ee929090a1d5e"
        );
        // The same keys bound into a receipt give other bytes.
        assert_ne!(data, receipt_report_data(&[5; 32], &keys));
    }
}
