//! One step of the Poisson-subsampled Gaussian: its privacy loss as a
//! function of the noise sample, and its discretisation on a loss grid,
//! rounded up (a dominating distribution) or down (a dominated one).

use super::super::special::{log_add, log_sub, normal_interval, normal_pdf, normal_sf};

/// Relative error allowed on every computed bin mass, for quadrature and
/// rounding (the argument is in `docs/privacy-accounting.md`). Upper
/// distributions inflate each mass by it and lower ones deflate it, so that
/// each is an elementwise bound on the exact discretisation.
pub(super) const MASS_SLACK: f64 = 1e-12;

/// The direction of the neighbouring relation a distribution describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// The output distribution with the unit present, against it absent:
    /// P = (1−q)N(0,σ²) + qN(1,σ²), Q = N(0,σ²).
    Remove,
    /// The reverse: P = N(0,σ²), Q = (1−q)N(0,σ²) + qN(1,σ²).
    Add,
}

/// Which way each loss is moved onto the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rounding {
    /// Connect-the-dots (Doroshenko et al. 2022): each loss's mass is split
    /// between its two grid neighbours keeping the mass and E[e^{−ℓ}]; the
    /// top tail becomes infinite loss. δ(ε) can only grow.
    Up,
    /// Each loss moves down to the grid point below it; the top tail sits
    /// on the top point and the bottom tail is dropped. δ(ε) can only shrink.
    Down,
}

/// 16-point Gauss–Legendre nodes and weights on [-1, 1] (symmetric halves).
const GL16_NODES: [f64; 8] = [
    0.0950125098376374, 0.2816035507792589, 0.4580167776572274, 0.6178762444026438,
    0.7554044083550030, 0.8656312023878318, 0.9445750230732326, 0.9894009349916499,
];
const GL16_WEIGHTS: [f64; 8] = [
    0.1894506104550685, 0.1826034150449236, 0.1691565193950025, 0.1495959888165767,
    0.1246289712555339, 0.0951585116824928, 0.0622535239386479, 0.0271524594117541,
];
/// 4-point Gauss–Legendre, for pieces far shorter than the integrand's scale.
const GL4_NODES: [f64; 2] = [0.3399810435848563, 0.8611363115940526];
const GL4_WEIGHTS: [f64; 2] = [0.6521451548625461, 0.3478548451374538];

/// One step, in one direction, as a function of the noise sample x (noise
/// multiplier σ, sensitivity 1).
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    pub(super) q: f64,
    pub(super) sigma: f64,
    pub(super) direction: Direction,
}

impl Step {
    /// log((1−q) + q·e^{(2x−1)/(2σ²)}): the log-likelihood ratio of the
    /// mixture to N(0, σ²).
    fn log_ratio(&self, x: f64) -> f64 {
        let t = (2.0 * x - 1.0) / (2.0 * self.sigma * self.sigma);
        if t > 30.0 {
            t + self.q.ln() + ((1.0 - self.q) / self.q * (-t).exp()).ln_1p()
        } else if t < -30.0 {
            // e^t − 1 rounds to −1 here: sum the two terms in log space (at q = 1 the loss is t).
            log_add((-self.q).ln_1p(), self.q.ln() + t)
        } else {
            (self.q * t.exp_m1()).ln_1p()
        }
    }

