//! Privacy-loss-distribution accounting of the Poisson-subsampled Gaussian
//! mechanism under add/remove-one neighbouring: a certified upper bound on
//! ε, and a certified lower bound beside it (`docs/privacy-accounting.md`
//! holds the whole argument).
//!
//! - [`step`]: one step's loss distribution on a grid, rounded up
//!   (connect-the-dots: dominates the real one) or down (dominated by it),
//!   every mass an elementwise bound on the exact discretisation.
//! - [`fourier`]: the composition of all steps, exponentially tilted, on a
//!   circular window, with an a-priori bound on its rounding error.
//! - here: the grid, the tilt and the window; the tails outside the window
//!   bounded by Chernoff bounds of the discrete distributions themselves;
//!   and ε solved on the resulting certified δ(ε) curve.
//!
//! The two directions of add/remove neighbouring have different loss
//! distributions; ε is the larger of the two.

mod fourier;
mod step;

use super::Segment;
use fourier::Tilted;
use step::{Direction, Rounding, Step, StepPmf};

/// Share of δ that each truncated tail may take (one step's tails, summed
/// over all steps; the composed tail above the window).
const TAIL_SHARE: f64 = 1e-4;
/// Largest composed window (FFT length): 2^20 complex values are 16 MiB.
const MAX_POINTS: usize = 1 << 20;
/// Largest one-step distribution.
const MAX_STEP_POINTS: usize = 1 << 20;
/// Grid points per standard deviation of one step's loss: the
/// connect-the-dots spread then adds at most 1/(4·32²) to the variance.
const POINTS_PER_SD: f64 = 32.0;
/// Grid refinements tried before giving up.
const ATTEMPTS: usize = 6;
/// Tilts tried for one ε.
const TILTS: usize = 6;
const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// Why the PLD accountant gives no ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PldFailure {
    /// The infinite-loss mass alone exceeds δ: no finite ε.
    Unbounded,
    /// Within its memory limits the computation cannot certify a value
    /// (grid, window or rounding error too coarse for this δ).
    Unresolved,
}

/// A certified interval for ε: the true ε of the mechanism lies in [lower, upper].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// From the distribution rounded down (dominated by the real one).
    pub lower: f64,
    /// From the distribution rounded up (dominating the real one).
    pub upper: f64,
}

/// ε of `segments` at δ (the certified upper bound).
pub fn epsilon(segments: &[Segment], delta: f64) -> Result<f64, PldFailure> {
    let mut worst = 0.0f64;
    for direction in [Direction::Remove, Direction::Add] {
        worst = worst.max(Side::new(segments, direction, Rounding::Up, delta)?.epsilon(delta)?);
    }
    Ok(worst)
}

/// Certified lower and upper bounds on ε of `segments` at δ.
pub fn epsilon_bounds(segments: &[Segment], delta: f64) -> Result<Bounds, PldFailure> {
    let upper = epsilon(segments, delta)?;
    let mut lower = 0.0f64;
    for direction in [Direction::Remove, Direction::Add] {
        lower = lower.max(Side::new(segments, direction, Rounding::Down, delta)?.epsilon(delta)?);
    }
    Ok(Bounds { lower, upper })
}

/// A certified upper bound on δ of `segments` at ε.
pub fn delta(segments: &[Segment], epsilon: f64) -> Result<f64, PldFailure> {
    let mut worst = 0.0f64;
    for direction in [Direction::Remove, Direction::Add] {
        // The tails are cut at a share of a δ in the region asked about.
        let side = Side::new(segments, direction, Rounding::Up, 1e-300f64.max(1e-3 * rough_delta(segments, direction, epsilon)))?;
        worst = worst.max(side.delta(epsilon)?);
    }
    Ok(worst.min(1.0))
}

/// A quick upper estimate of δ(ε) (RDP-style Chernoff bound on a coarse
/// grid), used only to size the tails of [`delta`].
fn rough_delta(segments: &[Segment], direction: Direction, epsilon: f64) -> f64 {
    let h = grid(segments, direction, 1e-12).map_or(1e-2, |(h, _)| h).max(1e-3);
    let model = Model::new(segments, direction, Rounding::Up, h, 1e-12);
    let lambda = model.saddle(epsilon);
    (model.approximate_k(lambda).0 - lambda * epsilon).exp().min(1.0).max(1e-200) + model.infinity
}

/// Each segment's one-step distribution on one grid, and how often it repeats.
struct Model {
    h: f64,
    parts: Vec<(StepPmf, u64)>,
    /// The composed infinite-loss mass: 1 − Π(1 − m_s)^{T_s}.
    infinity: f64,
}

