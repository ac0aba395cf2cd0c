use super::header::{Header, CONTENT_KEY_LABEL};
use super::key::DataKey;
use super::SealedError;
use aes_gcm::aead::{AeadInPlace, KeyInit, Nonce};
use aes_gcm::{Aes256Gcm, Tag};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk in files this build writes.
pub const CHUNK_SIZE: u32 = 64 * 1024;
const TAG_LEN: usize = 16;
const LAST_CHUNK: u8 = 1;

/// The public fields of a file to seal.
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// The owner's name for the dataset.
    pub dataset_id: String,
    /// What the plaintext is, e.g. `jsonl`.
    pub content_type: String,
    /// Plaintext bytes per chunk; [`CHUNK_SIZE`] unless a test needs small chunks.
    pub chunk_size: u32,
    /// Unix seconds.
    pub created: i64,
}

fn nonce(prefix: &[u8; 7], counter: u64, last: bool) -> Result<Nonce<Aes256Gcm>, SealedError> {
    let counter = u32::try_from(counter).map_err(|_| SealedError::TooLarge)?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = if last { LAST_CHUNK } else { 0 };
    Ok(n.into())
}

fn content_cipher(key: &DataKey, header: &Header, header_bytes: &[u8]) -> Aes256Gcm {
    // The content key depends on the whole header, so one DEK can seal many
    // files and a chunk cannot be moved between them.
    let mut label = CONTENT_KEY_LABEL.to_vec();
    label.extend_from_slice(&Sha256::digest(header_bytes));
    let content_key = key.derive(&header.salt, &label);
    Aes256Gcm::new_from_slice(content_key.as_ref()).expect("32-byte key")
}

/// Fills `buf` from `reader` until it is full or the input ends; returns the length read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A writer that hashes what passes through: the commitment is the SHA-256
/// of the complete sealed file, computed while it is written.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Hashing<W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// Seals `plaintext` into `out` under `key`; returns the commitment.
/// Memory stays at two chunks whatever the input size.
pub fn seal(mut plaintext: impl Read, out: impl Write, key: &DataKey, options: &SealOptions) -> Result<[u8; 32], SealedError> {
    let mut nonce_prefix = [0u8; 7];
    let mut salt = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce_prefix);
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
    seal_with_randomness(&mut plaintext, out, key, options, nonce_prefix, salt)
}

/// Sealing with caller-chosen nonce prefix and salt: ONLY for reproducible
/// test vectors. Reusing them for other data under the same DEK reuses
/// AES-GCM nonces; [`seal`] draws fresh ones from the OS.
pub fn seal_with_randomness(
    plaintext: &mut impl Read,
    out: impl Write,
    key: &DataKey,
    options: &SealOptions,
    nonce_prefix: [u8; 7],
    salt: [u8; 32],
) -> Result<[u8; 32], SealedError> {
    let header = Header::new(key, options.dataset_id.clone(), options.content_type.clone(), options.chunk_size, options.created, nonce_prefix, salt);
    let (prefix, header_bytes) = header.encode(key);
    let cipher = content_cipher(key, &header, &header_bytes);
    let aad: [u8; 32] = Sha256::digest(&header_bytes).into();
    let mut out = Hashing { inner: out, hash: Sha256::new() };
    out.write_all(&prefix)?;
    let chunk = header.chunk_size as usize;
    let mut current = Zeroizing::new(vec![0u8; chunk + TAG_LEN]);
    let mut next = Zeroizing::new(vec![0u8; chunk + TAG_LEN]);
    let mut len = read_full(plaintext, &mut current[..chunk])?;
    let mut counter = 0u64;
    loop {
        // A chunk is the last one when the input ends within it or right after it.
        let next_len = if len == chunk { read_full(plaintext, &mut next[..chunk])? } else { 0 };
        let last = next_len == 0;
        let tag = cipher
            .encrypt_in_place_detached(&nonce(&header.nonce_prefix, counter, last)?, &aad, &mut current[..len])
            .map_err(|_| SealedError::TooLarge)?;
        out.write_all(&current[..len])?;
        out.write_all(&tag)?;
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        len = next_len;
        counter += 1;
    }
    out.inner.flush()?;
    Ok(out.hash.finalize().into())
}

