//! Privacy-loss-distribution accounting of the Poisson-subsampled Gaussian
//! mechanism under add/remove-one neighbouring, as a certified upper bound.
//!
//! Each step's privacy-loss distribution is discretised on a grid of width
//! `h` with the "connect-the-dots" rule (Doroshenko, Ghazi, Kamath, Kumar,
//! Manurangsi 2022): the mass of every loss value ℓ between two grid points
//! is split between them so that both the mass and E[e^{−ℓ}] are kept. The
//! hockey-stick function (1 − e^{ε−ℓ})₊ is convex in e^{−ℓ}, so this is a
//! mean-preserving spread and every δ(ε) can only grow: the discrete pair
//! dominates the real one, and domination survives composition. Losses
//! beyond the grid's upper end go to an infinite-loss mass counted fully in
//! δ; losses below its lower end are moved up to it. Both only increase δ.
//!
//! Compositions are FFT convolutions. Rounding makes them inexact, so every
//! distribution carries a bound on its L1 error (from the a-priori error
//! bound of the FFT, Higham, "Accuracy and Stability of Numerical
//! Algorithms", Thm. 24.2, with a safety factor of 10), and that bound is
//! added to δ. Tails below 1e-15 of mass are cut after each convolution,
//! pessimistically as above.
//!
//! The two directions of add/remove neighbouring have different loss
//! distributions; ε is the larger of the two.

use super::special::{normal_interval, normal_pdf};
use super::Segment;
use rustfft::{num_complex::Complex, FftPlanner};

/// Loss grid width. Connect-the-dots errors are of second order in `h`.
pub const GRID: f64 = 1e-4;
/// Mass cut from each tail after each convolution (pessimistically).
const TAIL: f64 = 1e-15;
const UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// A discrete privacy-loss distribution: `probs[i]` is the mass at loss
/// `(offset + i)·h`.
#[derive(Debug, Clone)]
pub(super) struct Pld {
    h: f64,
    offset: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
    /// An upper bound on the L1 distance between `probs` and the exact
    /// discrete distribution it stands for.
    error: f64,
}

/// The direction of the neighbouring relation a distribution describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// The output distribution with the unit present, against it absent:
    /// P = (1−q)N(0,σ²) + qN(1,σ²), Q = N(0,σ²).
    Remove,
    /// The reverse: P = N(0,σ²), Q = (1−q)N(0,σ²) + qN(1,σ²).
    Add,
}

/// 16-point Gauss–Legendre nodes and weights on [-1, 1].
const GL_NODES: [f64; 8] = [
    0.0950125098376374, 0.2816035507792589, 0.4580167776572274, 0.6178762444026438,
    0.7554044083550030, 0.8656312023878318, 0.9445750230732326, 0.9894009349916499,
];
const GL_WEIGHTS: [f64; 8] = [
    0.1894506104550685, 0.1826034150449236, 0.1691565193950025, 0.1495959888165767,
    0.1246289712555339, 0.0951585116824928, 0.0622535239386479, 0.0271524594117541,
];

fn gauss_legendre(a: f64, b: f64, f: &impl Fn(f64) -> f64) -> f64 {
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * GL_NODES.iter().zip(GL_WEIGHTS).map(|(&x, w)| w * (f(mid - half * x) + f(mid + half * x))).sum::<f64>()
}

/// One step of the subsampled Gaussian, in one direction, as a function of
/// the noise sample x (noise multiplier σ, sensitivity 1).
struct Step {
    q: f64,
    sigma: f64,
    direction: Direction,
}

impl Step {
    /// log((1−q) + q·e^{(2x−1)/(2σ²)}): the log-likelihood ratio of the
    /// mixture to N(0, σ²).
    fn log_ratio(&self, x: f64) -> f64 {
        let t = (2.0 * x - 1.0) / (2.0 * self.sigma * self.sigma);
        if t > 30.0 {
            t + self.q.ln() + ((1.0 - self.q) / self.q * (-t).exp()).ln_1p()
        } else {
            (self.q * t.exp_m1()).ln_1p()
        }
    }

