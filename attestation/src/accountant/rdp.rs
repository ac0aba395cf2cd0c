//! Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.
//!
//! RDP of one step at order α is ln(A_α)/(α − 1) with
//! A_α = E_{z~N(0,σ²)}[((1 − q) + q·e^{(2z−1)/(2σ²)})^α] (Mironov, Talwar &
//! Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism"). Integer orders use the binomial expansion; fractional orders
//! the two-sided series of their Section 3.3. All sums are in log space.
//! Composition adds RDP; the conversion to (ε, δ) is Proposition 12 of
//! Canonne, Kamath & Steinke 2020 (the one dp_accounting and Opacus use).
//! The RDP of the subsampled Gaussian is symmetric in add/remove for
//! Poisson sampling at the orders used, as in those libraries.

use super::gaussian::log_erfc;
use super::{check_delta, merged, AccountantError, Segment};

/// The RDP orders `dp_accounting`'s `RdpAccountant` uses by default:
/// 1.1, 1.2, …, 10.9, then 11, …, 63, then 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((11..64).map(|x| x as f64));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// The RDP accountant. Cheap: its cost does not depend on the number of
/// steps, so the training loop can query it after every step.
#[derive(Debug, Clone, PartialEq)]
pub struct Rdp {
    orders: Vec<f64>,
}

impl Default for Rdp {
    fn default() -> Self {
        Rdp { orders: default_orders() }
    }
}

impl Rdp {
    /// An accountant over the given orders (each finite and > 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, AccountantError> {
        if let Some(&bad) = orders.iter().find(|&&a| !(a > 1.0 && a.is_finite())) {
            return Err(AccountantError::InvalidOrder(bad));
        }
        if orders.is_empty() {
            return Err(AccountantError::InvalidOrder(f64::NAN));
        }
        Ok(Rdp { orders })
    }

    /// The orders this accountant evaluates.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The RDP of the composition of `segments` at each order (may be +∞).
    pub fn rdp(&self, segments: &[Segment]) -> Vec<f64> {
        let segments = merged(segments);
        self.orders
            .iter()
            .map(|&alpha| {
                segments
                    .iter()
                    .map(|s| s.steps as f64 * rdp_step(s.sampling_rate, s.noise_multiplier, alpha))
                    .sum::<f64>()
            })
            .collect()
    }

    /// An upper bound on ε of the composition of `segments` at `delta`.
    pub fn epsilon(&self, segments: &[Segment], delta: f64) -> Result<f64, AccountantError> {
        check_delta(delta)?;
        if segments.is_empty() {
            return Ok(0.0);
        }
        rdp_to_epsilon(&self.orders, &self.rdp(segments), delta).map(|(eps, _)| eps)
    }
}

/// The smallest ε over the orders by the conversion
/// ε = RDP(α) + ln((α−1)/α) − (ln δ + ln α)/(α − 1)
/// (Canonne, Kamath & Steinke 2020, Prop. 12; as in dp_accounting's
/// `compute_epsilon`), with the KL bound δ ≤ √(1 − e^{−RDP}) giving ε = 0
/// when it applies. Orders whose RDP is infinite or not a number are skipped.
/// Returns ε and the order that attains it.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64), AccountantError> {
    check_delta(delta)?;
    let mut best: Option<(f64, f64)> = None;
    for (&a, &r) in orders.iter().zip(rdp) {
        if !(a > 1.0 && a.is_finite()) {
            return Err(AccountantError::InvalidOrder(a));
        }
        // A NaN or infinite RDP says nothing at this order; a negative one
        // can only be rounding noise around 0.
        if !r.is_finite() {
            continue;
        }
        let r = r.max(0.0);
        let eps = if delta * delta + libm::expm1(-r) > 0.0 {
            0.0
        } else if a > 1.01 {
            r + libm::log1p(-1.0 / a) - (delta * a).ln() / (a - 1.0)
        } else {
            continue;
        };
        if best.is_none_or(|(b, _)| eps < b) {
            best = Some((eps, a));
        }
    }
    best.map(|(eps, a)| (eps.max(0.0), a)).ok_or(AccountantError::Unbounded { delta })
}

/// RDP at order `alpha` of one step of the Poisson-subsampled Gaussian.
pub(crate) fn rdp_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q >= 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    let log_a = if alpha.fract() == 0.0 && alpha <= 1e6 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    // Rounding can push ln A a hair below 0 although A ≥ 1. By joint
    // convexity of e^{(α−1)D_α}, subsampling never raises RDP above the
    // plain Gaussian's α/(2σ²); the series can (cancellation for small σ and
    // q near 1 falls back to absolute sums), so that cap applies.
    (log_a / (alpha - 1.0)).clamp(0.0, alpha / (2.0 * sigma * sigma))
}