impl Model {
    fn new(segments: &[Segment], direction: Direction, rounding: Rounding, h: f64, tail: f64) -> Model {
        let parts: Vec<(StepPmf, u64)> = segments
            .iter()
            .map(|s| {
                let step = Step { q: s.sampling_rate, sigma: s.noise_multiplier, direction };
                (StepPmf::new(&step, h, tail, rounding), s.steps)
            })
            .collect();
        let log_finite: f64 = parts.iter().map(|(p, t)| *t as f64 * (-p.infinity).ln_1p()).sum();
        // Rounded up by a relative margin far above its rounding error.
        let infinity = (-log_finite.exp_m1() * (1.0 + 1e-9)).min(1.0);
        Model { h, parts, infinity }
    }

    /// K(λ) = log E[e^{λL}] over the composed finite part, and K'(λ).
    fn k(&self, lambda: f64) -> (f64, f64) {
        self.compose_cumulants(|p| p.log_mgf(self.h, lambda))
    }

    /// K(λ) and K'(λ) from the one-step summaries: for searches only.
    fn approximate_k(&self, lambda: f64) -> (f64, f64) {
        self.compose_cumulants(|p| p.approximate_log_mgf(lambda))
    }

    /// Σ_s T_s·f(step s): cumulants add over independent steps.
    fn compose_cumulants(&self, f: impl Fn(&StepPmf) -> (f64, f64)) -> (f64, f64) {
        self.parts.iter().fold((0.0, 0.0), |(k, dk), (p, t)| {
            let (m, mean) = f(p);
            (k + *t as f64 * m, dk + *t as f64 * mean)
        })
    }