    /// The x at which log_ratio equals `r`; −∞ at or below its floor log(1 − q).
    fn x_of(&self, r: f64) -> f64 {
        if r <= (-self.q).ln_1p() {
            return f64::NEG_INFINITY;
        }
        // e^r = 1 − q + q e^t  ⇒  t = log(1 + (e^r − 1)/q); for large r the
        // same as r + log(1 − (1−q)e^{−r}) − log q, which does not overflow.
        let t = if r > 30.0 {
            r + (-(1.0 - self.q) * (-r).exp()).ln_1p() - self.q.ln()
        } else if r < -30.0 {
            // e^r − 1 rounds to −1 here: e^t = (e^r − (1 − q))/q in log space.
            log_sub(r, (-self.q).ln_1p()) - self.q.ln()
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

    /// P(a < x ≤ b) under the distribution the loss is taken under, in closed form.
    fn mass(&self, a: f64, b: f64) -> f64 {
        let s = self.sigma;
        let zero = normal_interval(a / s, b / s);
        match self.direction {
            Direction::Remove => (1.0 - self.q) * zero + self.q * normal_interval((a - 1.0) / s, (b - 1.0) / s),
            Direction::Add => zero,
        }
    }

    /// P(loss < l).
    fn tail_below(&self, l: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.mass(f64::NEG_INFINITY, self.x_of(l)),
            Direction::Add => self.mass(self.x_of(-l), f64::INFINITY),
        }
    }

    /// P(loss > l).
    fn tail_above(&self, l: f64) -> f64 {
        match self.direction {
            Direction::Remove => self.mass(self.x_of(l), f64::INFINITY),
            Direction::Add => self.mass(f64::NEG_INFINITY, self.x_of(-l)),
        }
    }

    /// The x interval where the loss lies in [e0, e1].
    fn x_interval(&self, e0: f64, e1: f64) -> (f64, f64) {
        match self.direction {
            Direction::Remove => (self.x_of(e0), self.x_of(e1)),
            Direction::Add => (self.x_of(-e1), self.x_of(-e0)),
        }
    }

    /// The loss range [lo, hi] outside which at most `tail` mass lies on
    /// each side. Remove losses are bounded below by log(1−q), Add losses
    /// above by −log(1−q) (unless q = 1); the open ends are searched.
    pub(super) fn loss_range(&self, tail: f64) -> (f64, f64) {
        let floor = (-self.q).ln_1p();
        let lo = if self.direction == Direction::Remove && floor.is_finite() {
            floor
        } else {
            let mut l = -1.0f64;
            while self.tail_below(l) > tail {
                l *= 1.5;
            }
            l
        };
        let hi = if self.direction == Direction::Add && floor.is_finite() {
            -floor
        } else {
            let mut l = 1.0f64;
            while self.tail_above(l) > tail {
                l *= 1.5;
            }
            l
        };
        (lo, hi)
    }

    /// The standard deviation of one step's loss (for sizing the grid
    /// only), by quadrature over x.
    pub(super) fn loss_sd(&self) -> f64 {
        let s = self.sigma;
        let (a, b) = (-14.0 * s, 1.0 + 14.0 * s);
        let pieces = 280;
        let w = (b - a) / pieces as f64;
        let moment = |f: &dyn Fn(f64) -> f64| -> f64 {
            (0..pieces)
                .map(|i| {
                    let lo = a + i as f64 * w;
                    gauss_legendre16(lo, lo + w, &|x| {
                        let (l, d) = self.loss_and_density(x);
                        d * f(l)
                    })
                })
                .sum()
        };
        let mean = moment(&|l| l);
        moment(&|l| (l - mean) * (l - mean)).max(0.0).sqrt()
    }

    /// How far x is from the mean of the density's components, for the
    /// quadrature's scale: from the dominant one where the other is below
    /// e^{−50} of it (its error is then negligible against the integral),
    /// else from the farther.
    fn component_distance(&self, x: f64) -> f64 {
        let (d0, d1) = (x.abs(), (x - 1.0).abs());
        if self.direction == Direction::Add {
            return d0;
        }
        let two_var = 2.0 * self.sigma * self.sigma;
        let log0 = (-self.q).ln_1p() - d0 * d0 / two_var;
        let log1 = self.q.ln() - d1 * d1 / two_var;
        if log0 > log1 + 50.0 {
            d0
        } else if log1 > log0 + 50.0 {
            d1
        } else {
            d0.max(d1)
        }
    }

    /// Splits the mass of x in [a, b] (where the loss lies in [e0, e0 + h])
    /// between the grid points e0 (first) and e0 + h (second), keeping the
    /// mass and E[e^{−ℓ}]. The integrands are positive, so the quadrature's
    /// rounding error is relative.
    fn split(&self, a: f64, b: f64, e0: f64, h: f64) -> (f64, f64) {
        let e1 = e0 + h;
        let denom = h.exp_m1();
        let down_denom = -(-h).exp_m1();
        let parts = |x: f64| -> (f64, f64) {
            let (l, d) = self.loss_and_density(x);
            // Share to e0: (e^{−ℓ} − e^{−e1})/(e^{−e0} − e^{−e1}) = expm1(e1−ℓ)/expm1(h);
            // share to e1: (e^{−e0} − e^{−ℓ})/(e^{−e0} − e^{−e1}).
            (d * (e1 - l).clamp(0.0, h).exp_m1() / denom, d * -(e0 - l).clamp(-h, 0.0).exp_m1() / down_denom)
        };
        let s = self.sigma;
        let mut low = 0.0;
        let mut high = 0.0;
        let mut x = a;
        while x < b {
            // The density changes on the scale σ/(1 + |x − μ|/σ) around
            // each component's mean μ: pieces a quarter of that.
            let reach = self.component_distance(x) + 0.25 * s;
            let scale = s / (1.0 + reach / s);
            let end = (x + 0.25 * scale).min(b);
            let (pl, ph) = if end - x <= 0.01 * scale {
                gauss_legendre_pair(x, end, &GL4_NODES, &GL4_WEIGHTS, &parts)
            } else {
                gauss_legendre_pair(x, end, &GL16_NODES, &GL16_WEIGHTS, &parts)
            };
            low += pl;
            high += ph;
            x = end;
        }
        (low, high)
    }
}

fn gauss_legendre16(a: f64, b: f64, f: &impl Fn(f64) -> f64) -> f64 {
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    half * GL16_NODES.iter().zip(GL16_WEIGHTS).map(|(&x, w)| w * (f(mid - half * x) + f(mid + half * x))).sum::<f64>()
}

fn gauss_legendre_pair(a: f64, b: f64, nodes: &[f64], weights: &[f64], f: &impl Fn(f64) -> (f64, f64)) -> (f64, f64) {
    let (mid, half) = ((a + b) / 2.0, (b - a) / 2.0);
    let (mut s0, mut s1) = (0.0, 0.0);
    for (&x, &w) in nodes.iter().zip(weights) {
        let (l0, h0) = f(mid - half * x);
        let (l1, h1) = f(mid + half * x);
        s0 += w * (l0 + l1);
        s1 += w * (h0 + h1);
    }
    (half * s0, half * s1)
}

/// A discrete loss distribution of one step: `e^{log_probs[i]}` is the mass
/// at loss `(offset + i)·h`, `infinity` the mass at +∞. Masses are kept as
/// logarithms: the tilt e^{λℓ} is applied in the exponent.
#[derive(Debug, Clone)]
pub(super) struct StepPmf {
    pub(super) offset: i64,
    pub(super) log_probs: Vec<f64>,
    pub(super) infinity: f64,
    /// (loss, ln mass) pairs, see [`summarise`]. Searches use it; every
    /// bound is computed on the exact masses.
    summary: Vec<(f64, f64)>,
}

/// Groups a one-step summary has in its core and on each side of it, at most.
const SUMMARY_GROUPS: usize = 4096;
/// Half-width of a summary's core, in standard deviations.
const SUMMARY_CORE_SDS: f64 = 64.0;

/// A short stand-in for a distribution on a long grid, in runs of
/// consecutive bins, each at its mean loss: its moment-generating function
/// is below the exact one only by second-order terms. The core, within
/// [`SUMMARY_CORE_SDS`] standard deviations of the mean, gets
/// [`SUMMARY_GROUPS`] runs of its own (single bins where the grid is its
/// usual few dozen bins per standard deviation: it is there that steep
/// tilts of bounded losses look), and so does each side beyond it.
fn summarise(probs: &[f64], offset: i64, h: f64) -> Vec<(f64, f64)> {
    let loss = |i: usize| (offset + i as i64) as f64 * h;
    let total: f64 = probs.iter().sum();
    let mean = probs.iter().enumerate().map(|(i, p)| p * loss(i)).sum::<f64>() / total;
    let sd = (probs.iter().enumerate().map(|(i, p)| p * (loss(i) - mean).powi(2)).sum::<f64>() / total).sqrt();
    let index = |l: f64| (((l - offset as f64 * h) / h).max(0.0) as usize).min(probs.len());
    let (core_start, core_end) = (index(mean - SUMMARY_CORE_SDS * sd), index(mean + SUMMARY_CORE_SDS * sd + h));
    let runs = |from: usize, to: usize| {
        let group = (to - from).div_ceil(SUMMARY_GROUPS).max(1);
        (from..to).step_by(group).map(move |g| (g, (g + group).min(to)))
    };
    runs(0, core_start)
        .chain(runs(core_start, core_end))
        .chain(runs(core_end, probs.len()))
        .filter_map(|(a, b)| {
            let mass: f64 = probs[a..b].iter().sum();
            let first: f64 = (a..b).map(|i| probs[i] * loss(i)).sum();
            (mass > 0.0).then(|| (first / mass, mass.ln()))
        })
        .collect()
}

impl StepPmf {
    /// `step` on the grid of width `h`, with at most `tail` mass beyond
    /// each end of the computed range, rounded as `rounding` says.
    pub(super) fn new(step: &Step, h: f64, tail: f64, rounding: Rounding) -> StepPmf {
        let (lo, hi) = step.loss_range(tail);
        let (k_lo, k_hi) = ((lo / h).floor() as i64, (hi / h).ceil() as i64);
        let below = step.tail_below(k_lo as f64 * h);
        let above = step.tail_above(k_hi as f64 * h);
        let n = (k_hi - k_lo + 1) as usize;
        let mut probs = vec![0.0; n];
        // Where x runs to −∞ (the bin holding the loss floor), the part
        // beyond `far` carries less than tail·1e-3 and goes up (or down) whole.
        let mut z = 8.0;
        while normal_sf(z) > tail * 1e-3 && z < 38.0 {
            z += 1.0;
        }
        let far = -z * step.sigma;
        for k in k_lo..k_hi {
            let e0 = k as f64 * h;
            let (mut xa, xb) = step.x_interval(e0, e0 + h);
            let mut unsplit = 0.0;
            if xa == f64::NEG_INFINITY {
                let cut = far.min(xb);
                unsplit = step.mass(f64::NEG_INFINITY, cut);
                xa = cut;
            }
            let (low, high) = if xb > xa { step.split(xa, xb, e0, h) } else { (0.0, 0.0) };
            let i = (k - k_lo) as usize;
            match rounding {
                Rounding::Up => {
                    probs[i] += low;
                    probs[i + 1] += high + unsplit;
                }
                Rounding::Down => probs[i] += low + high + unsplit,
            }
        }
        let infinity = match rounding {
            Rounding::Up => {
                probs[0] += below;
                above
            }
            Rounding::Down => {
                probs[n - 1] += above;
                0.0
            }
        };
        let factor = match rounding {
            Rounding::Up => 1.0 + MASS_SLACK,
            Rounding::Down => 1.0 - MASS_SLACK,
        };
        for p in &mut probs {
            *p = p.max(0.0) * factor;
        }
        let log_probs = probs.iter().map(|p| p.ln()).collect();
        let summary = summarise(&probs, k_lo, h);
        StepPmf { offset: k_lo, log_probs, infinity: infinity * factor, summary }
    }