/// Reads a sealed corpus chunk by chunk, releasing each chunk's plaintext
/// only after its tag verifies.
pub struct Opener<R> {
    reader: R,
    header: Header,
    cipher: Aes256Gcm,
    aad: [u8; 32],
    counter: u64,
    finished: bool,
    /// One chunk plus one byte of look-ahead, to tell the final chunk.
    buf: Zeroizing<Vec<u8>>,
    buffered: usize,
}

impl<R: Read> Opener<R> {
    /// Reads and authenticates the header; fails with `WrongKey` before
    /// anything else if `key` did not seal this file.
    pub fn new(mut reader: R, key: &DataKey) -> Result<Self, SealedError> {
        let (header, header_bytes, mac) = Header::read_from(&mut reader)?;
        header.authenticate(key, &header_bytes, &mac)?;
        let cipher = content_cipher(key, &header, &header_bytes);
        let aad = Sha256::digest(&header_bytes).into();
        let buf = Zeroizing::new(vec![0u8; header.chunk_size as usize + TAG_LEN + 1]);
        Ok(Opener { reader, header, cipher, aad, counter: 0, finished: false, buf, buffered: 0 })
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next chunk of plaintext, or `None` after the final chunk.
    pub fn next_chunk(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, SealedError> {
        if self.finished {
            return Ok(None);
        }
        let full = self.header.chunk_size as usize + TAG_LEN;
        self.buffered += read_full(&mut self.reader, &mut self.buf[self.buffered..])?;
        let at_end = self.buffered <= full;
        let len = self.buffered.min(full);
        if len < TAG_LEN {
            return Err(if self.counter == 0 {
                SealedError::TruncatedAfterChunk(0)
            } else {
                SealedError::TruncatedAfterChunk(self.counter - 1)
            });
        }
        let mut chunk = Zeroizing::new(self.buf[..len - TAG_LEN].to_vec());
        let tag = Tag::clone_from_slice(&self.buf[len - TAG_LEN..len]);
        let index = self.counter;
        let open = |chunk: &mut Zeroizing<Vec<u8>>, last: bool| -> Result<bool, SealedError> {
            let nonce = nonce(&self.header.nonce_prefix, index, last)?;
            let mut trial = chunk.clone();
            let ok = self.cipher.decrypt_in_place_detached(&nonce, &self.aad, &mut trial, &tag).is_ok();
            if ok {
                *chunk = trial;
            }
            Ok(ok)
        };
        if at_end {
            if open(&mut chunk, true)? {
                self.finished = true;
            } else if len == full && open(&mut chunk, false)? {
                // A valid middle chunk where the file ends: the rest was cut off.
                return Err(SealedError::TruncatedAfterChunk(index));
            } else {
                return Err(SealedError::TamperedChunk(index));
            }
        } else if !open(&mut chunk, false)? {
            // A chunk that authenticates as final but is followed by more data
            // is also tampering: nothing may follow the final chunk.
            return Err(SealedError::TamperedChunk(index));
        }
        // Keep the look-ahead byte for the next chunk.
        self.buf.copy_within(len..self.buffered, 0);
        self.buffered -= len;
        self.counter += 1;
        Ok(Some(chunk))
    }
}

/// Opens a whole sealed corpus into `out`. Callers that write to disk must
/// write to a temporary file and keep it only if this returns `Ok`: chunks
/// before a failure have been written.
pub fn open(sealed: impl Read, mut out: impl Write, key: &DataKey) -> Result<Header, SealedError> {
    let mut opener = Opener::new(sealed, key)?;
    while let Some(chunk) = opener.next_chunk()? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(opener.header)
}
