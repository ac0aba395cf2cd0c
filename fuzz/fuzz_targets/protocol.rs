//! One frame of the enclave protocol and of the store protocol, both ways.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::protocol::{Request, Response, StoreRequest, StoreResponse};

fuzz_target!(|data: &[u8]| {
    let _ = Request::from_cbor(data);
    let _ = Response::from_cbor(data);
    let _ = StoreRequest::from_cbor(data);
    let _ = StoreResponse::from_cbor(data);
});