    /// The tilt λ ≥ 0 whose tilted mean is `epsilon` (0 if the mean is above
    /// it), to 1% or so: on the exact cumulants, since the summary blurs the
    /// topmost losses that steep tilts weigh most.
    fn saddle(&self, epsilon: f64) -> f64 {
        if self.k(0.0).1 >= epsilon {
            return 0.0;
        }
        let (mut lo, mut hi) = (-30.0f64, 30.0f64);
        if self.k(hi.exp()).1 < epsilon {
            return hi.exp();
        }
        while hi - lo > 0.01 {
            let mid = 0.5 * (lo + hi);
            if self.k(mid.exp()).1 < epsilon {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi.exp()
    }
}

/// min over λ > 0 of (f(λ) − log_target)/λ, and the λ attaining it: with
/// f = K, the smallest b that the Chernoff bound P(L ≥ b) ≤ e^{K(λ)−λb}
/// shows to have P(L ≥ b) ≤ target.
fn chernoff(f: impl Fn(f64) -> f64, log_target: f64) -> (f64, f64) {
    let g = |x: f64| (f(x.exp()) - log_target) / x.exp();
    let (mut best_x, mut best) = (0.0, f64::INFINITY);
    for i in -56..=56 {
        let x = f64::from(i) * 0.25 * std::f64::consts::LN_10;
        let v = g(x);
        if v < best {
            (best_x, best) = (x, v);
        }
    }
    // Golden-section refinement around the best grid point.
    let (mut a, mut b) = (best_x - 0.6, best_x + 0.6);
    let r = 0.5 * (5f64.sqrt() - 1.0);
    for _ in 0..40 {
        let (c, d) = (b - r * (b - a), a + r * (b - a));
        if g(c) < g(d) {
            b = d;
        } else {
            a = c;
        }
    }
    let x = 0.5 * (a + b);
    if g(x) < best {
        (g(x), x.exp())
    } else {
        (best, best_x.exp())
    }
}

/// The grid width for `segments`: fine enough for one step's loss spread,
/// coarse enough that every one-step distribution fits its limit.
/// Returns the width and the widest one-step loss range.
fn grid(segments: &[Segment], direction: Direction, tail: f64) -> Result<(f64, f64), PldFailure> {
    let mut h = f64::INFINITY;
    let mut widest = 0.0f64;
    for s in segments {
        let step = Step { q: s.sampling_rate, sigma: s.noise_multiplier, direction };
        h = h.min(step.loss_sd() / POINTS_PER_SD);
        let (lo, hi) = step.loss_range(tail);
        widest = widest.max(hi - lo);
    }
    let h = h.max(widest / (MAX_STEP_POINTS - 2) as f64);
    if h.is_finite() && h > 0.0 {
        Ok((h, widest))
    } else {
        Err(PldFailure::Unresolved)
    }
}

/// The circular window and the bounds on what lies outside it.
struct Window {
    start: i64,
    n: usize,
    /// P(L ≥ top of the window) of the discrete composed distribution.
    above: f64,
    /// Bound on the wrapped mass from below the window, weighted as δ weighs it.
    wrapped_below: f64,
    /// Bound on the tilted mass above the window (it wraps to the bottom).
    tilted_above: f64,
}

/// The window for tilt λ at δ; None where any bound is not a finite
/// number: the caller fails closed.
fn window(m: &Model, lambda: f64, delta: f64) -> Option<Window> {
    let h = m.h;
    let k = |l: f64| m.k(l).0;
    let rough = |l: f64| m.approximate_k(l).0;
    let rough_lambda = rough(lambda);
    let (_, lambda_hi) = chernoff(rough, (TAIL_SHARE * delta).ln());
    // The tail bound itself is taken on the exact cumulants: the summary
    // understates the topmost losses, which decide it at large λ.
    let top_for_tail = (k(lambda_hi) - (TAIL_SHARE * delta).ln()) / lambda_hi;
    let (top_for_tilt, shift) = chernoff(|d| rough(lambda + d) - rough_lambda, (1e-12f64).ln());
    let top = top_for_tail.max(top_for_tilt).max(64.0 * h);
    // The bottom: below it the tilted mass is negligible, and what wraps
    // from there to the top is weighted by at most e^{−λ·width}; where
    // that weight is not small enough, down to where the plain mass is.
    let (tilted_bottom, _) = chernoff(|d| rough(lambda - d) - rough_lambda, (1e-30f64).ln());
    let tilted_bottom = (-tilted_bottom).min(top - 64.0 * h);
    let (bottom, nu) = if lambda * (top - tilted_bottom) >= (1e6 / delta).ln() {
        (tilted_bottom, 0.0)
    } else {
        let (b, nu) = chernoff(|v| rough(-v), (1e-6 * delta).ln());
        ((-b).min(tilted_bottom), nu)
    };
    if !(lambda.is_finite() && lambda >= 0.0 && bottom.is_finite() && top.is_finite() && bottom < top) {
        return None;
    }
    let points = (top - bottom) / h + 2.0;
    if !(points < 1e15 && (bottom / h).abs() < 1e15) {
        return None;
    }
    let start = (bottom / h).floor() as i64;
    let n = (points.ceil() as usize).next_power_of_two();
    let top_eff = (start + n as i64) as f64 * h;
    let margin = 1.0 + 1e-6;
    let above = ((k(lambda_hi) - lambda_hi * top_eff).exp() * margin).min(1.0);
    let below_mass = if nu > 0.0 { (k(-nu) + nu * start as f64 * h).exp().min(1.0) } else { 1.0 };
    let wrapped_below = below_mass * (-lambda * n as f64 * h).exp() * margin;
    let tilted_above = ((k(lambda + shift) - k(lambda) - shift * top_eff).exp() * margin).min(1.0);
    [above, wrapped_below, tilted_above]
        .iter()
        .all(|b| b.is_finite() && *b >= 0.0)
        .then_some(Window { start, n, above, wrapped_below, tilted_above })
}

/// One direction and one rounding of the computation, at one δ scale.
struct Side {
    model: Model,
    rounding: Rounding,
    /// The Chernoff tilt for the δ the side was built for, and its window
    /// (which fits [`MAX_POINTS`]).
    chernoff_tilt: f64,
    chernoff_window: Window,
}

impl Side {
    fn new(segments: &[Segment], direction: Direction, rounding: Rounding, delta: f64) -> Result<Side, PldFailure> {
        let steps: f64 = segments.iter().map(|s| s.steps as f64).sum();
        let tail = TAIL_SHARE * delta / steps;
        let (mut h, widest) = grid(segments, direction, tail)?;
        let mut refined = false;
        for _ in 0..ATTEMPTS {
            let model = Model::new(segments, direction, rounding, h, tail);
            if rounding == Rounding::Up && model.infinity >= delta {
                return Err(PldFailure::Unbounded);
            }
            let lambda = chernoff(|l| model.approximate_k(l).0, delta.ln()).1;
            let w = window(&model, lambda, delta).ok_or(PldFailure::Unresolved)?;
            if w.n <= MAX_POINTS / 64 && !refined && h / 8.0 >= widest / MAX_STEP_POINTS as f64 {
                // A small problem: a finer grid costs little and tightens.
                refined = true;
                h /= 8.0;
                continue;
            }
            if w.n <= MAX_POINTS {
                return Ok(Side { model, rounding, chernoff_tilt: lambda, chernoff_window: w });
            }
            h *= w.n as f64 / MAX_POINTS as f64 * 1.01;
        }
        Err(PldFailure::Unresolved)
    }

    /// The certified ε at δ: the Chernoff tilt, then, while the rounding term
    /// is not negligible, a tilt centred on the last estimate (or a flatter
    /// one); the smallest certified value wins.
    fn epsilon(&self, delta: f64) -> Result<f64, PldFailure> {
        let mut best: Option<f64> = None;
        let mut retilt = None;
        for _ in 0..TILTS {
            let (lambda, w) = match retilt {
                None => (self.chernoff_tilt, &self.chernoff_window),
                Some((lambda, ref w)) => (lambda, w),
            };
            let Some(tilted) = self.compose(lambda, w) else { break };
            let (eps, rounding_share, estimate) = self.solve(&tilted, lambda, w, delta);
            if let Some(eps) = eps {
                best = Some(match (best, self.rounding) {
                    (None, _) => eps,
                    (Some(b), Rounding::Up) => b.min(eps),
                    (Some(b), Rounding::Down) => b.max(eps),
                });
                if rounding_share < 1e-3 {
                    break;
                }
            }
            // Centre the next tilt on the estimate. Where the rounding term
            // dominated and the estimate did not move the tilt down, the
            // tilt was too steep for the FFT (its noise, untilted, swamped
            // the estimate too): no tilt, whose estimate is free of that noise.
            let Some(estimate) = estimate else { break };
            let centred = self.model.saddle(estimate);
            let lambda = if lambda > 0.0 && centred >= 0.5 * lambda && rounding_share > 0.5 {
                0.0
            } else if (centred - lambda).abs() <= 0.1 * lambda || centred == lambda {
                break;
            } else {
                centred
            };
            let Some(w) = window(&self.model, lambda, delta).filter(|w| w.n <= MAX_POINTS) else { break };
            retilt = Some((lambda, w));
        }
        best.ok_or(PldFailure::Unresolved)
    }

    /// The certified δ at ε (upper rounding only).
    fn delta(&self, epsilon: f64) -> Result<f64, PldFailure> {
        let lambda = self.model.saddle(epsilon);
        let scale = 1e-300f64.max((self.model.approximate_k(lambda).0 - lambda * epsilon).exp().min(1.0));
        let w = window(&self.model, lambda, scale).filter(|w| w.n <= MAX_POINTS).ok_or(PldFailure::Unresolved)?;
        let tilted = self.compose(lambda, &w).ok_or(PldFailure::Unresolved)?;
        let curve = Curve::new(&tilted, lambda, &w, self.model.h, self.model.infinity, Rounding::Up);
        let mut total = 0.0;
        let mut weighted = 0.0;
        for (j, &c) in curve.masses.iter().enumerate() {
            let loss = (w.start + j as i64) as f64 * self.model.h;
            if loss > epsilon {
                total += c;
                weighted += c * -(epsilon - loss).exp_m1();
            }
        }
        let bound = curve.bound(weighted, total, curve.rounding_term(epsilon));
        if bound.is_finite() { Ok(bound) } else { Err(PldFailure::Unresolved) }
    }

    /// The tilted composition on `w`; None if anything in it is not finite.
    fn compose(&self, lambda: f64, w: &Window) -> Option<Tilted> {
        let parts: Vec<(&StepPmf, u64)> = self.model.parts.iter().map(|(p, t)| (p, *t)).collect();
        let tilted = fourier::compose(&parts, self.model.h, lambda, w.start, w.n);
        (tilted.log_scale.is_finite() && tilted.error.is_finite() && tilted.values.iter().all(|v| v.is_finite())).then_some(tilted)
    }

    /// Solves the certified δ(ε) = δ on the window. Returns that ε (if the
    /// window certifies one), the share of δ that the rounding-error term
    /// takes there, and the ε at which the window's δ(ε) alone (without that
    /// term) meets δ: the estimate a better tilt is centred on.
    fn solve(&self, tilted: &Tilted, lambda: f64, w: &Window, delta: f64) -> (Option<f64>, f64, Option<f64>) {
        let curve = Curve::new(tilted, lambda, w, self.model.h, self.model.infinity, self.rounding);
        let eps = self.crossing(&curve, w, delta, |eps| curve.rounding_term(eps));
        let estimate = self.crossing(&curve, w, delta, |_| 0.0);
        (eps, eps.map_or(f64::INFINITY, |e| curve.rounding_term(e) / delta), estimate)
    }

    /// The ε where `curve`'s δ(ε), with `rounding` as its rounding term,
    /// meets δ: the smallest such for an upper bound, the largest where it
    /// still exceeds δ for a lower one.
    fn crossing(&self, curve: &Curve, w: &Window, delta: f64, rounding: impl Fn(f64) -> f64) -> Option<f64> {
        let h = self.model.h;
        let n = curve.masses.len();
        let shrink = (-h).exp();
        // δ(ε) for ε in [ℓ_{j−1}, ℓ_j] is s1 − e^{ε−ℓ_j}·s2 with s1 = Σ_{k≥j} c_k
        // and s2 = Σ_{k≥j} c_k e^{ℓ_j−ℓ_k}: both sums of positive terms, no overflow.
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for j in (0..n).rev() {
            let loss = (w.start + j as i64) as f64 * h;
            s2 = s2 * shrink + curve.masses[j];
            s1 += curve.masses[j];
            let at = |eps: f64| curve.bound(s1 - (eps - loss).exp() * s2, s1, rounding(eps));
            if j == n - 1 && self.rounding == Rounding::Up && at(loss) > delta {
                // Even the top of the window is not enough: no certified value here.
                return None;
            }
            // Mass below the window is not in s1: no ε below its bottom is answered.
            let lower = (loss - h).max(0.0).max(w.start as f64 * h);
            if lower < loss && at(lower) > delta {
                let (mut a, mut b) = (lower, loss);
                for _ in 0..100 {
                    let mid = 0.5 * (a + b);
                    if mid <= a || mid >= b {
                        break;
                    }
                    if at(mid) > delta {
                        a = mid;
                    } else {
                        b = mid;
                    }
                }
                // Upper bounds take the end where δ is met; lower bounds the end where it is not.
                let eps = if self.rounding == Rounding::Up { b } else { a };
                return eps.is_finite().then_some(eps);
            }
            if loss - h <= 0.0 {
                return Some(0.0);
            }
        }
        // δ is met at the window's bottom already: a valid upper bound (if
        // not the smallest); a lower bound learns nothing below it.
        match self.rounding {
            Rounding::Up => Some((w.start as f64 * h).max(0.0)),
            Rounding::Down => Some(0.0),
        }
    }
}

/// The untilted masses of a composed window and the terms that turn their
/// δ(ε) into a certified bound.
struct Curve {
    masses: Vec<f64>,
    rounding: Rounding,
    /// Relative rounding error of the masses and the sums over them.
    relative: f64,
    /// Added (upper) or subtracted (lower) whatever ε is.
    fixed: f64,
    /// Times e^{log C − λε}: the L1 error of the tilted values (and, for the
    /// lower bound, the tilted mass wrapped from above).
    coefficient: f64,
    log_scale: f64,
    lambda: f64,
}

impl Curve {
    fn new(tilted: &Tilted, lambda: f64, w: &Window, h: f64, infinity: f64, rounding: Rounding) -> Curve {
        let u = UNIT_ROUNDOFF;
        let masses: Vec<f64> = tilted
            .values
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                if v > 0.0 {
                    (tilted.log_scale - lambda * (w.start + k as i64) as f64 * h + v.ln()).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let reach = (w.start as f64 * h).abs().max((w.start + w.n as i64) as f64 * h);
        let relative = 8.0 * u * (tilted.log_scale.abs() + lambda * reach + 760.0) + 4.0 * w.n as f64 * u;
        let (fixed, coefficient) = match rounding {
            Rounding::Up => (infinity + w.above, tilted.error),
            Rounding::Down => (w.wrapped_below, tilted.error + w.tilted_above),
        };
        Curve { masses, rounding, relative, fixed, coefficient, log_scale: tilted.log_scale, lambda }
    }

    fn rounding_term(&self, epsilon: f64) -> f64 {
        self.coefficient * (self.log_scale - self.lambda * epsilon).exp()
    }

    /// The certified δ from the window's value `value` = Σ_{ℓ>ε} c(1 − e^{ε−ℓ}),
    /// its mass `mass` = Σ_{ℓ>ε} c and the rounding term at that ε.
    fn bound(&self, value: f64, mass: f64, rounding: f64) -> f64 {
        let slack = self.relative * mass;
        // A NaN anywhere must never read as "δ is met": it reads as δ = ∞
        // for the upper bound and as δ = −∞ (nothing learnt) for the lower.
        match self.rounding {
            Rounding::Up => {
                let b = value.max(0.0) + slack + self.fixed + rounding;
                if b.is_nan() { f64::INFINITY } else { b }
            }
            Rounding::Down => {
                let b = value - slack - self.fixed - rounding;
                if b.is_nan() { f64::NEG_INFINITY } else { b }
            }
        }
    }
}
