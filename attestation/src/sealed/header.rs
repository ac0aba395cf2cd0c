use super::key::DataKey;
use super::SealedError;
use crate::cbor;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::io::Read;

/// The first bytes of every sealed corpus.
pub const MAGIC: &[u8; 8] = b"STCORPUS";
/// The header format version this build writes and reads.
pub const HEADER_VERSION: u32 = 1;
/// Headers are small; a larger length field means a corrupt or hostile file.
const MAX_HEADER_LEN: u32 = 4096;
/// The largest chunk size a reader accepts (it bounds memory).
const MAX_CHUNK_SIZE: u32 = 1 << 20;

const KEY_CHECK_LABEL: &[u8] = b"sealtune/v1/corpus/key-check";
const HEADER_MAC_LABEL: &[u8] = b"sealtune/v1/corpus/header-mac";
pub(super) const CONTENT_KEY_LABEL: &[u8] = b"sealtune/v1/corpus/content-key";

/// The authenticated header of a sealed corpus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`HEADER_VERSION`].
    pub version: u32,
    /// The owner's name for the dataset.
    pub dataset_id: String,
    /// What the plaintext is, e.g. `jsonl`.
    pub content_type: String,
    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u32,
    /// When the file was sealed, Unix seconds.
    pub created: i64,
    /// The random first 7 bytes of every chunk nonce of this file.
    #[serde(with = "serde_bytes")]
    pub nonce_prefix: [u8; 7],
    /// The random HKDF salt of this file.
    #[serde(with = "serde_bytes")]
    pub salt: [u8; 32],
    /// HKDF(DEK, salt, key-check label): tells a wrong key from tampering
    /// without revealing anything about the DEK.
    #[serde(with = "serde_bytes")]
    pub key_check: [u8; 32],
}

impl Header {
    /// A header for `key` with the given public fields; `key_check` is filled in.
    pub(super) fn new(key: &DataKey, dataset_id: String, content_type: String, chunk_size: u32, created: i64, nonce_prefix: [u8; 7], salt: [u8; 32]) -> Self {
        let key_check = *key.derive(&salt, KEY_CHECK_LABEL);
        Header { version: HEADER_VERSION, dataset_id, content_type, chunk_size, created, nonce_prefix, salt, key_check }
    }

    /// HMAC-SHA256 of the header bytes under a key derived from the DEK.
    pub(super) fn mac(key: &DataKey, salt: &[u8; 32], header_bytes: &[u8]) -> [u8; 32] {
        let mac_key = key.derive(salt, HEADER_MAC_LABEL);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key.as_ref()).expect("HMAC takes any key length");
        mac.update(header_bytes);
        mac.finalize().into_bytes().into()
    }

    /// Checks `key` against the header: first that it is the sealing key,
    /// then that the header is unmodified (constant-time comparisons).
    pub(super) fn authenticate(&self, key: &DataKey, header_bytes: &[u8], mac: &[u8; 32]) -> Result<(), SealedError> {
        use subtle::ConstantTimeEq;
        let expected_check = key.derive(&self.salt, KEY_CHECK_LABEL);
        if !bool::from(expected_check.as_ref().ct_eq(&self.key_check)) {
            return Err(SealedError::WrongKey);
        }
        if !bool::from(Header::mac(key, &self.salt, header_bytes).ct_eq(mac)) {
            return Err(SealedError::TamperedHeader);
        }
        Ok(())
    }

    /// The file prefix: magic, header length, header, header MAC.
    pub(super) fn encode(&self, key: &DataKey) -> (Vec<u8>, Vec<u8>) {
        let header_bytes = cbor::to_vec(self);
        let mut prefix = Vec::with_capacity(MAGIC.len() + 4 + header_bytes.len() + 32);
        prefix.extend_from_slice(MAGIC);
        prefix.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
        prefix.extend_from_slice(&header_bytes);
        prefix.extend_from_slice(&Header::mac(key, &self.salt, &header_bytes));
        (prefix, header_bytes)
    }

    /// Reads the prefix of a sealed file: the header, its exact bytes and its MAC.
    pub fn read_from(reader: &mut impl Read) -> Result<(Header, Vec<u8>, [u8; 32]), SealedError> {
        let mut magic = [0u8; 8];
        read_exact_or(reader, &mut magic, SealedError::NotSealed)?;
        if &magic != MAGIC {
            return Err(SealedError::NotSealed);
        }
        let mut len = [0u8; 4];
        read_exact_or(reader, &mut len, SealedError::MalformedHeader("file ends inside the header".into()))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER_LEN {
            return Err(SealedError::MalformedHeader(format!("header length {len} exceeds {MAX_HEADER_LEN}")));
        }
        let mut header_bytes = vec![0u8; len as usize];
        read_exact_or(reader, &mut header_bytes, SealedError::MalformedHeader("file ends inside the header".into()))?;
        let version = cbor::version_of(&header_bytes).map_err(|e| SealedError::MalformedHeader(e.to_string()))?;
        if version != HEADER_VERSION {
            return Err(SealedError::UnsupportedVersion(version));
        }
        let header: Header = cbor::from_slice(&header_bytes).map_err(|e| SealedError::MalformedHeader(e.to_string()))?;
        if header.chunk_size == 0 || header.chunk_size > MAX_CHUNK_SIZE {
            return Err(SealedError::MalformedHeader(format!("chunk size {} outside 1..={MAX_CHUNK_SIZE}", header.chunk_size)));
        }
        let mut mac = [0u8; 32];
        read_exact_or(reader, &mut mac, SealedError::MalformedHeader("file ends inside the header".into()))?;
        Ok((header, header_bytes, mac))
    }
}

fn read_exact_or(reader: &mut impl Read, buf: &mut [u8], on_eof: SealedError) -> Result<(), SealedError> {
    reader.read_exact(buf).map_err(|e| if e.kind() == std::io::ErrorKind::UnexpectedEof { on_eof } else { SealedError::Io(e) })
}
