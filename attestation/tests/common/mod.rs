//! Access to the real attestation vectors in `../shared/vectors` (never
//! copied into this repository); `SEALTUNE_VECTORS` overrides the path.

use std::path::PathBuf;

/// The vectors folder, or `None` (with a message) when it is absent.
pub fn vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SEALTUNE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    if dir.join("README.md").is_file() {
        Some(dir)
    } else {
        // CI always has the vectors: a silent skip there would hide a broken path.
        assert!(std::env::var_os("CI").is_none(), "attestation vectors not found at {}", dir.display());
        eprintln!("SKIPPED: attestation vectors not found at {} (set SEALTUNE_VECTORS)", dir.display());
        None
    }
}

/// Reads a file of a vector.
pub fn read(dir: &std::path::Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}
