//! File output that never leaves a half-written file behind: write to a
//! temporary file in the destination directory, fsync, then rename.

use crate::failure::Failure;
use sealtune_attestation::manifest::{SignedJob, SignedManifest};
use std::io::Write;
use std::path::Path;

/// Who may read a file written here.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// Public material (evidence, manifests, grants): mode 0644.
    Public,
    /// Keys: mode 0600.
    Private,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Public => 0o644,
            Access::Private => 0o600,
        }
    }
}

/// Atomically writes `bytes` to `path`; an existing file is replaced only
/// when the new one is complete.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], access: Access) -> Result<(), Failure> {
    write_streamed(path, access, |file| {
        file.write_all(bytes).map_err(|e| Failure::input(format!("cannot write {}: {e}", path.display())))
    })
}

/// Streams into a temporary file beside `path` and renames it to `path`
/// only if `fill` succeeds: a failure (bad input line, tampered chunk)
/// leaves no output file.
pub(crate) fn write_streamed<T>(
    path: &Path,
    access: Access,
    fill: impl FnOnce(&mut std::fs::File) -> Result<T, Failure>,
) -> Result<T, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fail = |e: std::io::Error| Failure::input(format!("cannot write {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(access.mode())).map_err(fail)?;
    let value = fill(tmp.as_file_mut())?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(value)
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))
}

/// Reads a whole text file, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String, Failure> {
    String::from_utf8(read(path)?).map_err(|_| Failure::input(format!("{} is not UTF-8 text", path.display())))
}

/// Parses exactly `N` bytes of hex (whitespace around it ignored).
pub(crate) fn parse_hex<const N: usize>(what: &str, text: &str) -> Result<[u8; N], Failure> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b).ok())
        .ok_or_else(|| Failure::input(format!("{what} must be {N} bytes of hex")))
}

/// Reads a vendor-signed job file and checks its signature.
pub(crate) fn read_job(path: &Path) -> Result<SignedJob, Failure> {
    SignedManifest::open(&read(path)?).map_err(|e| Failure::input(format!("{}: {e}", path.display())))
}
