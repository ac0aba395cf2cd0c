//! The host's content-addressed blob store (`docs/formats/protocol.md`,
//! "Store protocol"): sealed corpora and base models, named by SHA-256.
//!
//! The store is untrusted and holds only what owners and vendors upload
//! (ciphertext and public models); whoever reads a blob checks its digest
//! (`sealtune_enclave::service::blobs::fetch_blob`). An object appears under
//! its digest only once it is complete, verified and durable: uploads go to a
//! temporary file in the store directory, which is fsynced, renamed and the
//! directory fsynced. An interrupted or refused upload leaves no object.

use futures::{SinkExt, StreamExt};
use sealtune_attestation::protocol::{
    ProtocolError, StoreRequest, StoreResponse, MAX_STORE_CONTROL_LEN, STORE_CHUNK_LEN, STORE_PROTOCOL_VERSION,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A peer must send each frame within this time.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Prefix of upload temporary files; nothing else in the store starts with a dot.
const TEMP_PREFIX: &str = ".upload-";

/// Why a store operation failed. Each failure has its own variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store directory or a file in it cannot be used.
    #[error("store {path}: {source}")]
    File {
        /// The path involved.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting, reading or writing failed, or a frame was over the limit.
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent nothing for too long.
    #[error("the peer sent nothing for {FRAME_TIMEOUT:?}")]
    Timeout,
    /// The peer closed the connection in the middle of a blob.
    #[error("the connection closed after {received} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The peer closed the connection without a request or an answer.
    #[error("the connection closed before a message")]
    Closed,
    /// A frame is not a message of the store protocol.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// A control frame is larger than any store message.
    #[error("a control frame of {0} bytes (the limit is {MAX_STORE_CONTROL_LEN})")]
    OversizedControl(usize),
    /// The request names another protocol version.
    #[error("unsupported store protocol version {0} (this store speaks version {STORE_PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    /// More bytes arrived than the upload announced.
    #[error("more than the {0} announced bytes arrived")]
    Overlong(u64),
    /// The uploaded bytes are not the blob the upload claimed.
    #[error("the uploaded bytes have SHA-256 {actual}, not the claimed {claimed}")]
    DigestMismatch {
        /// The digest the upload claimed, hex.
        claimed: String,
        /// The digest of what arrived, hex.
        actual: String,
    },
    /// The upload is larger than the store accepts.
    #[error("a blob of {size} bytes is over this store's limit of {max}")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The store's limit.
        max: u64,
    },
    /// The store refused an upload.
    #[error("the store refused the upload: {0}")]
    Refused(String),
    /// The store answered with another message than the request calls for.
    #[error("the store answered with {0}")]
    Unexpected(&'static str),
}

/// A store directory: one file per blob, named by the hex SHA-256.
pub struct Store {
    dir: PathBuf,
    max_blob_len: u64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, accepting blobs of at
    /// most `max_blob_len` bytes. Temporary files of uploads a crash
    /// interrupted are removed.
    pub fn open(dir: &Path, max_blob_len: u64) -> Result<Self, StoreError> {
        let file_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::File { path, source }
        };
        std::fs::create_dir_all(dir).map_err(file_error(dir))?;
        for entry in std::fs::read_dir(dir).map_err(file_error(dir))? {
            let entry = entry.map_err(file_error(dir))?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                std::fs::remove_file(entry.path()).map_err(file_error(&entry.path()))?;
            }
        }
        Ok(Store { dir: dir.to_path_buf(), max_blob_len })
    }

    /// Where the blob with this digest is (or would be) stored.
    pub fn path_of(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(digest))
    }

    fn file_error(&self, source: std::io::Error) -> StoreError {
        StoreError::File { path: self.dir.clone(), source }
    }

    /// Receives `size` bytes of data frames into a temporary file and makes
    /// it the object `digest` if the bytes hash to it.
    async fn put(&self, frames: &mut Frames, digest: &[u8; 32], size: u64) -> Result<(), StoreError> {
        if size > self.max_blob_len {
            return Err(StoreError::TooLarge { size, max: self.max_blob_len });
        }
        // Dropping `temp` on any early return deletes the partial file.
        let temp = tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(&self.dir).map_err(|e| self.file_error(e))?;
        let mut file = tokio::fs::File::from_std(temp.reopen().map_err(|e| self.file_error(e))?);
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        while received < size {
            let chunk = next_frame(frames).await?.ok_or(StoreError::Truncated { received, expected: size })?;
            received += chunk.len() as u64;
            if received > size {
                return Err(StoreError::Overlong(size));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| self.file_error(e))?;
        }
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != *digest {
            return Err(StoreError::DigestMismatch { claimed: hex::encode(digest), actual: hex::encode(actual) });
        }
        file.sync_all().await.map_err(|e| self.file_error(e))?;
        drop(file);
        let target = self.path_of(digest);
        if target.exists() {
            // Same digest, same bytes: the upload was a duplicate.
            return Ok(());
        }
        temp.persist(&target).map_err(|e| self.file_error(e.error))?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| self.file_error(e))
    }

    /// Sends the object `digest` as `found` and data frames, or `not_found`.
    async fn get(&self, frames: &mut Frames, digest: &[u8; 32]) -> Result<(), StoreError> {
        let mut file = match tokio::fs::File::open(self.path_of(digest)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return send(frames, &StoreResponse::NotFound).await,
            Err(e) => return Err(self.file_error(e)),
        };
        let size = file.metadata().await.map_err(|e| self.file_error(e))?.len();
        send(frames, &StoreResponse::Found { size }).await?;
        let mut buf = vec![0u8; STORE_CHUNK_LEN];
        let mut sent = 0u64;
        while sent < size {
            let n = file.read(&mut buf).await.map_err(|e| self.file_error(e))?;
            if n == 0 {
                return Err(StoreError::Truncated { received: sent, expected: size });
            }
            frames.send(Bytes::copy_from_slice(&buf[..n])).await?;
            sent += n as u64;
        }
        SinkExt::<Bytes>::flush(frames).await?;
        Ok(())
    }
}

