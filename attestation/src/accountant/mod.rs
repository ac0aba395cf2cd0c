//! The privacy accountant: ε of DP-SGD with Poisson sampling and Gaussian
//! noise, under the add/remove-one-unit neighbouring relation
//! (`docs/privacy-accounting.md`).
//!
//! Two accountants: [`rdp`] (Rényi DP, as TF-Privacy, Opacus and
//! dp_accounting compute it) and [`pld`] (privacy loss distributions, a
//! certified upper bound that is tighter). Both compose heterogeneous
//! [`Segment`]s. Verifiers recompute a receipt's ε with them, so they live
//! in the verifier's crate and are pure Rust.

pub mod job;
pub mod pld;
pub mod rdp;
mod special;

use serde::{Deserialize, Serialize};

/// Names this implementation in receipts; bump it when results can change.
pub const ACCOUNTANT_VERSION: &str = "sealtune-accountant/2";

/// A run of steps with the same sampling rate and noise multiplier.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Poisson sampling rate q ∈ (0, 1].
    pub sampling_rate: f64,
    /// Noise standard deviation over clipping norm, σ > 0.
    pub noise_multiplier: f64,
    /// Number of steps, ≥ 1.
    pub steps: u64,
}

/// Which accountant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountantKind {
    /// Rényi DP with dp_accounting's orders.
    Rdp,
    /// Privacy loss distributions (certified upper bound).
    Pld,
}

impl AccountantKind {
    /// `rdp` or `pld`.
    pub fn name(self) -> &'static str {
        match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        }
    }

    /// Parses `rdp` or `pld`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rdp" => Some(AccountantKind::Rdp),
            "pld" => Some(AccountantKind::Pld),
            _ => None,
        }
    }
}

/// Why no ε (or σ, or step count) can be given. Messages name the argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountantError {
    /// q outside (0, 1].
    #[error("sampling rate must be in (0, 1], got {0}")]
    InvalidSamplingRate(f64),
    /// σ not a positive finite number.
    #[error("noise multiplier must be a positive finite number, got {0}")]
    InvalidNoiseMultiplier(f64),
    /// Zero steps.
    #[error("steps must be at least 1")]
    InvalidSteps,
    /// δ outside (0, 1).
    #[error("delta must be in (0, 1), got {0}")]
    InvalidDelta(f64),
    /// ε not a positive finite number.
    #[error("epsilon must be a positive finite number, got {0}")]
    InvalidEpsilon(f64),
    /// No segments to account.
    #[error("no training steps to account")]
    NoSegments,
    /// No finite ε achieves δ (the noise is too low for this many steps).
    #[error("no finite epsilon achieves delta {delta} with this noise and number of steps")]
    Unbounded {
        /// The δ asked for.
        delta: f64,
    },
    /// No noise multiplier up to 10^6 reaches the target.
    #[error("no noise multiplier up to 1e6 reaches epsilon {0}")]
    Unreachable(f64),
}

