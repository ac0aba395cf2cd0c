//! The untrusted side of sealtune as a library: the attested-TLS client that
//! owners and vendors use to talk to the enclave ([`client`]), and the
//! operator's blob store ([`store`]) and relay ([`relay`]). The `sealtune`
//! command line is built on it.
//!
//! # Non-features
//! Nothing here holds a key that opens a corpus other than the caller's own
//! DEK, which leaves only inside a grant sealed to an attested enclave.
//!
//! # Security notes
//! The store and the relay are untrusted by design: everything they hand on
//! is checked by its receiver (SHA-256 for blobs, attestation bound to the
//! TLS session for the enclave). A client trusts an enclave session only
//! after [`client::connect`] verified the evidence for that session.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod client;
pub mod relay;
pub mod store;

/// Length-delimited frames (4-byte big-endian length) of at most `max` bytes.
pub(crate) fn frames(max: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(max).new_codec()
}
