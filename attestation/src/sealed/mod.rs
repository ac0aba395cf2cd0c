//! The sealed-corpus format, version 1 (`docs/formats/sealed-corpus.md`).
//!
//! A data owner seals a JSONL corpus on their own machine under a 256-bit
//! data-encryption key (DEK); the sealed file is safe to hand to the
//! untrusted host. Its SHA-256 is the dataset's public commitment.
//!
//! The body is AES-256-GCM in the STREAM construction (as age does): 64 KiB
//! plaintext chunks, each nonce a per-file random prefix, a 32-bit chunk
//! counter and a last-chunk flag, so truncation, reordering, duplication and
//! splicing between files are detected. Plaintext of a chunk is released only
//! after its tag verifies, and the end of the stream only after the chunk
//! flagged last.

mod error;
mod header;
pub mod key;
pub mod record;
mod stream;

pub use error::SealedError;
pub use header::{Header, HEADER_VERSION, MAGIC};
pub use key::DataKey;
pub use stream::{open, seal, seal_with_randomness, Opener, SealOptions, CHUNK_SIZE};
