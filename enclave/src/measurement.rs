//! The launch measurement of this build on the simulated platform.
//!
//! On SEV-SNP hardware the firmware measures the guest image at launch; the
//! simulated platform stands in with the SHA-384 of the running executable,
//! so a rebuilt enclave gets a new measurement and a verifier's allow-list
//! must name the build it trusts, as with real hardware.

use sha2::{Digest, Sha384};

/// SHA-384 of the running executable.
pub fn own_measurement() -> std::io::Result<[u8; 48]> {
    let exe = std::env::current_exe()?;
    let mut file = std::fs::File::open(exe)?;
    let mut hasher = Sha384::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}
