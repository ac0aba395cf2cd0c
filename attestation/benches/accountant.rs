//! Accountant speed and the noise each accountant needs. Prints figures; not a test.
//!
//! cargo bench -p sealtune-attestation --bench accountant

use sealtune_attestation::accountant::{calibrate_sigma, epsilon, AccountantKind, Segment};
use std::time::Instant;

// The enclave benches' helpers (peak RSS, median): one copy for the workspace.
#[path = "../../enclave/benches/common/mod.rs"]
mod common;
use common::{median, peak_rss_mb};

fn main() {
    let s = [Segment { sampling_rate: 0.01, noise_multiplier: 1.0, steps: 100_000 }];
    let t = Instant::now();
    let runs = 20;
    for _ in 0..runs {
        std::hint::black_box(epsilon(AccountantKind::Rdp, &s, 1e-5).unwrap());
    }
    println!("RDP ε, 1e5 steps: {:.3} ms per call", t.elapsed().as_secs_f64() * 1e3 / runs as f64);

    let s = [Segment { sampling_rate: 0.01, noise_multiplier: 1.0, steps: 10_000 }];
    let t = Instant::now();
    let eps = epsilon(AccountantKind::Pld, &s, 1e-5).unwrap();
    println!("PLD ε, q=0.01 σ=1 T=1e4 δ=1e-5: ε={eps:.4} in {:.3} s", t.elapsed().as_secs_f64());

    // The large-corpus regime and the extreme calibration targets: each
    // case once per round, 5 rounds, so that load on the machine falls on
    // all cases alike; then min / median / max seconds per case, and the
    // process's peak resident memory over all of them.
    let cases: Vec<(String, Box<dyn Fn() -> f64>)> = vec![
        ("ε q=1e-4 σ=1 T=1e6 δ=1e-10".into(), Box::new(|| pld_epsilon(1e-4, 1.0, 1_000_000, 1e-10))),
        ("ε q=1e-3 σ=0.8 T=1e6 δ=1e-10".into(), Box::new(|| pld_epsilon(1e-3, 0.8, 1_000_000, 1e-10))),
        ("ε q=1 σ=1 T=1e4 δ=1e-5".into(), Box::new(|| pld_epsilon(1.0, 1.0, 10_000, 1e-5))),
        ("σ for ε=50 q=0.123 T=40".into(), Box::new(|| calibrate_sigma(AccountantKind::Pld, 0.123, 40, 9.9e-6, 50.0).unwrap())),
        ("σ for ε=1e3 q=0.123 T=40".into(), Box::new(|| calibrate_sigma(AccountantKind::Pld, 0.123, 40, 9.9e-6, 1e3).unwrap())),
        ("σ for ε=1e6 q=0.123 T=40".into(), Box::new(|| calibrate_sigma(AccountantKind::Pld, 0.123, 40, 9.9e-6, 1e6).unwrap())),
    ];
    let mut times = vec![Vec::new(); cases.len()];
    let mut values = vec![0.0; cases.len()];
    for _ in 0..5 {
        for (i, (_, run)) in cases.iter().enumerate() {
            let t = Instant::now();
            values[i] = std::hint::black_box(run());
            times[i].push(t.elapsed().as_secs_f64());
        }
    }
    for ((name, _), (t, v)) in cases.iter().zip(times.into_iter().zip(values)) {
        let (min, max) = (t.iter().copied().fold(f64::INFINITY, f64::min), t.iter().copied().fold(0.0, f64::max));
        println!("PLD {name}: {v:.6}; seconds min {min:.3} median {:.3} max {max:.3}", median(t));
    }
    println!("peak RSS over all of them: {:.0} MB", peak_rss_mb());

    println!("σ needed at q=0.02048, T=488, δ=1e-5:");
    for target in [1.0, 3.0, 8.0] {
        let rdp = calibrate_sigma(AccountantKind::Rdp, 0.02048, 488, 1e-5, target).unwrap();
        let pld = calibrate_sigma(AccountantKind::Pld, 0.02048, 488, 1e-5, target).unwrap();
        println!("  ε={target}: RDP σ={rdp:.4}  PLD σ={pld:.4}  PLD needs {:.2}% less noise", 100.0 * (1.0 - pld / rdp));
    }
}

fn pld_epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    epsilon(AccountantKind::Pld, &[Segment { sampling_rate: q, noise_multiplier: sigma, steps }], delta).unwrap()
}