    /// The x at which log_ratio equals `r` (for r > log(1−q)).
    fn x_of_log_ratio(&self, r: f64) -> f64 {
        // e^r = 1 − q + q e^t  ⇒  t = log(1 + (e^r − 1)/q); for large r the
        // same as r + log(1 − (1−q)e^{−r}) − log q, which does not overflow.
        let t = if r > 30.0 {
            r + (-(1.0 - self.q) * (-r).exp()).ln_1p() - self.q.ln()
        } else {
            (r.exp_m1() / self.q).ln_1p()
        };
        self.sigma * self.sigma * t + 0.5
    }

    /// The privacy loss at x, and the density of the distribution it is taken under.
    fn loss_and_density(&self, x: f64) -> (f64, f64) {
        let s = self.sigma;
        match self.direction {
            Direction::Remove => {
                let p = (1.0 - self.q) * normal_pdf(x / s) / s + self.q * normal_pdf((x - 1.0) / s) / s;
                (self.log_ratio(x), p)
            }
            Direction::Add => (-self.log_ratio(x), normal_pdf(x / s) / s),
        }
    }

    /// P(a < x ≤ b) and Q(a < x ≤ b) in closed form.
    fn masses(&self, a: f64, b: f64) -> (f64, f64) {
        let s = self.sigma;
        let zero = normal_interval(a / s, b / s);
        let mixture = (1.0 - self.q) * zero + self.q * normal_interval((a - 1.0) / s, (b - 1.0) / s);
        match self.direction {
            Direction::Remove => (mixture, zero),
            Direction::Add => (zero, mixture),
        }
    }

    /// P(loss < l) under the distribution the loss is taken under.
    fn tail_below(&self, l: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.masses(f64::NEG_INFINITY, self.x_of(l)).0,
            Direction::Add => self.masses(self.x_of(-l), f64::INFINITY).0,
        }
    }

    /// P(loss > l).
    fn tail_above(&self, l: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.masses(self.x_of(l), f64::INFINITY).0,
            Direction::Add => self.masses(f64::NEG_INFINITY, self.x_of(-l)).0,
        }
    }

    /// The x where log_ratio = r; −∞ at or below its floor log(1 − q).
    fn x_of(&self, r: f64) -> f64 {
        if r <= (-self.q).ln_1p() {
            f64::NEG_INFINITY
        } else {
            self.x_of_log_ratio(r)
        }
    }

    /// The loss range [lo, hi] outside which less than `TAIL` mass lies.
    /// Remove losses are bounded below by log(1−q), Add losses above by
    /// −log(1−q) (unless q = 1); the open ends are searched.
    fn loss_range(&self) -> (f64, f64) {
        let floor = (-self.q).ln_1p();
        let lo = if self.direction == Direction::Remove && floor.is_finite() {
            floor
        } else {
            let mut l = -1.0f64;
            while self.tail_below(l) > TAIL {
                l *= 1.5;
            }
            l
        };
        let hi = if self.direction == Direction::Add && floor.is_finite() {
            -floor
        } else {
            let mut l = 1.0f64;
            while self.tail_above(l) > TAIL {
                l *= 1.5;
            }
            l
        };
        (lo, hi)
    }

    fn loss_width(&self) -> f64 {
        let (lo, hi) = self.loss_range();
        hi - lo
    }

    /// The x interval where the loss lies in [e0, e1].
    fn x_interval(&self, e0: f64, e1: f64) -> (f64, f64) {
        match self.direction {
            Direction::Remove => (self.x_of(e0), self.x_of(e1)),
            Direction::Add => (self.x_of(-e1), self.x_of(-e0)),
        }
    }
}

