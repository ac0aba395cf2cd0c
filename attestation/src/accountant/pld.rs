//! Privacy-loss-distribution accountant with a certified result.
//!
//! For each neighbouring direction (remove and add, see [`Direction`]) one
//! step's privacy loss is replaced by a *dominating* discrete distribution on
//! the grid {i·h}: the "connect the dots" construction (Doroshenko, Ghazi,
//! Kamath, Kumar & Manurangsi 2022) puts mass on grid points so that its
//! hockey-stick curve δ̃(ε) equals certified upper bounds of the true δ(ε)
//! at every grid point and is linear in e^ε in between. The true curve is
//! convex in e^ε, so δ̃ ≥ δ everywhere; by Blackwell's theorem the discrete
//! pair dominates the true pair, and domination survives composition.
//!
//! Composition is by FFT (repeated squaring). After each convolution the
//! lowest-loss tail is moved *up* to the first kept grid point and the
//! highest-loss tail is moved to +∞ (counted fully in δ): both only raise
//! δ̃. The FFT's floating-point error is bounded in ℓ1 (see `convolve`) and
//! carried along; since every term of δ̃ has weight at most 1, the ℓ1 error
//! is added to δ. The reported ε is therefore an upper bound on the true ε,
//! modulo the stated accuracy assumptions on libm and the FFT.

use super::convolve::Convolver;
use super::gaussian::{hockey_stick_upper, privacy_loss, Direction, U};
use super::{check_delta, merged, AccountantError, Segment};

/// Grid points across the bulk (±10 standard deviations) of the composed
/// privacy loss at the default resolution.
const DEFAULT_RESOLUTION: usize = 1 << 16;

/// Most grid points one step's distribution may span; beyond this the grid
/// is coarsened instead (bounding memory and time for short, wide runs).
const MAX_STEP_BINS: f64 = (1u64 << 18) as f64;

/// Standard deviations kept below the per-step loss range: mass below is
/// moved up, which costs tightness only.
const LOWER_Z: f64 = 8.0;

/// No step's grid starts below this loss. Further left δ(ε) is within
/// e^ε of 1, closer than the construction can be verified in floating
/// point; the (tiny) mass below is moved up to the first grid point.
const LOWEST_LOSS: f64 = -11.5;

/// Lowest-loss mass moved up after each convolution.
const LOWER_TAIL: f64 = 1e-14;

/// Share of δ spent on truncating the upper tails.
const TAIL_SHARE: f64 = 1e-3;

/// δ̃ construction: how far above the certified pointwise bounds the
/// targets sit, in multiples of the curve's rounding allowance n·u, so that
/// rounding in the construction cannot dip below them.
const CONSTRUCTION_SLACK: [f64; 3] = [16.0, 1.6e3, 1.6e5];

/// The PLD accountant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pld {
    resolution: usize,
}

impl Default for Pld {
    fn default() -> Self {
        Pld { resolution: DEFAULT_RESOLUTION }
    }
}

impl Pld {
    /// An accountant whose grid puts about `bins` points across the bulk of
    /// the composed privacy loss (clamped to [2^8, 2^22]). Finer is tighter
    /// and slower; any resolution gives an upper bound.
    pub fn with_resolution(bins: usize) -> Self {
        Pld { resolution: bins.clamp(1 << 8, 1 << 22) }
    }

    /// A certified upper bound on ε of the composition of `segments` at
    /// `delta`, for both add and remove neighbours.
    pub fn epsilon(&self, segments: &[Segment], delta: f64) -> Result<f64, AccountantError> {
        check_delta(delta)?;
        if segments.is_empty() {
            return Ok(0.0);
        }
        let mut eps: f64 = 0.0;
        for dist in self.compose(segments, delta * TAIL_SHARE)? {
            eps = eps.max(dist.epsilon_for(delta)?);
        }
        Ok(eps)
    }

    /// A certified upper bound on δ(ε) of the composition of `segments`, for
    /// both add and remove neighbours.
    pub fn delta(&self, segments: &[Segment], epsilon: f64) -> Result<f64, AccountantError> {
        if !(epsilon >= 0.0 && epsilon.is_finite()) {
            return Err(AccountantError::InvalidEpsilon(epsilon));
        }
        if segments.is_empty() {
            return Ok(0.0);
        }
        let mut delta: f64 = 0.0;
        for dist in self.compose(segments, 1e-14)? {
            delta = delta.max(dist.delta_at(epsilon));
        }
        Ok(delta.min(1.0))
    }

