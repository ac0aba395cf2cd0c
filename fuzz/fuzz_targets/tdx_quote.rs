//! An Intel TDX quote (v4/v5) and the PCK chain inside it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::tdx::quote::TdxQuote;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = TdxQuote::parse(data) {
        let _ = quote.pck_chain();
    }
});