fn log_add(x: f64, y: f64) -> f64 {
    let (hi, lo) = if x > y { (x, y) } else { (y, x) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + libm::log1p((lo - hi).exp())
}

/// ln binomial(n, k) for integers via ln Γ.
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// ln A_α for integer α: Σ_i C(α,i) (1−q)^{α−i} q^i e^{(i²−i)/(2σ²)}.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let log_q = q.ln();
    let log_1mq = libm::log1p(-q);
    let a = alpha as f64;
    (0..=alpha).fold(f64::NEG_INFINITY, |acc, i| {
        let i = i as f64;
        let s = log_comb(a, i) + i * log_q + (a - i) * log_1mq + (i * i - i) / (2.0 * sigma * sigma);
        log_add(acc, s)
    })
}

/// The series for fractional α cannot run forever; dp_accounting uses the
/// same cap and likewise drops an order that has not converged.
const MAX_FRAC_TERMS: usize = 1000;

/// ln A_α for fractional α (Mironov et al. 2019, Sec. 3.3): two binomial
/// series, one per side of z0, whose terms carry the sign of C(α, i). The
/// signed series is exact; if cancellation ever drives a partial sum to
/// zero or below, the sum of absolute values (an upper bound on A_α, the
/// safe direction) is returned instead.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let log_q = q.ln();
    let log_1mq = libm::log1p(-q);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let s2 = std::f64::consts::SQRT_2 * sigma;
    // Signed partial sums as (sign, ln |value|), and the absolute sums.
    let (mut a0, mut a1) = ((true, f64::NEG_INFINITY), (true, f64::NEG_INFINITY));
    let (mut abs0, mut abs1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last0, mut last1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_FRAC_TERMS {
        let i = i as f64;
        let j = alpha - i;
        let (log_coef, sign) = log_comb_signed(alpha, i);
        let t0 = log_coef + i * log_q + j * log_1mq;
        let t1 = log_coef + j * log_q + i * log_1mq;
        let e0 = log_erfc((i - z0) / s2) - std::f64::consts::LN_2;
        let e1 = log_erfc((z0 - j) / s2) - std::f64::consts::LN_2;
        let s0 = t0 + (i * i - i) / (2.0 * sigma * sigma) + e0;
        let s1 = t1 + (j * j - j) / (2.0 * sigma * sigma) + e1;
        a0 = signed_add(a0, (sign, s0));
        a1 = signed_add(a1, (sign, s1));
        abs0 = log_add(abs0, s0);
        abs1 = log_add(abs1, s1);
        let total = log_add(abs0, abs1);
        if s0 < last0 && s1 < last1 && s0.max(s1) < total - 30.0 {
            return match signed_add(a0, a1) {
                (true, v) if v.is_finite() => v,
                _ => total,
            };
        }
        last0 = s0;
        last1 = s1;
    }
    f64::INFINITY
}

/// ln |C(n, k)| and whether C(n, k) > 0, for real n and integer k ≥ 0.
fn log_comb_signed(n: f64, k: f64) -> (f64, bool) {
    let (a, sa) = libm::lgamma_r(n + 1.0);
    let (b, sb) = libm::lgamma_r(k + 1.0);
    let (c, sc) = libm::lgamma_r(n - k + 1.0);
    (a - b - c, sa * sb * sc > 0)
}

