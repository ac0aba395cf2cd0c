//! The verifier's crate of sealtune.
//!
//! Everything a data owner or a model vendor needs to check a claim made by an
//! enclave lives here: the evidence formats and their verification, policies,
//! job manifests, the sealed-corpus format and the privacy accountant used to
//! recompute ε.
//!
//! # Non-features
//! This crate never holds an enclave's private keys and never trains. It can
//! open a sealed corpus (the owner checks their own files with it), but the
//! only program that does so with someone else's data is `sealtune-enclave`.
//!
//! # Security notes
//! Every verification function fails closed: an unknown format version, a
//! missing field or an unexpected value is an error, never a default.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod cbor;
pub mod snp;
pub mod tdx;
pub mod x509;
pub mod azure;
pub mod binding;
pub mod evidence;
pub mod manifest;
pub mod nvidia;
pub mod policy;
pub mod verify;
pub mod identity;
pub mod grant;
pub mod receipt;
pub mod sealed;
pub mod accountant;
pub mod ledger;
pub mod protocol;
