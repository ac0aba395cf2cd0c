//! The trusted side of sealtune: the only crate that ever holds plaintext
//! training data or the enclave's private keys.
//!
//! # Non-features
//! Nothing here writes plaintext, keys or anything derived from private data
//! to disk, logs or the network, except outputs that are themselves
//! differentially private (the noised adapter weights) and the signed receipt.
//!
//! # Security notes
//! The untrusted host can observe the sizes and timing of messages, and the
//! sealed ciphertext it stores; it cannot observe keys or plaintext.
#![forbid(unsafe_code, unused_must_use)]
#![deny(missing_docs, unreachable_pub)]

/// glibc malloc settings (`GLIBC_TUNABLES`) the enclave process should run with:
/// - keep freed memory instead of returning it to the kernel and mapping it again:
///   training allocates and frees the same large tensors every step, and re-faulting
///   their fresh pages made a step up to 2x slower;
/// - one arena for all threads: training steps run on whichever compute-pool worker
///   is free ([`model::on_compute_pool`]), and with an arena per thread each kept its
///   own step's worth of freed memory (SmolLM2-135M: 4.6–6.6 GB peak instead of 2.6 GB,
///   and slower).
///
/// Measured with `bench/trainer.sh`. Launchers set it.
pub const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1";

pub mod corpus;
pub mod key_release;
pub mod keys;
pub mod measurement;
pub mod dpsgd;
pub mod model;
pub mod receipt;
pub mod service;
pub mod tee;
