//! End-to-end and attack tests of sealtune; the tests live in `tests/`.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]
