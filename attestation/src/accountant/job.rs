//! The noise of a job, from its public terms alone: the enclave calibrates
//! with this before it touches data, and a data owner's budget ledger
//! recomputes the same numbers, so both agree on the mechanism that runs.

use super::{calibrate_sigma, AccountantError, AccountantKind};

/// The share of a job's δ left to the accountant; the rest bounds the one
/// data-dependent thing the host can see, a step that overflows its fixed
/// number of micro-batches (`docs/dp-sgd.md`).
pub const ACCOUNTING_DELTA_SHARE: f64 = 0.99;

/// The Poisson-subsampled Gaussian a job runs, and its δ split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobNoise {
    /// q = B̄ / N_declared.
    pub sampling_rate: f64,
    /// σ: the smallest noise multiplier with ε(q, σ, max steps, δ_acc) ≤ the target ε.
    pub noise_multiplier: f64,
    /// δ_acc = 0.99·δ: the δ the accountant computes ε at.
    pub delta_accounting: f64,
    /// The most a step overflow may add: the guarantee is
    /// (ε, δ_acc + (1 + e^ε)·p) for an overflow probability p ≤ this.
    pub overflow_budget: f64,
}

/// The noise for a job of `max_steps` steps, expected batch `expected_batch`
/// out of `declared_units` units, that spends at most `epsilon` at `delta`.
pub fn job_noise(
    kind: AccountantKind,
    expected_batch: f64,
    declared_units: u64,
    max_steps: u64,
    epsilon: f64,
    delta: f64,
) -> Result<JobNoise, AccountantError> {
    let sampling_rate = expected_batch / declared_units as f64;
    let delta_accounting = delta * ACCOUNTING_DELTA_SHARE;
    let noise_multiplier = calibrate_sigma(kind, sampling_rate, max_steps, delta_accounting, epsilon)?;
    let overflow_budget = (delta - delta_accounting) / (1.0 + epsilon.exp());
    Ok(JobNoise { sampling_rate, noise_multiplier, delta_accounting, overflow_budget })
}