    /// log Σ p_i e^{λ ℓ_i} over the finite part, and the tilted mean
    /// Σ ℓ_i p_i e^{λℓ_i} / Σ p_i e^{λℓ_i}.
    pub(super) fn log_mgf(&self, h: f64, lambda: f64) -> (f64, f64) {
        let offset = self.offset;
        log_mgf(self.log_probs.iter().enumerate().map(|(i, &lp)| ((offset + i as i64) as f64 * h, lp)), lambda)
    }

    /// [`StepPmf::log_mgf`] on the summary: for searches only.
    pub(super) fn approximate_log_mgf(&self, lambda: f64) -> (f64, f64) {
        log_mgf(self.summary.iter().copied(), lambda)
    }
}

/// log Σ e^{ln p + λℓ} over (ℓ, ln p) pairs, and the λ-tilted mean of ℓ.
fn log_mgf(points: impl Iterator<Item = (f64, f64)> + Clone, lambda: f64) -> (f64, f64) {
    let top = points.clone().map(|(l, lp)| lp + lambda * l).fold(f64::NEG_INFINITY, f64::max);
    let (mut sum, mut first) = (0.0, 0.0);
    for (l, lp) in points {
        let w = (lp + lambda * l - top).exp();
        sum += w;
        first += w * l;
    }
    (top + sum.ln(), first / sum)
}
