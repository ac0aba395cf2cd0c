//! Log-space arithmetic and the standard normal distribution, accurate in
//! the far tails (where the privacy of many-step DP-SGD is decided).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// log(e^a + e^b).
pub(super) fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(e^a − e^b) for a ≥ b.
pub(super) fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if a <= b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// log(erfc(x)), finite for every finite x.
pub(super) fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    // erfc underflows soon after; use its asymptotic series, which at x ≥ 25
    // is accurate to far below f64 precision with these terms.
    let x2 = x * x;
    let series = 1.0 - 0.5 / x2 + 0.75 / (x2 * x2) - 1.875 / (x2 * x2 * x2) + 6.5625 / (x2 * x2 * x2 * x2);
    -x2 - x.ln() - 0.5 * PI.ln() + series.ln()
}

/// P(Z > x) for a standard normal Z.
pub(super) fn normal_sf(x: f64) -> f64 {
    0.5 * libm::erfc(x * FRAC_1_SQRT_2)
}

/// P(Z ≤ x) for a standard normal Z.
pub(super) fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// P(a < Z ≤ b) for a standard normal Z, computed on the side of zero where
/// both tail probabilities are small, so the difference keeps its precision.
pub(super) fn normal_interval(a: f64, b: f64) -> f64 {
    if a >= b {
        0.0
    } else if a >= 0.0 {
        normal_sf(a) - normal_sf(b)
    } else if b <= 0.0 {
        normal_cdf(b) - normal_cdf(a)
    } else {
        1.0 - normal_cdf(a) - normal_sf(b)
    }
}

/// Standard normal density.
pub(super) fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::LN_2;

    #[test]
    fn tails_match_published_values() {
        // Abramowitz & Stegun table 26.1 / standard references:
        // P(Z > 1.96) = 0.024997895, P(Z > 5) = 2.8665157e-7, P(Z > 10) = 7.6198530e-24.
        assert!((normal_sf(1.96) - 0.024997895).abs() < 1e-9);
        assert!((normal_sf(5.0) / 2.8665157e-7 - 1.0).abs() < 1e-7);
        assert!((normal_sf(10.0) / 7.6198530e-24 - 1.0).abs() < 1e-7);
        // mpmath at 60 digits: log(erfc(40/√2)/2) = -804.6084420137537881...,
        // log erfc(25) = -628.7920391740716853..., log erfc(24.999) = -628.7420002370209217...
        assert!((log_erfc(40.0 * FRAC_1_SQRT_2) - LN_2 - (-804.6084420137538)).abs() < 1e-10);
        assert!((log_erfc(25.0) - (-628.7920391740717)).abs() < 1e-10);
        assert!((log_erfc(24.999) - (-628.7420002370209)).abs() < 1e-10);
    }

    #[test]
    fn log_space_arithmetic() {
        assert!((log_add(2f64.ln(), 3f64.ln()) - 5f64.ln()).abs() < 1e-15);
        assert!((log_sub(5f64.ln(), 3f64.ln()) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(log_add(f64::NEG_INFINITY, 1.0), 1.0);
        assert_eq!(log_sub(1.0, 1.0), f64::NEG_INFINITY);
    }
}
