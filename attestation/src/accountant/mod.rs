//! Privacy accounting for DP-SGD with Poisson subsampling and Gaussian noise.
//!
//! Each training step samples every privacy unit independently with
//! probability `q` (the sampling rate), clips per-unit gradients to L2 norm 1
//! and adds Gaussian noise of standard deviation `σ` (the noise multiplier).
//! A run is a list of [`Segment`]s `(q, σ, steps)`; the accountants bound the
//! ε of the whole run at a given δ under the add/remove-one-unit relation.
//!
//! Two accountants are offered:
//! - [`Rdp`]: Rényi DP of the subsampled Gaussian (Mironov, Talwar, Zhang
//!   2019), the analysis used by TF-Privacy, Opacus and Google's
//!   `dp_accounting`, with the improved RDP → (ε, δ) conversion. Cheap enough
//!   to run after every step.
//! - [`Pld`]: privacy loss distributions, discretised with the
//!   "connect the dots" construction (Doroshenko et al. 2022) and composed by
//!   FFT with every numerical error bounded and added to δ. Its ε is a
//!   certified upper bound and is tighter than RDP.
//!
//! Both results are upper bounds on the true ε: neither accountant ever
//! rounds in the optimistic direction. `docs/privacy-accounting.md` gives the
//! certification argument and how a verifier recomputes the ε of a receipt.

mod calibrate;
mod convolve;
mod gaussian;
mod pld;
mod rdp;

pub use calibrate::{calibrate_sigma, max_steps, MAX_NOISE_MULTIPLIER, MIN_NOISE_MULTIPLIER};
pub use pld::Pld;
pub use rdp::{default_orders, rdp_to_epsilon, Rdp};

use std::fmt;
use std::str::FromStr;

/// The version of the accounting algorithms. A receipt records it next to the
/// accountant's name; a change to any algorithm or default that can move a
/// reported ε changes this string.
pub const ACCOUNTANT_VERSION: &str = "sealtune-accountant/1";

/// Why an accounting request failed. Messages name the offending argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountantError {
    /// The sampling rate is not in (0, 1].
    #[error("sampling rate q must be in (0, 1], got {0}")]
    InvalidSamplingRate(f64),
    /// The noise multiplier is not a finite number > 0.
    #[error("noise multiplier sigma must be a finite number > 0, got {0}")]
    InvalidNoiseMultiplier(f64),
    /// A segment has zero steps.
    #[error("steps must be at least 1")]
    InvalidSteps,
    /// δ is not in (0, 1).
    #[error("delta must be in (0, 1), got {0}")]
    InvalidDelta(f64),
    /// ε (a target or a query point) is not a finite number > 0.
    #[error("epsilon must be a finite number > 0, got {0}")]
    InvalidEpsilon(f64),
    /// An RDP order is not a finite number > 1.
    #[error("RDP order must be a finite number > 1, got {0}")]
    InvalidOrder(f64),
    /// The accountant name is neither `rdp` nor `pld`.
    #[error("unknown accountant {0:?}: expected \"rdp\" or \"pld\"")]
    UnknownAccountant(String),
    /// The mechanism gives no finite ε at this δ (for example σ so small that
    /// every RDP order overflows).
    #[error("epsilon is unbounded for these parameters at delta {delta}")]
    Unbounded {
        /// The δ that was asked for.
        delta: f64,
    },
    /// The certified error terms (truncated tails and floating-point error
    /// bounds) already exceed δ, so no ε can be certified at this δ.
    #[error(
        "cannot certify any epsilon at delta {delta}: the certified numerical error is {bound:e}; \
         use a larger delta, fewer steps or the rdp accountant"
    )]
    PrecisionExhausted {
        /// The δ that was asked for.
        delta: f64,
        /// The part of δ consumed by error terms.
        bound: f64,
    },
    /// An internal consistency check of the numerical construction failed;
    /// no bound is reported rather than an unverified one.
    #[error("numerical check failed ({0}); no epsilon can be certified for these parameters")]
    NumericalCheck(&'static str),
    /// Even the largest noise multiplier searched does not reach the target ε.
    #[error("no noise multiplier up to {max} reaches epsilon {epsilon}")]
    TargetUnreachable {
        /// The target ε.
        epsilon: f64,
        /// The largest noise multiplier tried.
        max: f64,
    },
    /// Every noise multiplier down to the smallest searched meets the target,
    /// so there is no meaningful smallest σ to report.
    #[error("every noise multiplier down to {min} already meets epsilon {epsilon}")]
    TargetTooLoose {
        /// The target ε.
        epsilon: f64,
        /// The smallest noise multiplier tried.
        min: f64,
    },
}

/// One stretch of training with constant parameters: `steps` steps, each
/// Poisson-sampling units with probability `q` and adding Gaussian noise with
/// multiplier `σ` (standard deviation over L2 sensitivity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
}

impl Segment {
    /// A validated segment: `q ∈ (0, 1]`, `σ` finite and > 0, `steps ≥ 1`.
    pub fn new(sampling_rate: f64, noise_multiplier: f64, steps: u64) -> Result<Self, AccountantError> {
        if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
            return Err(AccountantError::InvalidSamplingRate(sampling_rate));
        }
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(AccountantError::InvalidNoiseMultiplier(noise_multiplier));
        }
        if steps == 0 {
            return Err(AccountantError::InvalidSteps);
        }
        Ok(Segment { sampling_rate, noise_multiplier, steps })
    }

    /// The Poisson sampling rate `q`.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }

    /// The noise multiplier `σ`.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// The number of steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Merges segments with identical `(q, σ)`: composition is commutative, and
/// one self-composition of `a + b` steps is cheaper than two.
fn merged(segments: &[Segment]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for s in segments {
        match out.iter_mut().find(|m| {
            m.sampling_rate.to_bits() == s.sampling_rate.to_bits()
                && m.noise_multiplier.to_bits() == s.noise_multiplier.to_bits()
        }) {
            Some(m) => m.steps = m.steps.saturating_add(s.steps),
            None => out.push(*s),
        }
    }
    out
}

fn check_delta(delta: f64) -> Result<(), AccountantError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(AccountantError::InvalidDelta(delta))
    }
}

fn check_epsilon(epsilon: f64) -> Result<(), AccountantError> {
    if epsilon > 0.0 && epsilon.is_finite() {
        Ok(())
    } else {
        Err(AccountantError::InvalidEpsilon(epsilon))
    }
}

/// Which accountant computes ε. The name is what receipts and the CLI carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccountantKind {
    /// Rényi DP ([`Rdp`] with the default orders).
    Rdp,
    /// Privacy loss distributions ([`Pld`] at the default resolution).
    #[default]
    Pld,
}

impl AccountantKind {
    /// The name used in receipts and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        }
    }

    /// An upper bound on the ε of the composition of `segments` at `delta`.
    pub fn epsilon(self, segments: &[Segment], delta: f64) -> Result<f64, AccountantError> {
        match self {
            AccountantKind::Rdp => Rdp::default().epsilon(segments, delta),
            AccountantKind::Pld => Pld::default().epsilon(segments, delta),
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AccountantKind {
    type Err = AccountantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            other => Err(AccountantError::UnknownAccountant(other.to_string())),
        }
    }
}
