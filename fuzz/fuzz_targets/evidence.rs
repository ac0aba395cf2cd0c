//! An evidence document as a client receives it from the enclave.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::evidence::Evidence;

fuzz_target!(|data: &[u8]| {
    if let Ok(evidence) = Evidence::from_cbor(data) {
        let _ = evidence.snp_chain();
    }
});
