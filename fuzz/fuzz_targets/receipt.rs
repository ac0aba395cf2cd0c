//! A signed receipt as a vendor's `sealtune verify` decodes it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::cbor;
use sealtune_attestation::receipt::{Receipt, SignedReceipt};

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = cbor::from_slice::<SignedReceipt>(data) {
        let _ = cbor::from_slice::<Receipt>(&signed.receipt);
    }
});
