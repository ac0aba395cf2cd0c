//! Pulling blobs (sealed corpora, the base model) from the host's untrusted
//! store by SHA-256 (`docs/formats/protocol.md`, "Store protocol"). Nothing
//! the store sends is used unless its digest is the one asked for.

use futures::{SinkExt, StreamExt};
use sealtune_attestation::protocol::{
    ProtocolError, StoreRequest, StoreResponse, MAX_STORE_CONTROL_LEN, STORE_CHUNK_LEN, STORE_PROTOCOL_VERSION,
};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::bytes::Bytes;
use tokio_util::codec::Framed;

/// The store must send each frame within this time.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a blob could not be fetched. Each failure has its own variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// Connecting, reading or writing failed, or a frame was over the limit.
    #[error("store transport: {0}")]
    Io(#[from] std::io::Error),
    /// The store did not answer in time.
    #[error("the store sent nothing for {STORE_TIMEOUT:?}")]
    Timeout,
    /// The store closed the connection without answering.
    #[error("the store closed the connection without answering")]
    Closed,
    /// The store closed the connection in the middle of the blob.
    #[error("the store closed the connection after {received} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The store's answer is not a store protocol message.
    #[error("the store's answer is not a protocol message: {0}")]
    Protocol(#[from] ProtocolError),
    /// The store has no blob with this digest.
    #[error("the store has no blob {0}")]
    NotFound(String),
    /// The store refused the request.
    #[error("the store refused the request: {0}")]
    Refused(String),
    /// The store answered with another message than a `get` calls for.
    #[error("the store answered a get with {0}")]
    Unexpected(&'static str),
    /// The announced size is over the caller's limit.
    #[error("blob {digest} is {size} bytes, over the limit of {max}")]
    TooLarge {
        /// The digest asked for, hex.
        digest: String,
        /// The size the store announced.
        size: u64,
        /// The caller's limit.
        max: u64,
    },
    /// The store sent more bytes than it announced.
    #[error("the store sent more than the {0} bytes it announced")]
    Overlong(u64),
    /// The bytes are not the blob asked for.
    #[error("the store's bytes for {0} have another SHA-256: tampered or substituted")]
    DigestMismatch(String),
}

/// Fetches the blob whose SHA-256 is `digest` from the store at `addr`,
/// refusing one larger than `max_len` bytes, and returns it only if its
/// digest matches.
pub async fn fetch_blob<A: ToSocketAddrs>(addr: A, digest: &[u8; 32], max_len: u64) -> Result<Vec<u8>, BlobError> {
    let name = hex::encode(digest);
    let tcp = tokio::time::timeout(STORE_TIMEOUT, TcpStream::connect(addr)).await.map_err(|_| BlobError::Timeout)??;
    let mut frames = Framed::new(tcp, super::codec(STORE_CHUNK_LEN));
    let request = StoreRequest::Get { version: STORE_PROTOCOL_VERSION, digest: *digest };
    frames.send(Bytes::from(request.to_cbor())).await?;
    let size = match next_frame(&mut frames).await?.ok_or(BlobError::Closed)? {
        frame if frame.len() > MAX_STORE_CONTROL_LEN => return Err(BlobError::Unexpected("an oversized control frame")),
        frame => match StoreResponse::from_cbor(&frame)? {
            StoreResponse::Found { size } => size,
            StoreResponse::NotFound => return Err(BlobError::NotFound(name)),
            StoreResponse::Refused { reason } => return Err(BlobError::Refused(reason)),
            other => return Err(BlobError::Unexpected(other.name())),
        },
    };
    if size > max_len {
        return Err(BlobError::TooLarge { digest: name, size, max: max_len });
    }
    let mut blob = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut hasher = Sha256::new();
    while (blob.len() as u64) < size {
        let received = blob.len() as u64;
        let chunk = next_frame(&mut frames).await?.ok_or(BlobError::Truncated { received, expected: size })?;
        if received + chunk.len() as u64 > size {
            return Err(BlobError::Overlong(size));
        }
        hasher.update(&chunk);
        blob.extend_from_slice(&chunk);
    }
    if <[u8; 32]>::from(hasher.finalize()) != *digest {
        return Err(BlobError::DigestMismatch(name));
    }
    Ok(blob)
}

/// The next frame, or `None` when the store closed the connection.
async fn next_frame(
    frames: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
) -> Result<Option<tokio_util::bytes::BytesMut>, BlobError> {
    match tokio::time::timeout(STORE_TIMEOUT, frames.next()).await.map_err(|_| BlobError::Timeout)? {
        None => Ok(None),
        Some(frame) => Ok(Some(frame?)),
    }
}