type Frames = Framed<TcpStream, LengthDelimitedCodec>;

fn frames(tcp: TcpStream) -> Frames {
    Framed::new(tcp, crate::frames(STORE_CHUNK_LEN))
}

/// The next frame, or `None` when the peer closed the connection.
async fn next_frame(frames: &mut Frames) -> Result<Option<tokio_util::bytes::BytesMut>, StoreError> {
    match tokio::time::timeout(FRAME_TIMEOUT, frames.next()).await.map_err(|_| StoreError::Timeout)? {
        None => Ok(None),
        Some(frame) => Ok(Some(frame?)),
    }
}

/// The next control frame (a request or a response).
async fn next_control(frames: &mut Frames) -> Result<tokio_util::bytes::BytesMut, StoreError> {
    let frame = next_frame(frames).await?.ok_or(StoreError::Closed)?;
    if frame.len() > MAX_STORE_CONTROL_LEN {
        return Err(StoreError::OversizedControl(frame.len()));
    }
    Ok(frame)
}

async fn send(frames: &mut Frames, response: &StoreResponse) -> Result<(), StoreError> {
    Ok(frames.send(Bytes::from(response.to_cbor())).await?)
}

/// Serves the store on `listener`, one operation per connection, until the task is dropped.
pub async fn serve(listener: TcpListener, store: Arc<Store>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Accept fails transiently (e.g. out of file descriptors); back off.
                tracing::warn!("store: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            if let Err(e) = connection(&store, tcp).await {
                tracing::info!(%peer, "store: {e}");
            }
        });
    }
}

async fn connection(store: &Store, tcp: TcpStream) -> Result<(), StoreError> {
    let mut frames = frames(tcp);
    let request = StoreRequest::from_cbor(&next_control(&mut frames).await?);
    let error = match request {
        Err(e) => StoreError::from(e),
        Ok(StoreRequest::Put { version, .. } | StoreRequest::Get { version, .. }) if version != STORE_PROTOCOL_VERSION => {
            StoreError::UnsupportedVersion(version)
        }
        Ok(StoreRequest::Put { digest, size, .. }) => match store.put(&mut frames, &digest, size).await {
            Ok(()) => return send(&mut frames, &StoreResponse::Stored { digest }).await,
            Err(e) => e,
        },
        Ok(StoreRequest::Get { digest, .. }) => return store.get(&mut frames, &digest).await,
    };
    // The peer learns why; a peer that already left is no further error.
    let _ = send(&mut frames, &StoreResponse::Refused { reason: error.to_string() }).await;
    Err(error)
}

/// Uploads the file at `path` to the store at `addr`; returns its SHA-256
/// once the store has it durably.
pub async fn upload<A: ToSocketAddrs>(addr: A, path: &Path) -> Result<[u8; 32], StoreError> {
    upload_reporting(addr, path, &mut |_, _| {}).await
}

/// [`upload`], calling `progress(sent, total)` as the bytes go out.
pub async fn upload_reporting<A: ToSocketAddrs>(
    addr: A,
    path: &Path,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<[u8; 32], StoreError> {
    let file_error = |source| StoreError::File { path: path.to_path_buf(), source };
    let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; STORE_CHUNK_LEN];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await.map_err(file_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();

    let mut frames = frames(TcpStream::connect(addr).await?);
    frames.send(Bytes::from(StoreRequest::Put { version: STORE_PROTOCOL_VERSION, digest, size }.to_cbor())).await?;
    let mut file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let mut sent = 0u64;
    while sent < size {
        // Never more than announced, even if the file grew since it was hashed.
        let want = buf.len().min(usize::try_from(size - sent).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await.map_err(file_error)?;
        if n == 0 {
            return Err(StoreError::Truncated { received: sent, expected: size });
        }
        frames.send(Bytes::copy_from_slice(&buf[..n])).await?;
        sent += n as u64;
        progress(sent, size);
    }
    match StoreResponse::from_cbor(&next_control(&mut frames).await?)? {
        StoreResponse::Stored { digest: stored } if stored == digest => Ok(digest),
        StoreResponse::Refused { reason } => Err(StoreError::Refused(reason)),
        other => Err(StoreError::Unexpected(other.name())),
    }
}
