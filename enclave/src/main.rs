//! `sealtune-enclave`: the trusted program.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

fn main() {}
