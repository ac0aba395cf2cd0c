//! Trainable Llama-family decoders with LoRA adapters.
//!
//! The base model is frozen: every base linear layer is a [`frozen::FrozenLinear`] whose
//! backward pass yields only the input gradient. The trainable parameters are LoRA
//! adapters ([`lora::LoraParams`]); for DP-SGD they can be expanded into per-example
//! copies ([`lora::PerExampleLora`]) so that one backward pass of the summed per-example
//! losses yields the gradient of every example separately.
//!
//! The decoder is written only with candle ops that have a backward pass: candle-nn's
//! fused `softmax_last_dim`, `rms_norm` and `rope` kernels have none and would silently
//! cut the gradient of everything before them.
//!
//! Typical use:
//! ```no_run
//! # fn main() -> Result<(), sealtune_enclave::model::ModelError> {
//! use sealtune_enclave::model::{load, decoder::Llama, lora::{LoraConfig, LoraParams}};
//! use candle_core::{DType, Device};
//! use rand_chacha::{ChaCha20Rng, rand_core::SeedableRng};
//!
//! let ckpt = load::load_checkpoint("models/smollm2.gguf".as_ref(), DType::F32, &Device::Cpu)?;
//! let model = Llama::load(&ckpt.weights, &ckpt.config)?;
//! let lora = LoraConfig::new(8, 16.0, &["q_proj", "v_proj"])?;
//! let params = LoraParams::init(&ckpt.config, lora, &mut ChaCha20Rng::from_entropy(), DType::F32, &Device::Cpu)?;
//! # let _ = (model, params); Ok(()) }
//! ```

/// Fixes the compute thread settings for the rest of the process:
/// - the compute thread count (`RAYON_NUM_THREADS`: matmuls and the fused ops' row
///   kernels), which candle asks for on every matmul and otherwise answers by reading
///   `/proc/cpuinfo` (about 80 reads per DP-SGD step, 13% of a step at the tiny shape);
/// - one thread for candle's own element-wise pool (`CANDLE_NUM_THREADS`). Its workers
///   spin-wait between ops; with the fused ops little element-wise work is left to it,
///   and on 2 cores a DP-SGD step was as fast with 1 as with 2 threads when idle, and
///   1.45× faster with 1 when another process kept a core busy (tiny shape).
///
/// Call it at the start of `main`, before any thread exists; values the user set are kept.
pub fn settle_thread_settings() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs `f` on a worker of rayon's global pool (the caller waits). The matmuls split
/// their work with `rayon::join`: from inside the pool the other half is pushed to a
/// local queue and stolen, where from outside every call is injected into the pool
/// and the caller sleeps on a latch until it is done. A training step run this way
/// was 1.13× (tiny shape) and 1.10× (SmolLM2-135M) faster on 2 cores.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

pub mod config;
pub mod decoder;
pub mod export;
pub mod frozen;
pub mod fused;
pub mod generate;
pub mod load;
pub mod lora;
pub mod tokenizer;

#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;

/// Everything that can go wrong while loading, running or exporting a model.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The checkpoint lacks a tensor the architecture needs.
    #[error("tensor `{name}` is missing from the checkpoint")]
    MissingTensor {
        /// The tensor's name as the checkpoint spells it.
        name: String,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("tensor `{name}` has shape {found:?}, the configuration implies {expected:?}")]
    ShapeMismatch {
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape found in the file.
        found: Vec<usize>,
    },
    /// The checkpoint is of an architecture this decoder does not implement.
    #[error("unsupported architecture `{0}` (supported: llama, mistral, qwen2; GGUF: llama)")]
    UnsupportedArchitecture(String),
    /// A configuration field is missing, inconsistent or uses an unsupported feature.
    #[error("bad configuration field `{field}`: {reason}")]
    BadConfig {
        /// The field's name (`config.json` key, GGUF metadata key or adapter_config key).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A batch does not fit the model (too long, wrong shape, token out of range).
    #[error("bad input `{field}`: {reason}")]
    BadInput {
        /// Which input.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A trainable tensor received no gradient from the backward pass.
    #[error("no gradient reached `{name}`")]
    MissingGradient {
        /// The tensor's PEFT name.
        name: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("`{path}` is not valid: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint (names the field).
        source: serde_json::Error,
    },
    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed (device, dtype, or a malformed file).
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::BadConfig { field: field.into(), reason: reason.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, ModelError>;
