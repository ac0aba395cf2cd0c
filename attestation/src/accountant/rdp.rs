//! Rényi-DP accounting of the Poisson-subsampled Gaussian mechanism
//! (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled
//! Gaussian Mechanism"), as computed by TF-Privacy, Opacus and Google's
//! dp_accounting, with the improved RDP → (ε, δ) conversion of Balle et al.
//! 2020 (Proposition 12) / Asoodeh et al. 2021.

use super::special::{log_add, log_erfc, log_sub};
use super::Segment;

/// dp_accounting's default orders: 1.1, 1.2, …, 10.9, 11, 12, …, 63, 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// log A_α for integer α: the exact finite binomial sum, in log space.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binom = 0.0; // log C(α, 0)
    for i in 0..=alpha {
        let i_f = i as f64;
        let term = log_binom + i_f * log_q + (alpha - i) as f64 * log_1mq + (i_f * i_f - i_f) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, term);
        log_binom += ((alpha - i) as f64).ln() - (i_f + 1.0).ln();
    }
    log_a
}

/// log A_α for fractional α: the two-sided series of Mironov et al. §3.3,
/// summed until its terms are negligible.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut coef = 1.0f64; // C(α, i), carried as a running value: it changes sign once i > α
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    for i in 0..100_000u32 {
        let i_f = f64::from(i);
        let j = alpha - i_f;
        let log_coef = coef.abs().ln();
        let log_t0 = log_coef + i_f * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i_f * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i_f - z0) / sqrt2_sigma);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (i_f * i_f - i_f) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
        coef *= (alpha - i_f) / (i_f + 1.0);
        if coef == 0.0 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// RDP of one step of the Poisson-subsampled Gaussian at order α.
pub fn rdp_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        // The plain Gaussian mechanism: exactly α / (2σ²).
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 && alpha <= 1e6 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    // A_α ≥ 1 in exact arithmetic; rounding can dip just below.
    (log_a / (alpha - 1.0)).max(0.0)
}

/// Total RDP of `segments` at each order.
pub fn rdp(segments: &[Segment], orders: &[f64]) -> Vec<f64> {
    orders
        .iter()
        .map(|&alpha| segments.iter().map(|s| s.steps as f64 * rdp_step(s.sampling_rate, s.noise_multiplier, alpha)).sum())
        .collect()
}

/// The tightest ε over `orders` (dp_accounting's `compute_epsilon`): for
/// each order, ε = RDP + log((α−1)/α) − (log δ + log α)/(α−1), or 0 when the
/// KL bound δ ≥ √(1 − e^{−RDP}) already holds. Returns the ε and its order.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(f64::NAN));
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}
