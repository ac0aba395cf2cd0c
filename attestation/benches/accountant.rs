//! Accountant speed and the noise each accountant needs. Prints figures; not a test.
//!
//! cargo bench -p sealtune-attestation --bench accountant

use sealtune_attestation::accountant::{calibrate_sigma, epsilon, AccountantKind, Segment};
use std::time::Instant;

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

    // The large-corpus regime and the extreme targets (issue 13): time per
    // call and the process's peak resident memory so far.
    for (q, sigma, steps, delta) in [(1e-4, 1.0, 1_000_000u64, 1e-10), (1e-3, 0.8, 1_000_000, 1e-10), (1.0, 1.0, 10_000, 1e-5)] {
        let t = Instant::now();
        let eps = epsilon(AccountantKind::Pld, &[Segment { sampling_rate: q, noise_multiplier: sigma, steps }], delta).unwrap();
        println!("PLD ε, q={q} σ={sigma} T={steps} δ={delta}: ε={eps:.6} in {:.3} s, peak RSS {} MiB", t.elapsed().as_secs_f64(), peak_rss_mib());
    }
    for target in [50.0, 1000.0, 1e5, 1e6] {
        let t = Instant::now();
        let sigma = calibrate_sigma(AccountantKind::Pld, 0.123, 40, 9.9e-6, target).unwrap();
        println!("PLD calibration to ε={target} at q=0.123, T=40: σ={sigma:.6} in {:.3} s, peak RSS {} MiB", t.elapsed().as_secs_f64(), peak_rss_mib());
    }

    println!("σ needed at q=0.02048, T=488, δ=1e-5:");
    for target in [1.0, 3.0, 8.0] {
        let rdp = calibrate_sigma(AccountantKind::Rdp, 0.02048, 488, 1e-5, target).unwrap();
        let pld = calibrate_sigma(AccountantKind::Pld, 0.02048, 488, 1e-5, target).unwrap();
        println!("  ε={target}: RDP σ={rdp:.4}  PLD σ={pld:.4}  PLD needs {:.2}% less noise", 100.0 * (1.0 - pld / rdp));
    }
}

/// VmHWM from /proc/self/status (Linux), in MiB.
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(0, |kib| kib / 1024)
}
