//! A sealed corpus as the enclave (and an owner checking a file) reads it:
//! header, then the AES-256-GCM chunk stream under a fixed key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::sealed::{self, DataKey, Header};

fuzz_target!(|data: &[u8]| {
    let _ = Header::read_from(&mut &data[..]);
    let _ = sealed::open(data, std::io::sink(), &DataKey::from_bytes([7; 32]));
});