impl Pld {
    /// The discretised loss distribution of one step.
    pub(super) fn single_step(q: f64, sigma: f64, direction: Direction, h: f64) -> Pld {
        let step = Step { q, sigma, direction };
        // The open end of the range is cut where the remaining mass is below TAIL.
        let (lo, hi) = step.loss_range();
        let (k_lo, k_hi) = ((lo / h).floor() as i64, (hi / h).ceil() as i64);
        // Losses below the grid are moved up onto its first point; losses
        // above it become infinite loss.
        let below = step.tail_below(k_lo as f64 * h);
        let infinity_mass = step.tail_above(k_hi as f64 * h);
        let n = (k_hi - k_lo + 1) as usize;
        let mut probs = vec![0.0; n];
        for k in k_lo..k_hi {
            let (e0, e1) = (k as f64 * h, (k + 1) as f64 * h);
            let (xa, xb) = step.x_interval(e0, e1);
            // e^{−e0} − e^{−e1}, without cancellation.
            let span = -(-e0).exp() * (-h).exp_m1();
            let (low, high) = if xa.is_finite() && xb.is_finite() {
                // Share of each loss value going to e0: (e^{−ℓ} − e^{−e1}) / span.
                let to_low = |x: f64| {
                    let (l, d) = step.loss_and_density(x);
                    d * (-e1).exp() * (e1 - l).max(0.0).exp_m1() / span
                };
                let to_high = |x: f64| {
                    let (l, d) = step.loss_and_density(x);
                    d * (-l).exp() * (l - e0).max(0.0).exp_m1() / span
                };
                // Wide intervals (far tails) are split so the quadrature stays accurate.
                let pieces = (((xb - xa) / (0.25 * sigma)).ceil() as usize).clamp(1, 64);
                let w = (xb - xa) / pieces as f64;
                (0..pieces).fold((0.0, 0.0), |(lo, hi), i| {
                    let (a, b) = (xa + i as f64 * w, xa + (i + 1) as f64 * w);
                    (lo + gauss_legendre(a, b, &to_low), hi + gauss_legendre(a, b, &to_high))
                })
            } else {
                // The interval reaching x = −∞ carries a negligible far-tail
                // mass: split it from its closed-form P and Q masses.
                let (p, q_mass) = step.masses(xa, xb);
                let low = ((q_mass - p * (-e1).exp()) / span).clamp(0.0, p);
                (low, p - low)
            };
            probs[(k - k_lo) as usize] += low;
            probs[(k - k_lo + 1) as usize] += high;
        }
        probs[0] += below;
        // Error of the masses: each is a sum of positive quadrature terms, so
        // its relative rounding error is a small multiple of the unit
        // roundoff (64u is the margin taken); the discrepancy of the total
        // from the exact total 1 is added as well, to cover quadrature error.
        let total: f64 = probs.iter().sum::<f64>() + infinity_mass;
        let error = (1.0 - total).abs() + 64.0 * UNIT_ROUNDOFF * total;
        Pld { h, offset: k_lo, probs, infinity_mass, error }.trimmed()
    }

    /// Drops tails below `TAIL` pessimistically: low tail mass moves up to
    /// the first kept point, high tail mass becomes infinite loss.
    fn trimmed(mut self) -> Pld {
        for p in &mut self.probs {
            if *p < 0.0 {
                *p = 0.0;
            }
        }
        let mut low = 0;
        let mut low_mass = 0.0;
        while low + 1 < self.probs.len() && low_mass + self.probs[low] < TAIL {
            low_mass += self.probs[low];
            low += 1;
        }
        let mut high = self.probs.len();
        let mut high_mass = 0.0;
        while high > low + 1 && high_mass + self.probs[high - 1] < TAIL {
            high_mass += self.probs[high - 1];
            high -= 1;
        }
        self.probs.truncate(high);
        self.probs.drain(..low);
        self.probs[0] += low_mass;
        self.offset += low as i64;
        self.infinity_mass += high_mass;
        self
    }