    /// The composed dominating distributions for the remove and the add
    /// direction. `tail` bounds the total mass sent to +∞ by truncation.
    fn compose(&self, segments: &[Segment], tail: f64) -> Result<Vec<Discrete>, AccountantError> {
        let segments = merged(segments);
        let total_steps: f64 = segments.iter().map(|s| s.steps as f64).sum();
        let step_tail = tail / (2.0 * total_steps);
        let upper_z = (2.0 * (1.0 / step_tail).ln()).sqrt();
        let convolutions: u32 = segments.iter().map(|s| 2 * (64 - s.steps.leading_zeros()) + 1).sum();
        let conv_tail = tail / (2.0 * f64::from(convolutions));

        // The grid: fine enough for the composed bulk, coarse enough that no
        // single step spans more than MAX_STEP_BINS points.
        let mut variance = [0.0f64; 2];
        let mut widest: f64 = 0.0;
        for s in &segments {
            for (k, dir) in Direction::BOTH.into_iter().enumerate() {
                variance[k] += s.steps as f64 * loss_variance(dir, s.sampling_rate, s.noise_multiplier);
                let (lo, hi) = loss_range(dir, s.sampling_rate, s.noise_multiplier, upper_z);
                widest = widest.max(hi - lo);
            }
        }
        let bulk = 20.0 * variance[0].max(variance[1]).sqrt();
        let h = (bulk / self.resolution as f64).max(widest / MAX_STEP_BINS);
        if !(h.is_finite() && h > 0.0) {
            return Err(AccountantError::NumericalCheck("grid spacing"));
        }

        let mut conv = Convolver::new();
        let mut out = Vec::with_capacity(2);
        for dir in Direction::BOTH {
            let mut acc: Option<Discrete> = None;
            for s in &segments {
                let (lo, hi) = loss_range(dir, s.sampling_rate, s.noise_multiplier, upper_z);
                let step = Discrete::one_step(dir, s.sampling_rate, s.noise_multiplier, h, lo, hi)?;
                let powered = step.power(s.steps, &mut conv, conv_tail);
                acc = Some(match acc {
                    None => powered,
                    Some(a) => a.compose(&powered, &mut conv, conv_tail),
                });
            }
            out.extend(acc);
        }
        Ok(out)
    }
}

/// Loss levels between which one step's distribution is represented: below
/// `LOWER_Z` standard deviations of the output, and above the point where the
/// remaining mass is at most Φ̄(upper_z).
fn loss_range(dir: Direction, q: f64, sigma: f64, upper_z: f64) -> (f64, f64) {
    let (lo, hi) = match dir {
        // Loss increases with the output; P is the mixture, whose upper
        // component is N(1, σ²).
        Direction::Remove => (
            privacy_loss(dir, q, sigma, -LOWER_Z * sigma),
            privacy_loss(dir, q, sigma, 1.0 + upper_z * sigma),
        ),
        // Loss decreases with the output; P is N(0, σ²).
        Direction::Add => (
            privacy_loss(dir, q, sigma, LOWER_Z * sigma),
            privacy_loss(dir, q, sigma, -upper_z * sigma),
        ),
    };
    (lo.max(LOWEST_LOSS), hi)
}

