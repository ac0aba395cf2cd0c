//! An Azure HCL-wrapped SNP report.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::azure::HclReport;

fuzz_target!(|data: &[u8]| {
    let _ = HclReport::parse(data);
});