    /// The distribution of the sum of independent losses from `self` and `other`.
    pub(super) fn compose(&self, other: &Pld, planner: &mut FftPlanner<f64>) -> Pld {
        debug_assert_eq!(self.h, other.h);
        let n = self.probs.len() + other.probs.len() - 1;
        let size = n.next_power_of_two();
        let fft = planner.plan_fft_forward(size);
        let ifft = planner.plan_fft_inverse(size);
        let spectrum = |p: &[f64]| {
            let mut v: Vec<Complex<f64>> = p.iter().map(|&x| Complex::new(x, 0.0)).collect();
            v.resize(size, Complex::new(0.0, 0.0));
            fft.process(&mut v);
            v
        };
        let mut a = spectrum(&self.probs);
        let b = spectrum(&other.probs);
        for (x, y) in a.iter_mut().zip(&b) {
            *x *= y;
        }
        ifft.process(&mut a);
        let probs: Vec<f64> = a[..n].iter().map(|c| c.re / size as f64).collect();
        let l1 = |p: &[f64]| p.iter().sum::<f64>();
        let l2 = |p: &[f64]| p.iter().map(|x| x * x).sum::<f64>().sqrt();
        let eta = 6.0 * UNIT_ROUNDOFF;
        let log_n = (size as f64).log2();
        let fft_error = 2.0
            * (size as f64).sqrt()
            * 3.0
            * log_n
            * eta
            * (l1(&self.probs) * l2(&other.probs) + l2(&self.probs) * l1(&other.probs));
        // A negative entry is pure rounding; zeroing it moves the result
        // towards the exact one, so the error bound still holds.
        let mass_a = l1(&self.probs) + self.infinity_mass;
        let mass_b = l1(&other.probs) + other.infinity_mass;
        Pld {
            h: self.h,
            offset: self.offset + other.offset,
            probs,
            // Infinite loss plus anything is infinite loss.
            infinity_mass: self.infinity_mass * mass_b + other.infinity_mass * mass_a
                - self.infinity_mass * other.infinity_mass,
            error: self.error * mass_b.max(1.0) + other.error * mass_a.max(1.0) + self.error * other.error + fft_error,
        }
        .trimmed()
    }

    /// The `times`-fold composition of `self`, by repeated squaring.
    pub(super) fn self_compose(&self, times: u64, planner: &mut FftPlanner<f64>) -> Pld {
        let mut result: Option<Pld> = None;
        let mut power = self.clone();
        let mut t = times;
        loop {
            if t & 1 == 1 {
                result = Some(match result {
                    None => power.clone(),
                    Some(r) => r.compose(&power, planner),
                });
            }
            t >>= 1;
            if t == 0 {
                break;
            }
            power = power.compose(&power, planner);
        }
        result.expect("times ≥ 1")
    }

