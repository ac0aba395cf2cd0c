//! An NVIDIA GPU SPDM measurement report.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sealtune_attestation::nvidia::GpuReport;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = GpuReport::parse(data) {
        let _ = (report.driver_version(), report.vbios_version());
    }
});
