//! The wire protocols (`docs/formats/protocol.md`): what clients say to the
//! enclave inside attested TLS, and what clients and the enclave say to the
//! host's blob store.
//!
//! Every message is one frame: a 4-byte big-endian length, then that many
//! bytes of canonical CBOR (`attestation::cbor`). Messages are enums encoded
//! as CBOR's usual externally tagged form: a bare text string for a message
//! without fields, a one-entry map from the message name to its fields
//! otherwise. A decoder tells an unknown message (a name this version does
//! not define) from a malformed one (a known name with wrong fields).
//!
//! This module holds no I/O: the enclave and the host frame these messages
//! over their own sockets.

use crate::cbor::{self, CborError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The enclave protocol version; the first message of a session carries it.
pub const PROTOCOL_VERSION: u32 = 2;

/// The DNS name in the enclave's self-signed certificate, and the name
/// clients connect to. It identifies nothing: the attested key does.
pub const TLS_SERVER_NAME: &str = "sealtune-enclave";

/// Largest frame a client may send the enclave. Requests are a few hundred
/// bytes (a grant is the largest); the low limit bounds what an unattested
/// peer can make the enclave buffer.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// Largest frame the enclave sends: the outputs (adapter files and receipt)
/// travel in one frame.
pub const MAX_RESPONSE_LEN: usize = 256 * 1024 * 1024;

/// Why a frame is not a message of this protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The frame is not CBOR, or not a tagged message.
    #[error("malformed message: {0}")]
    Malformed(#[from] CborError),
    /// The message name is not one this protocol version defines.
    #[error("unknown message {0:?} (this build speaks protocol version {PROTOCOL_VERSION})")]
    UnknownMessage(String),
    /// The name is known but its fields are not the expected ones.
    #[error("malformed {name} message: {reason}")]
    MalformedFields {
        /// The message name.
        name: &'static str,
        /// What the decoder found wrong.
        reason: CborError,
    },
}

/// A message from a client (data owner or model vendor) to the enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The first message of every session.
    Hello {
        /// Always [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// A fresh nonce the evidence must bind together with this TLS session.
    Challenge {
        /// 32 random bytes chosen by the client.
        #[serde(with = "serde_bytes")]
        nonce: [u8; 32],
    },
    /// A key grant (`docs/formats/grant.md`) for evidence issued on this session.
    Grant {
        /// The encoded `SignedGrant`.
        #[serde(with = "serde_bytes")]
        grant: Vec<u8>,
    },
    /// Where the job stands.
    Status,
    /// The adapter files and the signed receipt of a finished job, for one
    /// of the manifest's recipients.
    FetchOutputs {
        /// The recipient's Ed25519 key.
        #[serde(with = "serde_bytes")]
        recipient: [u8; 32],
        /// Its signature over `binding::fetch_outputs_message` of this session.
        #[serde(with = "serde_bytes")]
        signature: [u8; 64],
    },
}

/// Where a job stands. Public facts only: nothing here depends on the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for a key grant for every dataset of the manifest.
    AwaitingGrants,
    /// Fetching, verifying and decrypting the corpora and the base model.
    Loading,
    /// Running DP-SGD.
    Training,
    /// The outputs and the receipt are ready.
    Finished,
    /// The job stopped without outputs.
    Failed,
}

impl Phase {
    /// The name used on the wire and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::AwaitingGrants => "awaiting_grants",
            Phase::Loading => "loading",
            Phase::Training => "training",
            Phase::Finished => "finished",
            Phase::Failed => "failed",
        }
    }
}

/// One output file of a finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputBlob {
    /// A plain file name (no directories).
    pub name: String,
    /// The file's contents.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A message from the enclave to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The answer to `Hello`: the version the enclave speaks.
    Hello {
        /// Always [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// The answer to `Challenge`.
    Evidence {
        /// An encoded evidence document (`docs/formats/evidence.md`).
        #[serde(with = "serde_bytes")]
        evidence: Vec<u8>,
    },
    /// The grant was accepted and the key for `dataset` is released.
    GrantAccepted {
        /// The dataset commitment the grant was for.
        #[serde(with = "serde_bytes")]
        dataset: [u8; 32],
    },
    /// The grant was refused; the session stays open.
    Refused {
        /// Why, for the owner (never contains key material).
        reason: String,
    },
    /// The answer to `Status`.
    Status {
        /// The job's phase.
        phase: Phase,
        /// DP-SGD steps done.
        steps: u64,
        /// ε spent so far, by the manifest's accountant.
        epsilon_spent: f64,
    },
    /// The answer to `FetchOutputs`.
    Outputs {
        /// The adapter files.
        files: Vec<OutputBlob>,
        /// The encoded `SignedReceipt` (`docs/formats/receipt.md`).
        #[serde(with = "serde_bytes")]
        receipt: Vec<u8>,
    },
    /// The request cannot be served; the enclave closes the session after it.
    Error {
        /// Why.
        message: String,
    },
}

/// The store protocol version; every request carries it.
pub const STORE_PROTOCOL_VERSION: u32 = 1;

/// Largest data frame of the store protocol; blobs travel as a sequence of
/// frames of at most this size.
pub const STORE_CHUNK_LEN: usize = 1024 * 1024;

/// Largest control frame of the store protocol (requests and responses).
pub const MAX_STORE_CONTROL_LEN: usize = 4 * 1024;