/// Variance of one step's privacy loss, by the trapezoid rule on each
/// Gaussian component. Only used to size the grid, so it needs no proof.
fn loss_variance(dir: Direction, q: f64, sigma: f64) -> f64 {
    let components: &[(f64, f64)] = match dir {
        Direction::Remove => &[(1.0 - q, 0.0), (q, 1.0)],
        Direction::Add => &[(1.0, 0.0)],
    };
    let step = 0.02;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &(weight, mean) in components {
        for k in -600..=600 {
            let z = k as f64 * step;
            let w = weight * step * (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let l = privacy_loss(dir, q, sigma, mean + sigma * z);
            s1 += w * l;
            s2 += w * l * l;
        }
    }
    (s2 - s1 * s1).max(0.0)
}

/// Σ x with Neumaier's compensated summation (error about 2u·Σ|x|,
/// independent of the length).
fn neumaier_sum(xs: &[f64]) -> f64 {
    let (mut sum, mut comp) = (0.0f64, 0.0f64);
    for &x in xs {
        let t = sum + x;
        comp += if sum.abs() >= x.abs() { (sum - t) + x } else { (x - t) + sum };
        sum = t;
    }
    sum + comp
}

/// A discrete privacy-loss distribution: mass `p[k]` at loss (lo + k)·h,
/// mass `inf` at +∞, and `err`, a bound on the ℓ1 distance between `p` and
/// the exact distribution it stands for.
#[derive(Debug, Clone)]
struct Discrete {
    h: f64,
    lo: i64,
    p: Vec<f64>,
    inf: f64,
    err: f64,
}

impl Discrete {
    /// Connect-the-dots dominating distribution of one step on [lo, hi].
    fn one_step(dir: Direction, q: f64, sigma: f64, h: f64, lo: f64, hi: f64) -> Result<Self, AccountantError> {
        let i_lo = (lo / h).floor() as i64;
        let i_hi = ((hi / h).ceil() as i64).max(i_lo + 2);
        let n = (i_hi - i_lo + 1) as usize;
        let bound: Vec<f64> = (0..n).map(|j| hockey_stick_upper(dir, q, sigma, (i_lo + j as i64) as f64 * h)).collect();
        let rounding = 1.0 - 8.0 * n as f64 * U;
        for slack in CONSTRUCTION_SLACK {
            let target: Vec<f64> = bound.iter().map(|b| b * (1.0 + slack * n as f64 * U)).collect();
            // Taking the excess mass off the bottom keeps the ℓ1 error at the
            // rounding level but can lower the curve where δ ≈ 1 on coarse
            // grids; charging it to the error term never touches the curve.
            for trim in [true, false] {
                let candidate = Self::connect_dots(&target, h, i_lo, trim);
                let curve = candidate.finite_curve();
                if curve.iter().zip(&bound).all(|(f, b)| (candidate.inf + f) * rounding >= *b) {
                    return Ok(candidate);
                }
            }
        }
        Err(AccountantError::NumericalCheck("dominating discretisation"))
    }

    /// The distribution whose hockey-stick curve interpolates `target`
    /// (values at grid points i_lo.., non-increasing, convex in e^ε) linearly
    /// in e^ε, stays at the last value beyond the grid, and reaches 1 at
    /// ε = −∞. Mass at grid point j is the jump in slope there:
    /// ω_j = (Δ_{j+1} − Δ_j)/(e^h − 1) − Δ_j with Δ_j = target_j − target_{j−1}.
    fn connect_dots(target: &[f64], h: f64, i_lo: i64, trim: bool) -> Self {
        let n = target.len();
        let em1 = libm::expm1(h);
        let mut p = vec![0.0; n];
        for j in 1..n {
            let d_j = target[j] - target[j - 1];
            let d_next = if j + 1 < n { target[j + 1] - target[j] } else { 0.0 };
            p[j] = ((d_next - d_j) / em1 - d_j).max(0.0);
        }
        let inf = target[n - 1];
        // The slack on the targets and clamped rounding noise leave slightly
        // more than total mass 1. Mass at the lowest points barely enters the
        // curve (at grid point j it weighs 1 − e^{(j−k)h}, and bin 0 not at
        // all), so with `trim` the excess comes off the bottom and the caller
        // verifies the curve; otherwise it is counted as ℓ1 error.
        let mut excess = neumaier_sum(&p[1..]) + inf - 1.0;
        let mut charged = 0.0;
        if excess < 0.0 {
            p[0] = -excess;
        } else if trim {
            for mass in p[1..].iter_mut() {
                let take = mass.min(excess);
                *mass -= take;
                excess -= take;
                if excess <= 0.0 {
                    break;
                }
            }
        } else {
            charged = excess;
        }
        // What remains is the rounding of the total: the stored masses are
        // within that ℓ1 distance of an exactly normalised distribution.
        let total = neumaier_sum(&p) + inf - charged;
        Discrete { h, lo: i_lo, p, inf, err: charged + (total - 1.0).abs() + 4.0 * U }
    }

    /// F_j = Σ_{k>j} p_k (1 − e^{(j−k)h}) for every grid index j, by a
    /// recurrence with non-negative terms only (no cancellation):
    /// F_{j−1} = (1 − e^{−h})(p_j + A_j) + e^{−h} F_j, A_j = Σ_{k>j} p_k.
    fn finite_curve(&self) -> Vec<f64> {
        let n = self.p.len();
        let c = -libm::expm1(-self.h);
        let decay = (-self.h).exp();
        let mut f = vec![0.0; n];
        let mut above = 0.0;
        for j in (1..n).rev() {
            f[j - 1] = c * (self.p[j] + above) + decay * f[j];
            above += self.p[j];
        }
        f
    }

    /// Certified δ̃ at every grid point (finite part with its rounding, +∞
    /// mass, and the carried ℓ1 error), and at ε = −∞ (the total mass).
    fn certified_curve(&self) -> (Vec<f64>, f64) {
        let n = self.p.len() as f64;
        let rounding = 1.0 + 8.0 * n * U;
        let err = self.err + 4.0 * U;
        let curve = self.finite_curve().into_iter().map(|f| (f + self.inf) * rounding + err).collect();
        let total = (self.p.iter().sum::<f64>() + self.inf) * rounding + err;
        (curve, total)
    }

    fn epsilon_for(&self, delta: f64) -> Result<f64, AccountantError> {
        let (curve, total) = self.certified_curve();
        let last = curve[curve.len() - 1];
        if last > delta {
            return Err(AccountantError::PrecisionExhausted { delta, bound: last });
        }
        let j = curve.partition_point(|&d| d > delta);
        let eps = if j == 0 {
            if total <= delta {
                return Ok(0.0);
            }
            // Left of the grid the curve is the chord from (e^ε = 0, total).
            self.lo as f64 * self.h + ((total - delta) / (total - curve[0])).ln()
        } else {
            let frac = (curve[j - 1] - delta) / (curve[j - 1] - curve[j]);
            (self.lo + j as i64 - 1) as f64 * self.h + libm::log1p(libm::expm1(self.h) * frac)
        };
        Ok((eps + 1e-12 * (1.0 + eps.abs())).max(0.0))
    }

    fn delta_at(&self, eps: f64) -> f64 {
        let (curve, total) = self.certified_curve();
        let x = eps / self.h - self.lo as f64;
        let delta = if x < 0.0 {
            total - (total - curve[0]) * (eps - self.lo as f64 * self.h).exp()
        } else if x >= (curve.len() - 1) as f64 {
            curve[curve.len() - 1]
        } else {
            let j = x.floor() as usize;
            let grid = (self.lo + j as i64) as f64 * self.h;
            let t = (libm::expm1(eps - grid) / libm::expm1(self.h)).clamp(0.0, 1.0);
            curve[j] + (curve[j + 1] - curve[j]) * t
        };
        delta * (1.0 + 1e-12)
    }

    /// The composition of `self` with `other`, then truncated.
    fn compose(&self, other: &Discrete, conv: &mut Convolver, upper_tail: f64) -> Discrete {
        let (p, fft_err) = if std::ptr::eq(self, other) { conv.square(&self.p) } else { conv.convolve(&self.p, &other.p) };
        let mut out = Discrete {
            h: self.h,
            lo: self.lo + other.lo,
            p,
            inf: self.inf + other.inf - self.inf * other.inf,
            err: self.err + other.err + self.err * other.err + fft_err,
        };
        out.truncate(upper_tail);
        out
    }

    /// `steps`-fold self-composition by repeated squaring.
    fn power(self, steps: u64, conv: &mut Convolver, upper_tail: f64) -> Discrete {
        let mut base = self;
        let mut acc: Option<Discrete> = None;
        let mut k = steps;
        loop {
            if k & 1 == 1 {
                acc = Some(match acc {
                    None => base.clone(),
                    Some(a) => a.compose(&base, conv, upper_tail),
                });
            }
            k >>= 1;
            if k == 0 {
                break;
            }
            base = base.compose(&base, conv, upper_tail);
        }
        acc.unwrap_or(base)
    }

    /// Moves at most `LOWER_TAIL` of the lowest-loss mass up to the first
    /// kept point and at most `upper_tail` of the highest-loss mass to +∞.
    fn truncate(&mut self, upper_tail: f64) {
        let n = self.p.len();
        let (mut first, mut low) = (0, 0.0);
        while first + 1 < n && low + self.p[first] <= LOWER_TAIL {
            low += self.p[first];
            first += 1;
        }
        let (mut last, mut high) = (n - 1, 0.0);
        while last > first && high + self.p[last] <= upper_tail {
            high += self.p[last];
            last -= 1;
        }
        self.p[first] += low;
        self.p.truncate(last + 1);
        self.p.drain(..first);
        self.lo += first as i64;
        self.inf += high;
        self.err += 2.0 * n as f64 * U * (low + high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Analytic Gaussian mechanism (Balle & Wang 2018, Thm 8), computed here
    /// independently of the accountant: δ(ε) = Φ(−εσ + 1/(2σ)) −
    /// e^ε Φ(−εσ − 1/(2σ)) with Φ from libm's erfc, inverted by bisection.
    fn analytic_gaussian_epsilon(sigma: f64, delta: f64) -> f64 {
        let phi = |t: f64| 0.5 * libm::erfc(-t / std::f64::consts::SQRT_2);
        let d = |e: f64| phi(-e * sigma + 0.5 / sigma) - e.exp() * phi(-e * sigma - 0.5 / sigma);
        let (mut lo, mut hi) = (0.0, 100.0);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if d(mid) > delta {
                lo = mid
            } else {
                hi = mid
            }
        }
        hi
    }

    // Provenance: the analytic Gaussian mechanism (Balle & Wang 2018); at
    // q = 1 and one step the PLD must reproduce it from above.
    #[test]
    fn one_gaussian_step_matches_the_analytic_gaussian() {
        for &(sigma, delta) in &[(1.0, 1e-5), (0.5, 1e-3), (3.0, 1e-6), (10.0, 1e-5)] {
            let exact = analytic_gaussian_epsilon(sigma, delta);
            let got = Pld::default().epsilon(&[Segment::new(1.0, sigma, 1).unwrap()], delta).unwrap();
            assert!(got >= exact, "σ={sigma} δ={delta}: PLD {got} below exact {exact}");
            assert!(got <= exact * (1.0 + 1e-4) + 1e-6, "σ={sigma} δ={delta}: PLD {got} vs exact {exact}");
        }
    }

    // Provenance: dp_accounting privacy_loss_mechanism_test.py
    // (GaussianPrivacyLossTest.test_gaussian_get_delta_for_epsilon):
    // σ = 1 gives δ(1) = 0.12693674 and δ(2) = 0.02092364; σ = 1/3 gives
    // δ(1) = 0.78760074. One step at q = 1 is that mechanism.
    #[test]
    fn one_gaussian_step_delta_matches_dp_accounting() {
        for &(sigma, eps, published) in &[(1.0, 1.0, 0.12693674), (1.0, 2.0, 0.02092364), (1.0 / 3.0, 1.0, 0.78760074)] {
            let got = Pld::default().delta(&[Segment::new(1.0, sigma, 1).unwrap()], eps).unwrap();
            assert!(got >= published - 5e-9 && got <= published + 1e-6, "σ={sigma} ε={eps}: {got} vs {published}");
        }
    }

    // Provenance: composing T Gaussian mechanisms with multiplier σ is
    // exactly one Gaussian mechanism with multiplier σ/√T (Dong, Roth & Su
    // 2022, Cor. 3.3 of "Gaussian differential privacy"), whose ε is the
    // analytic Gaussian's. This exercises FFT composition and truncation
    // against a closed form.
    #[test]
    fn composed_gaussians_match_the_analytic_gaussian() {
        for &(sigma, steps, delta) in &[(10.0, 100u64, 1e-5), (30.0, 1000, 1e-6), (2.0, 3, 1e-3)] {
            let exact = analytic_gaussian_epsilon(sigma / (steps as f64).sqrt(), delta);
            let got = Pld::default().epsilon(&[Segment::new(1.0, sigma, steps).unwrap()], delta).unwrap();
            assert!(got >= exact, "σ={sigma} T={steps}: PLD {got} below exact {exact}");
            assert!(got <= exact * 1.002 + 1e-5, "σ={sigma} T={steps}: PLD {got} vs exact {exact}");
        }
    }

    // The grid is tied to the run, not to the caller: finer grids may only
    // tighten by little, and every resolution stays above the exact value.
    #[test]
    fn resolution_changes_little() {
        let run = [Segment::new(0.02, 1.0, 300).unwrap()];
        let coarse = Pld::with_resolution(1 << 12).epsilon(&run, 1e-5).unwrap();
        let fine = Pld::with_resolution(1 << 17).epsilon(&run, 1e-5).unwrap();
        assert!(coarse >= fine * (1.0 - 1e-4), "coarse {coarse} fine {fine}");
        assert!(coarse <= fine * 1.01, "coarse {coarse} fine {fine}");
    }
}
