//! Properties and robustness of the privacy accountants, through the public
//! API only. Reference values with provenance live in the unit tests of each
//! module; here the references are closed forms and the accountants' known
//! mathematical properties.

use proptest::prelude::*;
use sealtune_attestation::accountant::{
    calibrate_sigma, max_steps, AccountantError, AccountantKind, Pld, Rdp, Segment,
};

fn seg(q: f64, sigma: f64, steps: u64) -> Segment {
    Segment::new(q, sigma, steps).expect("valid segment")
}

/// The analytic Gaussian mechanism (Balle & Wang 2018, Thm 8) inverted by
/// bisection, with Φ from libm's erfc: independent of the accountants.
fn analytic_gaussian_epsilon(sigma: f64, delta: f64) -> f64 {
    let phi = |t: f64| 0.5 * erfc_chebyshev(-t / std::f64::consts::SQRT_2);
    let d = |e: f64| phi(-e * sigma + 0.5 / sigma) - e.exp() * phi(-e * sigma - 0.5 / sigma);
    let (mut lo, mut hi) = (0.0, 200.0);
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

/// erfc by the Numerical Recipes
/// Chebyshev fit (relative error < 1.2e-7): a deliberately separate
/// implementation, accurate enough for a 1e-3 comparison.
fn erfc_chebyshev(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

// Provenance: heterogeneous Gaussian segments compose to one Gaussian with
// σ_eff = (Σ T_i/σ_i²)^(-1/2) (the formula dp_accounting's
// test_effective_gaussian_noise_multiplier_composed checks), whose exact ε
// is the analytic Gaussian's, and whose RDP is exactly α/(2σ_eff²).
#[test]
fn heterogeneous_gaussian_segments_compose_exactly() {
    let run = [seg(1.0, 20.0, 50), seg(1.0, 35.0, 200), seg(1.0, 50.0, 7)];
    let inv: f64 = run.iter().map(|s| s.steps() as f64 / (s.noise_multiplier() * s.noise_multiplier())).sum();
    let sigma_eff = inv.powf(-0.5);
    let delta = 1e-5;
    let exact = analytic_gaussian_epsilon(sigma_eff, delta);
    let pld = Pld::default().epsilon(&run, delta).unwrap();
    assert!(pld >= exact * (1.0 - 1e-6) && pld <= exact * 1.003, "pld {pld} exact {exact}");

    let rdp = Rdp::default();
    for (a, r) in rdp.orders().iter().zip(rdp.rdp(&run)) {
        let want = a / (2.0 * sigma_eff * sigma_eff);
        assert!((r - want).abs() <= 1e-12 * want, "α={a}: {r} vs {want}");
    }
}

// A run whose segments differ only in q lies between the runs that use the
// smaller or the larger q throughout (monotonicity in q).
#[test]
fn heterogeneous_sampling_rates_are_sandwiched() {
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let mixed = kind.epsilon(&[seg(0.01, 1.0, 300), seg(0.04, 1.0, 300)], 1e-5).unwrap();
        let low = kind.epsilon(&[seg(0.01, 1.0, 600)], 1e-5).unwrap();
        let high = kind.epsilon(&[seg(0.04, 1.0, 600)], 1e-5).unwrap();
        assert!(low < mixed && mixed < high, "{kind}: {low} < {mixed} < {high}");
    }
}

#[test]
fn extreme_inputs_give_finite_answers_or_clear_errors() {
    let cases = [
        (1.0, 1.0, 1u64, 1e-5),
        (1.0, 0.01, 1_000_000, 1e-5),
        (0.01, 1.0, 1_000_000, 1e-5),
        (0.5, 0.05, 100_000, 1e-10),
        (1e-6, 1.0, 1, 1e-5),
        (1.0, 1e5, 1, 0.5),
        (0.02, 0.8, 1000, 1e-300),
    ];
    // A coarse PLD grid keeps this fast unoptimised; robustness does not
    // depend on the resolution.
    let pld = Pld::with_resolution(1 << 10);
    for &(q, sigma, steps, delta) in &cases {
        let run = [seg(q, sigma, steps)];
        for (name, result) in [("rdp", Rdp::default().epsilon(&run, delta)), ("pld", pld.epsilon(&run, delta))] {
            match result {
                Ok(eps) => assert!(eps.is_finite() && eps >= 0.0, "{name} {q} {sigma} {steps}: {eps}"),
                Err(e) => assert!(
                    matches!(e, AccountantError::Unbounded { .. } | AccountantError::PrecisionExhausted { .. }),
                    "{name} {q} {sigma} {steps}: {e}"
                ),
            }
        }
    }
    // Huge ε is still reported, and sensibly: at q = 1 RDP is α T/(2σ²).
    let huge = AccountantKind::Rdp.epsilon(&[seg(1.0, 0.01, 1_000_000)], 1e-5).unwrap();
    assert!(huge > 5e9 && huge.is_finite(), "{huge}");
}

#[test]
fn invalid_arguments_are_named() {
    assert_eq!(Segment::new(0.0, 1.0, 1), Err(AccountantError::InvalidSamplingRate(0.0)));
    assert_eq!(Segment::new(1.5, 1.0, 1), Err(AccountantError::InvalidSamplingRate(1.5)));
    assert!(matches!(Segment::new(f64::NAN, 1.0, 1), Err(AccountantError::InvalidSamplingRate(_))));
    assert_eq!(Segment::new(0.1, -1.0, 1), Err(AccountantError::InvalidNoiseMultiplier(-1.0)));
    assert_eq!(Segment::new(0.1, f64::INFINITY, 1), Err(AccountantError::InvalidNoiseMultiplier(f64::INFINITY)));
    assert_eq!(Segment::new(0.1, 1.0, 0), Err(AccountantError::InvalidSteps));
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        assert_eq!(kind.epsilon(&[seg(0.1, 1.0, 1)], 0.0), Err(AccountantError::InvalidDelta(0.0)));
        assert_eq!(kind.epsilon(&[seg(0.1, 1.0, 1)], 1.0), Err(AccountantError::InvalidDelta(1.0)));
    }
    assert!(AccountantError::InvalidDelta(2.0).to_string().contains("delta"));
    assert!(AccountantError::InvalidSamplingRate(2.0).to_string().contains("sampling rate"));
    assert_eq!("pld".parse::<AccountantKind>(), Ok(AccountantKind::Pld));
    assert!("prv".parse::<AccountantKind>().is_err());
}

