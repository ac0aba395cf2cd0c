//! A vendor-signed job file, and a bare manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::manifest::{JobManifest, SignedManifest};

fuzz_target!(|data: &[u8]| {
    let _ = SignedManifest::open(data);
    let _ = JobManifest::from_cbor(data);
});
