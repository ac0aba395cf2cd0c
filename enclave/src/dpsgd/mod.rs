//! DP-SGD: differentially private fine-tuning of LoRA adapters.
//!
//! One step of [`engine::DpSgd`]:
//! 1. **Sample** ([`sampling`]): every privacy unit (a record, or a user with all their
//!    records) is included independently with probability `q`, from a ChaCha20 CSPRNG
//!    seeded by the OS. A user contributes at most `k` of their records, chosen uniformly.
//! 2. **Per-unit gradients**: the sampled records run through the model in a fixed number
//!    of fixed-size micro-batches (padding rows have zero loss and zero gradient); one
//!    backward pass per micro-batch yields every record's gradient of every LoRA tensor
//!    through per-example adapter copies; a user's records are summed.
//! 3. **Clip** ([`clip`]): each unit's gradient, all tensors jointly, to L2 norm at most `C`.
//! 4. **Noise** ([`noise`]): add `N(0, σ²C²)` to every coordinate of the clipped sum, once
//!    per step, from a second OS-seeded ChaCha20 CSPRNG with floating-point hardening.
//! 5. **Normalise** by the declared expected batch size `B̄ = q · N_declared`, a public
//!    constant of the job, and hand the result to the optimiser (AdamW or SGD).
//!
//! σ comes from a privacy accountant, calibrated before any data is touched; the engine
//! asks the accountant for ε before every step and stops when the budget would be
//! exceeded. Nothing but the step count and ε leaves the engine while it runs: no loss,
//! gradient norm or clipping statistic. See `docs/dp-sgd.md`.

pub(crate) mod clip;
pub mod dev;
pub mod engine;
pub mod fine_tune;
pub mod noise;
pub mod plan;
pub mod sampling;
pub mod summary;

#[cfg(test)]
mod tests;

use crate::model::ModelError;

/// Everything that can stop a DP-SGD run.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    /// A parameter of the job is out of range.
    #[error("bad DP-SGD parameter `{field}`: {reason}")]
    BadParameter {
        /// The parameter.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The operating system's random source failed; no noise can be drawn without it.
    #[error("the OS random source failed: {0}")]
    Entropy(String),
    /// A trainable tensor did not change in the first step: its gradient path is broken
    /// or the noise was not applied, and continuing would spend privacy for nothing.
    #[error("adapter tensor `{name}` did not change in the first step")]
    Unchanged {
        /// The tensor's PEFT name.
        name: String,
    },
    /// The privacy accountant failed.
    #[error("privacy accountant: {0}")]
    Accountant(String),
    /// The model failed (a broken gradient path is [`ModelError::MissingGradient`]).
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for DpError {
    fn from(e: candle_core::Error) -> Self {
        DpError::Model(ModelError::Candle(e))
    }
}

impl DpError {
    pub(crate) fn bad(field: &'static str, reason: impl Into<String>) -> Self {
        DpError::BadParameter { field, reason: reason.into() }
    }
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, DpError>;
