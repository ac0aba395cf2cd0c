//! Decrypting a sealed corpus, in memory only, with a key released by a
//! grant. This is the only place outside an owner's own machine where corpus
//! plaintext exists.

use crate::key_release::ReleasedKey;
use sealtune_attestation::sealed::record::{parse_jsonl, Record};
use sealtune_attestation::sealed::{DataKey, Opener, SealedError};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Why a corpus cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CorpusError {
    /// The bytes are not the dataset the key was granted for.
    #[error("sealed blob does not match dataset commitment {0}")]
    CommitmentMismatch(String),
    /// The sealed file fails to open or parse.
    #[error(transparent)]
    Sealed(#[from] SealedError),
    /// The plaintext is not UTF-8 (it was validated when sealed, so this is a bug or tampering).
    #[error("decrypted corpus is not UTF-8")]
    NotUtf8,
}

/// A decrypted corpus. No `Debug`, no `Clone`; its records are reachable
/// only through [`Corpus::records`], and the text is zeroized on drop.
pub struct Corpus {
    records: Vec<Record>,
    plaintext_sha256: [u8; 32],
}

impl Drop for Corpus {
    fn drop(&mut self) {
        for record in &mut self.records {
            if let Some(id) = record.user_id.as_mut() {
                id.zeroize();
            }
            match &mut record.content {
                sealtune_attestation::sealed::record::Content::Text(t) => t.zeroize(),
                sealtune_attestation::sealed::record::Content::Messages(ms) => {
                    ms.iter_mut().for_each(|m| m.content.zeroize())
                }
            }
        }
    }
}

impl Corpus {
    /// Checks the sealed bytes against the granted commitment, then decrypts
    /// and parses them in memory.
    pub fn open(sealed: &[u8], key: &ReleasedKey) -> Result<Self, CorpusError> {
        if <[u8; 32]>::from(Sha256::digest(sealed)) != key.dataset {
            return Err(CorpusError::CommitmentMismatch(hex::encode(key.dataset)));
        }
        let dek = DataKey::from_bytes(*key.dek);
        let mut opener = Opener::new(sealed, &dek)?;
        let mut plaintext = Zeroizing::new(Vec::with_capacity(sealed.len()));
        while let Some(chunk) = opener.next_chunk()? {
            plaintext.extend_from_slice(&chunk);
        }
        let plaintext_sha256 = Sha256::digest(plaintext.as_slice()).into();
        let text = std::str::from_utf8(&plaintext).map_err(|_| CorpusError::NotUtf8)?;
        Ok(Corpus { records: parse_jsonl(text)?, plaintext_sha256 })
    }

    /// The records (private data: never log or return them).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// SHA-256 of the decrypted bytes, for the owner-side end-to-end check in
    /// simulated development runs; it reveals nothing an owner does not have.
    pub fn plaintext_sha256(&self) -> [u8; 32] {
        self.plaintext_sha256
    }
}