    /// δ(ε): the hockey-stick divergence bound at ε, including the
    /// infinite-loss mass and the numerical error bound.
    pub(super) fn delta(&self, epsilon: f64) -> f64 {
        let tail: f64 = self
            .probs
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let loss = (self.offset + i as i64) as f64 * self.h;
                if loss > epsilon { -p * (epsilon - loss).exp_m1() } else { 0.0 }
            })
            .sum();
        (tail + self.infinity_mass + self.error).min(1.0)
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta`, or `None` if no finite ε
    /// reaches it (the infinite-loss mass and error bound alone exceed δ).
    pub(super) fn epsilon(&self, delta: f64) -> Option<f64> {
        let fixed = self.infinity_mass + self.error;
        if fixed >= delta {
            return None;
        }
        // For ε in [loss_{j−1}, loss_j): δ(ε) = fixed + S1 − e^ε·S2, with
        // S1 = Σ_{i≥j} p_i and S2 = Σ_{i≥j} p_i e^{−loss_i}. Walk j down
        // from the top until δ at the lower end of the segment exceeds δ.
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for j in (0..self.probs.len()).rev() {
            let loss_j = (self.offset + j as i64) as f64 * self.h;
            s1 += self.probs[j];
            s2 += self.probs[j] * (-loss_j).exp();
            let lower = loss_j - self.h;
            let delta_at_lower = fixed + s1 - lower.exp() * s2;
            if delta_at_lower > delta {
                // The crossing lies in [lower, loss_j], where δ(ε) is fixed + s1 − e^ε s2.
                let eps = ((fixed + s1 - delta) / s2).ln();
                return Some(eps.clamp(lower, loss_j).max(0.0));
            }
            if j == 0 {
                // Below the lowest loss every term counts: solve the same
                // formula without a lower limit.
                let excess = fixed + s1 - delta;
                return Some(if excess > 0.0 && s2 > 0.0 { (excess / s2).ln().max(0.0) } else { 0.0 });
            }
        }
        Some(0.0)
    }
}

/// The largest number of grid points a distribution may have (the FFTs
/// then need at most 2^23 complex values, 128 MiB).
const MAX_POINTS: f64 = (1u64 << 21) as f64;

/// Why the PLD accountant gives no ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PldFailure {
    /// The infinite-loss mass and error bound alone exceed δ: no finite ε.
    Unbounded,
    /// The noise is so low that one step's losses do not fit the grid.
    TooWide,
}

/// ε of `segments` at δ under add/remove neighbouring.
pub fn epsilon(segments: &[Segment], delta: f64) -> Result<f64, PldFailure> {
    let mut planner = FftPlanner::new();
    let mut worst = 0.0f64;
    for direction in [Direction::Remove, Direction::Add] {
        let pld = composed(segments, direction, &mut planner)?;
        worst = worst.max(pld.epsilon(delta).ok_or(PldFailure::Unbounded)?);
    }
    Ok(worst)
}

/// δ of `segments` at ε under add/remove neighbouring.
pub fn delta(segments: &[Segment], epsilon: f64) -> Result<f64, PldFailure> {
    let mut planner = FftPlanner::new();
    let mut worst = 0.0f64;
    for direction in [Direction::Remove, Direction::Add] {
        worst = worst.max(composed(segments, direction, &mut planner)?.delta(epsilon));
    }
    Ok(worst)
}

impl Pld {
    fn mean_and_variance(&self) -> (f64, f64) {
        let total: f64 = self.probs.iter().sum();
        let loss = |i: usize| (self.offset + i as i64) as f64 * self.h;
        let mean = self.probs.iter().enumerate().map(|(i, p)| p * loss(i)).sum::<f64>() / total;
        let var = self.probs.iter().enumerate().map(|(i, p)| p * (loss(i) - mean).powi(2)).sum::<f64>() / total;
        (mean, var)
    }

    fn width(&self) -> f64 {
        self.probs.len() as f64 * self.h
    }
}

/// The grid width for `segments`: [`GRID`], unless the composed
/// distributions would not fit in [`MAX_POINTS`]; then a coarser grid, which
/// is looser but still an upper bound. Estimated from each segment's
/// single-step mean and variance (the composed loss concentrates within a
/// few standard deviations of T·mean; the trimming keeps it there).
fn grid_for(segments: &[Segment], direction: Direction) -> Result<f64, PldFailure> {
    let mut widest = 0.0f64;
    for s in segments {
        let step = Step { q: s.sampling_rate, sigma: s.noise_multiplier, direction };
        if step.loss_width() / 1e-2 > MAX_POINTS {
            return Err(PldFailure::TooWide);
        }
        let coarse = Pld::single_step(s.sampling_rate, s.noise_multiplier, direction, 1e-2);
        let (mean, var) = coarse.mean_and_variance();
        let t = s.steps as f64;
        widest += (t * mean).abs() + 20.0 * (t * var).sqrt() + 2.0 * coarse.width();
    }
    Ok(GRID.max(widest / (MAX_POINTS / 2.0)))
}

fn composed(segments: &[Segment], direction: Direction, planner: &mut FftPlanner<f64>) -> Result<Pld, PldFailure> {
    let h = grid_for(segments, direction)?;
    let mut total: Option<Pld> = None;
    for s in segments {
        let part = Pld::single_step(s.sampling_rate, s.noise_multiplier, direction, h).self_compose(s.steps, planner);
        total = Some(match total {
            None => part,
            Some(t) => t.compose(&part, planner),
        });
    }
    Ok(total.expect("at least one segment"))
}
