use super::HEADER_VERSION;

/// Why a corpus cannot be sealed or opened. Decryption failures say which
/// chunk but never why the tag failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// The input does not start with the sealed-corpus magic.
    #[error("not a sealed corpus (bad magic)")]
    NotSealed,
    /// The header names a format version this build cannot read.
    #[error("unsupported sealed-corpus version {0} (this build reads version {HEADER_VERSION})")]
    UnsupportedVersion(u32),
    /// The header is not a well-formed header of this version.
    #[error("malformed sealed-corpus header: {0}")]
    MalformedHeader(String),
    /// The DEK is not the one the file was sealed with.
    #[error("wrong key: this file was sealed with another data-encryption key")]
    WrongKey,
    /// The header's authentication code does not verify under the right key.
    #[error("tampered header")]
    TamperedHeader,
    /// A chunk failed to authenticate (modified, reordered, duplicated or from another file).
    #[error("tampered chunk {0}")]
    TamperedChunk(u64),
    /// The file ends before its final chunk.
    #[error("truncated after chunk {0} (the final chunk is missing)")]
    TruncatedAfterChunk(u64),
    /// The corpus is larger than the format's 2^32 chunks.
    #[error("corpus too large for one sealed file")]
    TooLarge,
    /// A line of the corpus is not a valid record.
    #[error("line {line}: {reason}")]
    BadRecord {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A key file is not a sealtune DEK file.
    #[error("not a sealtune DEK file")]
    BadKeyFile,
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
