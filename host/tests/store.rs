//! The host's blob store on real sockets: uploads become objects only when
//! complete and verified; duplicates are idempotent; readers check digests.

use futures::SinkExt;
use sealtune_attestation::protocol::{StoreRequest, StoreResponse, STORE_CHUNK_LEN, STORE_PROTOCOL_VERSION};
use sealtune_enclave::service::blobs::{fetch_blob, BlobError};
use sealtune_host::store::{serve, upload, Store, StoreError};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const MAX: u64 = 64 << 20;

async fn start_store(dir: &Path) -> SocketAddr {
    let store = Arc::new(Store::open(dir, MAX).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, store));
    addr
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// 2.5 chunks of patterned bytes, so uploads span several frames.
fn blob() -> Vec<u8> {
    (0..STORE_CHUNK_LEN * 5 / 2).map(|i| (i % 251) as u8).collect()
}

async fn raw(addr: SocketAddr) -> Framed<TcpStream, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(STORE_CHUNK_LEN).new_codec();
    Framed::new(TcpStream::connect(addr).await.unwrap(), codec)
}

/// Waits until the store has finished with a dropped connection (its
/// temporary file is gone), then returns what the directory holds.
async fn settled(dir: &Path) -> Vec<String> {
    for _ in 0..200 {
        if entries(dir).iter().all(|n| !n.starts_with('.')) {
            return entries(dir);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("a temporary upload file stayed behind: {:?}", entries(dir));
}

#[tokio::test]
async fn upload_then_fetch_round_trips_and_duplicates_are_idempotent() {
    let store_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let addr = start_store(store_dir.path()).await;
    let bytes = blob();
    let path = write(files.path(), "corpus.sealed", &bytes);

    let digest = upload(addr, &path).await.unwrap();
    assert_eq!(digest, sha256(&bytes));
    assert_eq!(entries(store_dir.path()), vec![hex::encode(digest)]);
    let stored = std::fs::metadata(store_dir.path().join(hex::encode(digest))).unwrap().modified().unwrap();

    assert_eq!(upload(addr, &path).await.unwrap(), digest);
    assert_eq!(entries(store_dir.path()), vec![hex::encode(digest)]);
    let again = std::fs::metadata(store_dir.path().join(hex::encode(digest))).unwrap().modified().unwrap();
    assert_eq!(stored, again, "a duplicate upload must not rewrite the object");

    assert_eq!(fetch_blob(addr, &digest, MAX).await.unwrap(), bytes);
    // An empty blob is a blob too.
    let empty = upload(addr, &write(files.path(), "empty", b"")).await.unwrap();
    assert_eq!(fetch_blob(addr, &empty, MAX).await.unwrap(), Vec::<u8>::new());
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_store(dir.path()).await;
    let bytes = blob();
    let mut frames = raw(addr).await;
    let put = StoreRequest::Put { version: STORE_PROTOCOL_VERSION, digest: sha256(&bytes), size: bytes.len() as u64 };
    frames.send(Bytes::from(put.to_cbor())).await.unwrap();
    frames.send(Bytes::copy_from_slice(&bytes[..STORE_CHUNK_LEN])).await.unwrap();
    frames.send(Bytes::copy_from_slice(&bytes[STORE_CHUNK_LEN..STORE_CHUNK_LEN + 10])).await.unwrap();
    // The store is mid-write: its temporary file exists.
    for _ in 0..200 {
        if entries(dir.path()).iter().any(|n| n.starts_with(".upload-")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(entries(dir.path()).iter().any(|n| n.starts_with(".upload-")), "{:?}", entries(dir.path()));
    drop(frames);
    assert_eq!(settled(dir.path()).await, Vec::<String>::new());
    let err = fetch_blob(addr, &sha256(&bytes), MAX).await.unwrap_err();
    assert!(matches!(err, BlobError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn a_wrong_digest_or_size_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_store(dir.path()).await;
    let bytes = blob();

    // The bytes are not the blob the upload claims.
    let mut frames = raw(addr).await;
    let claimed = [0x77; 32];
    let put = StoreRequest::Put { version: STORE_PROTOCOL_VERSION, digest: claimed, size: 3 };
    frames.send(Bytes::from(put.to_cbor())).await.unwrap();
    frames.send(Bytes::from_static(b"abc")).await.unwrap();
    let answer = futures::StreamExt::next(&mut frames).await.unwrap().unwrap();
    match StoreResponse::from_cbor(&answer).unwrap() {
        StoreResponse::Refused { reason } => {
            assert!(reason.contains("not the claimed") && reason.contains(&hex::encode(claimed)), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // More bytes than announced.
    let mut frames = raw(addr).await;
    let put = StoreRequest::Put { version: STORE_PROTOCOL_VERSION, digest: sha256(b"ab"), size: 2 };
    frames.send(Bytes::from(put.to_cbor())).await.unwrap();
    frames.send(Bytes::from_static(b"abc")).await.unwrap();
    let answer = futures::StreamExt::next(&mut frames).await.unwrap().unwrap();
    assert!(matches!(StoreResponse::from_cbor(&answer).unwrap(), StoreResponse::Refused { reason } if reason.contains("more than the 2")));

    // Another protocol version.
    let mut frames = raw(addr).await;
    let get = StoreRequest::Get { version: 9, digest: sha256(&bytes) };
    frames.send(Bytes::from(get.to_cbor())).await.unwrap();
    let answer = futures::StreamExt::next(&mut frames).await.unwrap().unwrap();
    assert!(matches!(StoreResponse::from_cbor(&answer).unwrap(), StoreResponse::Refused { reason } if reason.contains("version 9")));

    assert_eq!(settled(dir.path()).await, Vec::<String>::new());
}

#[tokio::test]
async fn readers_refuse_a_tampered_or_oversized_blob() {
    let store_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let addr = start_store(store_dir.path()).await;
    let bytes = blob();
    let digest = upload(addr, &write(files.path(), "b", &bytes)).await.unwrap();

    let err = fetch_blob(addr, &digest, 1000).await.unwrap_err();
    assert!(matches!(err, BlobError::TooLarge { size, max: 1000, .. } if size == bytes.len() as u64), "{err}");

    // The untrusted host flips a bit in its copy.
    let object = store_dir.path().join(hex::encode(digest));
    let mut tampered = bytes.clone();
    tampered[12345] ^= 1;
    std::fs::write(&object, &tampered).unwrap();
    let err = fetch_blob(addr, &digest, MAX).await.unwrap_err();
    assert!(matches!(err, BlobError::DigestMismatch(_)), "{err}");
}

#[tokio::test]
async fn opening_a_store_clears_uploads_a_crash_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".upload-abc123", b"partial");
    write(dir.path(), &"ab".repeat(32), b"kept");
    Store::open(dir.path(), MAX).unwrap();
    assert_eq!(entries(dir.path()), vec!["ab".repeat(32)]);
}

#[tokio::test]
async fn an_unreachable_store_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let files = tempfile::tempdir().unwrap();
    let err = upload(addr, &write(files.path(), "x", b"x")).await.unwrap_err();
    assert!(matches!(err, StoreError::Io(_)), "{err}");
}