fn check_segment(s: &Segment) -> Result<(), AccountantError> {
    if !(s.sampling_rate > 0.0 && s.sampling_rate <= 1.0) {
        return Err(AccountantError::InvalidSamplingRate(s.sampling_rate));
    }
    if !(s.noise_multiplier > 0.0 && s.noise_multiplier.is_finite()) {
        return Err(AccountantError::InvalidNoiseMultiplier(s.noise_multiplier));
    }
    if s.steps == 0 {
        return Err(AccountantError::InvalidSteps);
    }
    Ok(())
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

/// ε spent by `segments` at δ.
pub fn epsilon(kind: AccountantKind, segments: &[Segment], delta: f64) -> Result<f64, AccountantError> {
    if segments.is_empty() {
        return Err(AccountantError::NoSegments);
    }
    segments.iter().try_for_each(check_segment)?;
    check_delta(delta)?;
    let orders = rdp::default_orders();
    let rdp_eps = rdp::epsilon_from_rdp(&orders, &rdp::rdp(segments, &orders), delta).0;
    let eps = match kind {
        AccountantKind::Rdp => rdp_eps,
        // Both are certified upper bounds, so their minimum is one too. The
        // RDP value stands alone only where the PLD cannot certify a value
        // (its infinite-loss mass exceeds δ, or its grid limits are hit);
        // a NaN from either side is never taken as the smaller.
        AccountantKind::Pld => match pld::epsilon(segments, delta) {
            Ok(pld_eps) if pld_eps >= 0.0 => pld_eps.min(rdp_eps),
            _ => rdp_eps,
        },
    };
    if eps.is_finite() && eps >= 0.0 {
        Ok(eps)
    } else {
        Err(AccountantError::Unbounded { delta })
    }
}

/// The smallest σ (to 1e-4 relative precision, rounded up) with
/// ε(q, σ, steps, δ) ≤ `target`.
pub fn calibrate_sigma(kind: AccountantKind, q: f64, steps: u64, delta: f64, target: f64) -> Result<f64, AccountantError> {
    check_segment(&Segment { sampling_rate: q, noise_multiplier: 1.0, steps })?;
    check_delta(delta)?;
    check_epsilon(target)?;
    // ln ε(σ) − ln target: decreasing in σ, ≤ 0 where the target is met,
    // +∞ where no finite ε exists.
    let gap = |kind: AccountantKind, sigma: f64| -> Result<f64, AccountantError> {
        match epsilon(kind, &[Segment { sampling_rate: q, noise_multiplier: sigma, steps }], delta) {
            Ok(eps) => Ok(eps.ln() - target.ln()),
            Err(AccountantError::Unbounded { .. }) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    };
    // Bracket: `hi` meets the target, `lo` does not. The RDP σ meets it
    // for both accountants (PLD ≤ RDP), and RDP is cheap to search.
    let mut hi = 1.0;
    while gap(AccountantKind::Rdp, hi)? > 0.0 {
        hi *= 2.0;
        if hi > 1e6 {
            return Err(AccountantError::Unreachable(target));
        }
    }
    while hi > 1e-6 && gap(AccountantKind::Rdp, hi / 2.0)? <= 0.0 {
        hi /= 2.0;
    }
    if hi <= 1e-6 {
        return Ok(hi);
    }
    let gap = |sigma: f64| gap(kind, sigma);
    let mut gap_hi = gap(hi)?;
    let mut lo = hi / 2.0;
    let mut gap_lo = gap(lo)?;
    while gap_lo <= 0.0 {
        (hi, gap_hi) = (lo, gap_lo);
        lo /= 2.0;
        if lo < 1e-6 {
            return Ok(hi);
        }
        gap_lo = gap(lo)?;
    }
    // The Illinois method (regula falsi that halves the value kept twice)
    // on ln σ: a handful of ε evaluations where bisection needs 14; a
    // bisection step where a value is not finite. The bracket invariant is
    // bisection's, so the answer is the same to the same precision.
    let mut moved_hi_last = None;
    while (hi - lo) / hi > 1e-4 {
        let (a, b) = (lo.ln(), hi.ln());
        let x = if gap_lo.is_finite() && gap_hi.is_finite() { b - gap_hi * (b - a) / (gap_hi - gap_lo) } else { 0.5 * (a + b) };
        let mid = x.clamp(a + 1e-3 * (b - a), b - 1e-3 * (b - a)).exp();
        let gap_mid = gap(mid)?;
        if gap_mid <= 0.0 {
            (hi, gap_hi) = (mid, gap_mid);
            if moved_hi_last == Some(true) {
                gap_lo /= 2.0;
            }
            moved_hi_last = Some(true);
        } else {
            (lo, gap_lo) = (mid, gap_mid);
            if moved_hi_last == Some(false) {
                gap_hi /= 2.0;
            }
            moved_hi_last = Some(false);
        }
    }
    Ok(hi)
}

/// The largest number of steps at (q, σ) with ε ≤ `target` (0 if even one step exceeds it).
pub fn max_steps(kind: AccountantKind, q: f64, sigma: f64, delta: f64, target: f64) -> Result<u64, AccountantError> {
    check_segment(&Segment { sampling_rate: q, noise_multiplier: sigma, steps: 1 })?;
    check_delta(delta)?;
    check_epsilon(target)?;
    let within = |steps: u64| -> Result<bool, AccountantError> {
        match epsilon(kind, &[Segment { sampling_rate: q, noise_multiplier: sigma, steps }], delta) {
            Ok(eps) => Ok(eps <= target),
            Err(AccountantError::Unbounded { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    };
    if !within(1)? {
        return Ok(0);
    }
    let mut lo = 1u64;
    let mut hi = 2u64;
    while within(hi)? {
        lo = hi;
        hi = hi.saturating_mul(2);
        if hi >= 1 << 40 {
            return Ok(lo);
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if within(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}