/// The first frame of a store connection. One operation per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreRequest {
    /// Upload: `size` bytes follow in data frames; the store keeps them only
    /// if their SHA-256 is `digest`.
    Put {
        /// Always [`STORE_PROTOCOL_VERSION`].
        version: u32,
        /// SHA-256 of the blob.
        #[serde(with = "serde_bytes")]
        digest: [u8; 32],
        /// Length of the blob in bytes.
        size: u64,
    },
    /// Download the blob with this SHA-256.
    Get {
        /// Always [`STORE_PROTOCOL_VERSION`].
        version: u32,
        /// SHA-256 of the blob.
        #[serde(with = "serde_bytes")]
        digest: [u8; 32],
    },
}

/// The store's answer to a [`StoreRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreResponse {
    /// The blob is stored (now, or it already was).
    Stored {
        /// Its SHA-256.
        #[serde(with = "serde_bytes")]
        digest: [u8; 32],
    },
    /// The blob exists; `size` bytes follow in data frames.
    Found {
        /// Length of the blob in bytes.
        size: u64,
    },
    /// No blob has this digest.
    NotFound,
    /// The request was refused; nothing was stored.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Names of the messages each enum defines, to tell unknown from malformed.
trait Message: Serialize + DeserializeOwned {
    const NAMES: &'static [&'static str];
}

impl Message for Request {
    const NAMES: &'static [&'static str] = &["hello", "challenge", "grant", "status", "fetch_outputs"];
}

impl Message for Response {
    const NAMES: &'static [&'static str] =
        &["hello", "evidence", "grant_accepted", "refused", "status", "outputs", "error"];
}

impl Message for StoreRequest {
    const NAMES: &'static [&'static str] = &["put", "get"];
}

impl Message for StoreResponse {
    const NAMES: &'static [&'static str] = &["stored", "found", "not_found", "refused"];
}

/// Longest message name quoted back in an error: the name came from the peer.
const MAX_QUOTED_NAME: usize = 32;

fn decode<M: Message>(bytes: &[u8]) -> Result<M, ProtocolError> {
    let tag = cbor::variant_of(bytes)?;
    let Some(name) = M::NAMES.iter().copied().find(|n| *n == tag) else {
        return Err(ProtocolError::UnknownMessage(tag.chars().take(MAX_QUOTED_NAME).collect()));
    };
    cbor::from_slice(bytes).map_err(|reason| ProtocolError::MalformedFields { name, reason })
}

macro_rules! codec {
    ($($t:ty),*) => {$(
        impl $t {
            /// The canonical encoding (one frame's payload).
            pub fn to_cbor(&self) -> Vec<u8> {
                cbor::to_vec(self)
            }

            /// Decodes one frame's payload, telling unknown messages from malformed ones.
            pub fn from_cbor(bytes: &[u8]) -> Result<Self, ProtocolError> {
                decode(bytes)
            }
        }
    )*};
}

codec!(Request, Response, StoreRequest, StoreResponse);

impl Request {
    /// The message name, for errors about messages in the wrong state.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::Challenge { .. } => "challenge",
            Request::Grant { .. } => "grant",
            Request::Status => "status",
            Request::FetchOutputs { .. } => "fetch_outputs",
        }
    }
}

impl Response {
    /// The message name, for errors about unexpected answers.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "hello",
            Response::Evidence { .. } => "evidence",
            Response::GrantAccepted { .. } => "grant_accepted",
            Response::Refused { .. } => "refused",
            Response::Status { .. } => "status",
            Response::Outputs { .. } => "outputs",
            Response::Error { .. } => "error",
        }
    }
}

impl StoreResponse {
    /// The message name, for errors about unexpected answers.
    pub fn name(&self) -> &'static str {
        match self {
            StoreResponse::Stored { .. } => "stored",
            StoreResponse::Found { .. } => "found",
            StoreResponse::NotFound => "not_found",
            StoreResponse::Refused { .. } => "refused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_encoding() {
        let requests = [
            Request::Hello { version: 1 },
            Request::Challenge { nonce: [0; 32] },
            Request::Grant { grant: vec![] },
            Request::Status,
            Request::FetchOutputs { recipient: [0; 32], signature: [0; 64] },
        ];
        for r in &requests {
            assert_eq!(cbor::variant_of(&r.to_cbor()).unwrap(), r.name());
            assert!(Request::NAMES.contains(&r.name()));
        }
        let responses = [
            Response::Hello { version: 1 },
            Response::Evidence { evidence: vec![] },
            Response::GrantAccepted { dataset: [0; 32] },
            Response::Refused { reason: String::new() },
            Response::Status { phase: Phase::Loading, steps: 0, epsilon_spent: 0.0 },
            Response::Outputs { files: vec![], receipt: vec![] },
            Response::Error { message: String::new() },
        ];
        for r in &responses {
            assert_eq!(cbor::variant_of(&r.to_cbor()).unwrap(), r.name());
            assert!(Response::NAMES.contains(&r.name()));
        }
        for r in [
            StoreResponse::Stored { digest: [0; 32] },
            StoreResponse::Found { size: 0 },
            StoreResponse::NotFound,
            StoreResponse::Refused { reason: String::new() },
        ] {
            assert_eq!(cbor::variant_of(&r.to_cbor()).unwrap(), r.name());
        }
        for p in [Phase::AwaitingGrants, Phase::Loading, Phase::Training, Phase::Finished, Phase::Failed] {
            assert_eq!(cbor::to_vec(&p), cbor::to_vec(&p.name()));
        }
    }
}
