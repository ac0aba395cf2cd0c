//! The owner's data-encryption key and its file format.
//!
//! DEK file, version 1: the ASCII line `sealtune-dek-v1:` followed by 64
//! lowercase hex digits and a newline. Written with mode 0600 by the CLI.

use super::SealedError;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

const FILE_PREFIX: &str = "sealtune-dek-v1:";

/// A 256-bit data-encryption key. No `Debug` or `Clone`; zeroized on drop.
pub struct DataKey([u8; 32]);

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl DataKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
        DataKey(key)
    }

    /// Wraps raw key bytes (for example a key released by a grant).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(bytes)
    }

    /// The raw key, for sealing it into a grant.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key file's contents (zeroized when dropped).
    pub fn to_file(&self) -> Zeroizing<String> {
        let mut hex = Zeroizing::new(hex::encode(self.0));
        let text = Zeroizing::new(format!("{FILE_PREFIX}{}\n", hex.as_str()));
        hex.zeroize();
        text
    }

    /// Parses a key file.
    pub fn from_file(text: &str) -> Result<Self, SealedError> {
        let digits = text.strip_prefix(FILE_PREFIX).ok_or(SealedError::BadKeyFile)?.trim_end_matches('\n');
        let mut key = [0u8; 32];
        hex::decode_to_slice(digits, &mut key).map_err(|_| SealedError::BadKeyFile)?;
        Ok(DataKey(key))
    }

    /// Derives 32 bytes for one purpose of one file (HKDF-SHA256, the file's
    /// salt, a constant label per purpose).
    pub(super) fn derive(&self, salt: &[u8], label: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(salt), &self.0).expand(label, out.as_mut()).expect("32 bytes is a valid HKDF length");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_rejections() {
        let key = DataKey::generate();
        let file = key.to_file();
        assert!(file.starts_with("sealtune-dek-v1:") && file.len() == 16 + 64 + 1);
        assert_eq!(DataKey::from_file(&file).unwrap().expose(), key.expose());
        assert!(DataKey::from_file("sealtune-dek-v2:00").is_err());
        assert!(DataKey::from_file(&file[..file.len() - 3]).is_err());
    }
}