#[test]
fn max_steps_is_the_last_step_count_within_budget() {
    // Cheap targets: each probe of the PLD costs a full composition.
    for (kind, q, sigma, target) in [(AccountantKind::Rdp, 0.02, 1.0, 2.0), (AccountantKind::Pld, 0.1, 1.0, 3.0)] {
        let delta = 1e-5;
        let t = max_steps(kind, q, sigma, delta, target).unwrap();
        assert!(t > 1, "{kind}: {t}");
        assert!(kind.epsilon(&[seg(q, sigma, t)], delta).unwrap() <= target);
        assert!(kind.epsilon(&[seg(q, sigma, t + 1)], delta).unwrap() > target);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rdp_is_monotone(q in 0.001f64..1.0, sigma in 0.5f64..20.0, steps in 1u64..100_000) {
        let eps = |q: f64, s: f64, t: u64| AccountantKind::Rdp.epsilon(&[seg(q, s, t)], 1e-5).unwrap();
        let base = eps(q, sigma, steps);
        prop_assert!(eps(q, sigma, steps * 2) >= base);
        prop_assert!(eps((q * 1.5).min(1.0), sigma, steps) >= base);
        prop_assert!(eps(q, sigma * 1.2, steps) <= base);
    }

    #[test]
    fn rdp_calibration_round_trips(q in 0.001f64..1.0, sigma in 0.6f64..20.0, steps in 1u64..10_000) {
        let eps = AccountantKind::Rdp.epsilon(&[seg(q, sigma, steps)], 1e-5).unwrap();
        prop_assume!(eps > 1e-3);
        let back = calibrate_sigma(AccountantKind::Rdp, q, steps, 1e-5, eps).unwrap();
        prop_assert!((back / sigma - 1.0).abs() <= 2e-4, "σ {} → ε {} → σ {}", sigma, eps, back);
    }
}

proptest! {
    // PLD cases cost up to a second each unoptimised (the crate builds at
    // opt-level 0 in the test profile), so few cases.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn pld_is_monotone_and_below_rdp(q in 0.001f64..1.0, sigma in 0.5f64..10.0, steps in 1u64..3000) {
        let pld = Pld::with_resolution(1 << 14);
        let eps = |q: f64, s: f64, t: u64| pld.epsilon(&[seg(q, s, t)], 1e-5).unwrap();
        let base = eps(q, sigma, steps);
        let rdp = AccountantKind::Rdp.epsilon(&[seg(q, sigma, steps)], 1e-5).unwrap();
        prop_assert!(base <= rdp, "PLD {} > RDP {}", base, rdp);
        prop_assert!(eps(q, sigma, steps * 2) >= base);
        prop_assert!(eps((q * 1.5).min(1.0), sigma, steps) >= base);
        prop_assert!(eps(q, sigma * 1.2, steps) <= base);
    }
}

proptest! {
    // Each case bisects over ~15 full PLD compositions (seconds each unoptimised).
    #![proptest_config(ProptestConfig { cases: 2, ..ProptestConfig::default() })]

    #[test]
    fn pld_calibration_round_trips(q in 0.005f64..0.5, sigma in 0.7f64..5.0, steps in 1u64..200) {
        let eps = AccountantKind::Pld.epsilon(&[seg(q, sigma, steps)], 1e-5).unwrap();
        prop_assume!(eps > 1e-2);
        let back = calibrate_sigma(AccountantKind::Pld, q, steps, 1e-5, eps).unwrap();
        prop_assert!((back / sigma - 1.0).abs() <= 1e-3, "σ {} → ε {} → σ {}", sigma, eps, back);
    }
}
