//! The composition of many steps' loss distributions, exponentially tilted
//! and wrapped onto a circular window, by one FFT per segment, pointwise
//! powers and one inverse FFT, with an a-priori bound on every rounding
//! error on the way.
//!
//! Tilting by e^{λℓ} commutes with convolution, so the tilted composition
//! is the composition of the tilted steps. It puts the losses that decide
//! δ(ε) (those near ε) in the bulk of what the FFT computes, so the FFT's
//! absolute rounding error, which is relative to the bulk, turns into an
//! error relative to δ instead of an absolute one (which at 10⁶ steps and
//! δ = 10⁻¹⁰ no double-precision FFT could keep below δ).

use super::step::StepPmf;
use rustfft::{num_complex::Complex, FftPlanner};

const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// The relative 2-norm error bound of a computed FFT of length n:
/// Higham, *Accuracy and Stability of Numerical Algorithms*, Thm. 24.2,
/// log₂n·η/(1 − log₂n·η) with η = μ + γ₄(√2 + μ) ≤ 12u for twiddles
/// accurate to 4u; times 10 for rustfft's mixed radices.
fn fft_relative_error(n: usize) -> f64 {
    let e = 10.0 * (n as f64).log2().max(1.0) * 12.0 * UNIT_ROUNDOFF;
    e / (1.0 - e)
}

/// The tilted composed distribution on the window of grid indices
/// `[start, start + values.len())`: `values[k]` approximates
/// μ̄(ℓ = (start + k)·h) + (the mass that wraps onto it), where
/// μ(ℓ) = e^{−λℓ + log_scale}·μ̄(ℓ) is the composed finite-loss distribution.
pub(super) struct Tilted {
    pub(super) values: Vec<f64>,
    /// log of the total tilted mass Σ_ℓ μ(ℓ)e^{λℓ} (log C).
    pub(super) log_scale: f64,
    /// An upper bound on the L1 distance between `values` and the exact
    /// wrapped tilted distribution.
    pub(super) error: f64,
}

/// Composes `segments` (a step distribution and how many times it repeats)
/// tilted by `lambda ≥ 0` on the window `[start, start + n)`, n a power of two.
pub(super) fn compose(segments: &[(&StepPmf, u64)], h: f64, lambda: f64, start: i64, n: usize) -> Tilted {
    let mut planner = FftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n);
    let ifft = planner.plan_fft_inverse(n);
    let u = UNIT_ROUNDOFF;
    let rel = fft_relative_error(n);
    let sqrt_n = (n as f64).sqrt();
    let mut total = vec![Complex::new(1.0, 0.0); n];
    let mut bound = vec![0.0f64; n];
    let mut log_scale = 0.0;
    for &(pmf, times) in segments {
        let (log_mgf, _) = pmf.log_mgf(h, lambda);
        log_scale += times as f64 * log_mgf;
        // The tilted step, normalised to mass 1 and wrapped onto the window.
        let mut buf = vec![Complex::new(0.0, 0.0); n];
        let mut tilt_error = 0.0;
        let wraps = (pmf.log_probs.len() / n + 2) as f64;
        for (i, &log_p) in pmf.log_probs.iter().enumerate() {
            if log_p == f64::NEG_INFINITY {
                continue;
            }
            let index = pmf.offset + i as i64;
            // In one exponent: p·e^{λℓ} alone may overflow where the tilted mass is tiny.
            let arg = log_p + lambda * index as f64 * h - log_mgf;
            let b = arg.exp();
            buf[index.rem_euclid(n as i64) as usize].re += b;
            // exp of an argument computed with error ≤ u(|ln p| + 3|λℓ| + |log M|), and the wrapped sums.
            tilt_error += b * u * (log_p.abs() + 3.0 * (lambda * index as f64 * h).abs() + log_mgf.abs() + 4.0 + wraps);
        }
        let l2 = buf.iter().map(|c| c.re * c.re).sum::<f64>().sqrt();
        fft.process(&mut buf);
        // Each computed coefficient is within eta of the exact DFT of the exact tilted step.
        let eta = rel * sqrt_n * l2 + tilt_error * (1.0 + 4.0 * u);
        let t = times as f64;
        for (k, z) in buf.iter().enumerate() {
            let r = z.norm();
            let (power, round) = if times == 1 {
                (*z, 0.0)
            } else if r == 0.0 {
                (Complex::new(0.0, 0.0), 0.0)
            } else {
                let theta = z.arg();
                let power = Complex::from_polar((t * r.ln()).exp(), t * theta);
                (power, 8.0 * u * (t * (r.ln().abs() + theta.abs() + 1.0) + 4.0))
            };
            // |ẑ^T − z^T| ≤ T(|ẑ| + η)^{T−1}η, plus the rounding of the power.
            let reach = r + eta;
            let spread = if times == 1 { eta } else { t * ((t - 1.0) * reach.ln()).exp() * eta };
            let e_pow = spread + round.min(2.0) * (t * reach.ln()).exp();
            let prev = total[k];
            let prev_bound = bound[k];
            total[k] = prev * power;
            bound[k] = prev_bound * (power.norm() + e_pow) + prev.norm() * e_pow + total[k].norm() * 4.0 * u;
        }
    }
    ifft.process(&mut total);
    let scale = 1.0 / n as f64;
    // Window position k holds composed grid index start + k (mod n).
    let values: Vec<f64> = (0..n as i64).map(|k| total[(start + k).rem_euclid(n as i64) as usize].re * scale).collect();
    let out_l2 = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    // L1 ≤ √n·L2 in space, and the inverse DFT scales 2-norms by 1/√n.
    let spectral = bound.iter().map(|b| b * b).sum::<f64>().sqrt();
    let error = (spectral + sqrt_n * rel * out_l2 / (1.0 - rel)) * (1.0 + 8.0 * u);
    Tilted { values, log_scale, error }
}