/// (sign, ln |x|) + (sign, ln |y|).
fn signed_add(x: (bool, f64), y: (bool, f64)) -> (bool, f64) {
    let (big, small) = if x.1 >= y.1 { (x, y) } else { (y, x) };
    if small.1 == f64::NEG_INFINITY {
        return big;
    }
    if big.0 == small.0 {
        (big.0, big.1 + libm::log1p((small.1 - big.1).exp()))
    } else {
        (big.0, big.1 + libm::log1p(-(small.1 - big.1).exp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rtol: f64) -> bool {
        (a - b).abs() <= rtol * b.abs()
    }

    /// A_α = E_{z~N(0,σ²)}[(1 − q + q e^{(2z−1)/(2σ²)})^α] by the trapezoid
    /// rule: an independent route to RDP (the one dp_accounting's own
    /// test_compute_log_a_equals_mp takes with mpmath).
    fn rdp_by_quadrature(q: f64, sigma: f64, alpha: f64) -> f64 {
        let n = 200_000;
        let (lo, hi) = (-40.0 * sigma, 40.0 * sigma);
        let h = (hi - lo) / n as f64;
        let mut total = 0.0;
        for k in 0..=n {
            let z = lo + k as f64 * h;
            let w = (-z * z / (2.0 * sigma * sigma)).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt());
            let f = w * (1.0 - q + q * ((2.0 * z - 1.0) / (2.0 * sigma * sigma)).exp()).powf(alpha);
            total += if k == 0 || k == n { 0.5 * f } else { f };
        }
        (total * h).ln() / (alpha - 1.0)
    }

    // Provenance: dp_accounting rdp/rdp_privacy_accountant_test.py,
    // test_compute_rdp_poisson_sampled_gaussian: q = 0.01, σ = 2.5, 50 steps,
    // orders [1.5, 2.5, 5, 50, 100] → [6.70579741e-04, 1.08548710e-03,
    // 2.18075656e-03, 2.38460375e-02, 1.67416308e02] (rtol 1e-4). The
    // integer orders are exact there. Current dp_accounting sums the
    // fractional series in absolute value, an upper bound: our exact signed
    // series must not exceed it, and must match quadrature.
    #[test]
    fn rdp_matches_dp_accounting_published_values() {
        let rdp = Rdp::with_orders(vec![1.5, 2.5, 5.0, 50.0, 100.0]).unwrap();
        let got = rdp.rdp(&[Segment::new(0.01, 2.5, 50).unwrap()]);
        let published = [6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02];
        for (k, (g, p)) in got.iter().zip(published).enumerate() {
            if k < 2 {
                assert!(*g <= p * (1.0 + 1e-4), "got {g}, published upper bound {p}");
                let quad = 50.0 * rdp_by_quadrature(0.01, 2.5, rdp.orders()[k]);
                assert!(close(*g, quad, 1e-6), "got {g}, quadrature {quad}");
            } else {
                assert!(close(*g, p, 1e-4), "got {g}, published {p}");
            }
        }
    }

    // Provenance: at q = 1 the mechanism is the plain Gaussian, whose RDP is
    // exactly α/(2σ²) (Mironov 2017, Prop. 7); the fractional and integer
    // series at q just below 1 must approach it.
    #[test]
    fn q_one_is_the_gaussian_rdp() {
        for &(sigma, alpha) in &[(2.71828, 3.14159), (1.0, 2.0), (0.7, 33.0), (5.0, 1.5)] {
            assert_eq!(rdp_step(1.0, sigma, alpha), alpha / (2.0 * sigma * sigma));
            let near = rdp_step(1.0 - 1e-9, sigma, alpha);
            assert!(close(near, alpha / (2.0 * sigma * sigma), 1e-6), "σ={sigma} α={alpha}: {near}");
        }
    }

    // Provenance: dp_accounting test_compute_epsilon_delta_pure_dp: orders
    // 2..=32 with constant RDP 1.1 at δ = 1e-5 give ε = 1.32783806176 at
    // order 32 ("computed by hand" there).
    #[test]
    fn conversion_matches_dp_accounting_pure_dp_case() {
        let orders: Vec<f64> = (2..33).map(f64::from).collect();
        let rdp = vec![1.1; orders.len()];
        let (eps, order) = rdp_to_epsilon(&orders, &rdp, 1e-5).unwrap();
        assert!((eps - 1.32783806176).abs() < 1e-9, "{eps}");
        assert_eq!(order, 32.0);
    }

    // Provenance: dp_accounting test_compute_epsilon_delta_gaussian: with
    // orders 1.000, 1.001, …, 99.999, the Gaussian with σ = 4.530877117
    // converts to ε = 1 at δ = 1e-6 (asserted to 7 places).
    #[test]
    fn conversion_matches_dp_accounting_gaussian_case() {
        let orders: Vec<f64> = (1001..100000).map(|i| 0.001 * i as f64).collect();
        let rdp = Rdp::with_orders(orders).unwrap();
        let eps = rdp.epsilon(&[Segment::new(1.0, 4.530877117, 1).unwrap()], 1e-6).unwrap();
        assert!((eps - 1.0).abs() < 5e-7, "{eps}");
    }

    // Provenance: Opacus opacus/tests/accountants_test.py test_rdp_accountant:
    // σ = 1.5, q = 0.04, 2250 steps, δ = 1e-5 gives ε = 7.32911117143 with
    // Opacus's default orders (1.1..10.9 step 0.1, then 12..63).
    #[test]
    fn epsilon_matches_opacus_published_value() {
        let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
        orders.extend((12..64).map(f64::from));
        let rdp = Rdp::with_orders(orders).unwrap();
        let eps = rdp.epsilon(&[Segment::new(0.04, 1.5, 2250).unwrap()], 1e-5).unwrap();
        assert!((eps - 7.32911117143).abs() < 1e-6, "{eps}");
    }

    #[test]
    fn default_orders_are_dp_accountings() {
        let o = default_orders();
        assert_eq!(o.len(), 99 + 53 + 4);
        assert_eq!(o[0], 1.1);
        assert_eq!(o[98], 10.9);
        assert_eq!(o[99], 11.0);
        assert_eq!(*o.last().unwrap(), 1024.0);
    }
}
