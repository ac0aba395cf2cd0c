//! A corpus's JSONL records, as sealing validates and the enclave parses them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::sealed::record::{parse_jsonl, validate_jsonl};

fuzz_target!(|data: &[u8]| {
    let _ = validate_jsonl(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_jsonl(text);
    }
});
