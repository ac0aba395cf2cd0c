//! An AMD SEV-SNP attestation report.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::snp::report::SnpReport;

fuzz_target!(|data: &[u8]| {
    let _ = SnpReport::parse(data);
});
