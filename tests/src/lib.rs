//! End-to-end and attack tests of sealtune (in `tests/`), and the fixtures
//! they share.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

pub mod fixtures;
pub mod tiny_model;
