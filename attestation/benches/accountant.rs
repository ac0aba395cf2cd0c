//! Prints accountant timings and the noise DP-SGD needs under RDP and PLD.
//! Run with `cargo bench -p sealtune-attestation --bench accountant`.
//! It measures and prints; it asserts nothing.

use sealtune_attestation::accountant::{calibrate_sigma, AccountantKind, Pld, Rdp, Segment};
use std::time::Instant;

fn time<T>(runs: u32, mut f: impl FnMut() -> T) -> (T, f64) {
    let start = Instant::now();
    let mut out = f();
    for _ in 1..runs {
        out = f();
    }
    (out, start.elapsed().as_secs_f64() / f64::from(runs))
}

fn main() {
    let run = [Segment::new(0.01, 1.0, 100_000).expect("valid segment")];
    let (eps, secs) = time(20, || Rdp::default().epsilon(&run, 1e-5).expect("rdp"));
    println!("RDP  q=0.01 sigma=1.0 T=1e5 delta=1e-5: eps = {eps:.4}  in {:.3} ms", secs * 1e3);

    let run = [Segment::new(0.01, 1.0, 10_000).expect("valid segment")];
    let (eps, secs) = time(3, || Pld::default().epsilon(&run, 1e-5).expect("pld"));
    let rdp = Rdp::default().epsilon(&run, 1e-5).expect("rdp");
    println!("PLD  q=0.01 sigma=1.0 T=1e4 delta=1e-5: eps = {eps:.4}  in {:.3} s  (RDP: {rdp:.4})", secs);

    println!();
    println!("sigma for target eps at q=0.02048, T=488, delta=1e-5:");
    println!("{:>6} {:>10} {:>10} {:>9}", "eps", "RDP", "PLD", "PLD gain");
    for target in [1.0, 3.0, 8.0] {
        let rdp = calibrate_sigma(AccountantKind::Rdp, 0.02048, 488, 1e-5, target).expect("rdp calibration");
        let start = Instant::now();
        let pld = calibrate_sigma(AccountantKind::Pld, 0.02048, 488, 1e-5, target).expect("pld calibration");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{target:>6} {rdp:>10.4} {pld:>10.4} {:>8.2}%   (PLD calibration {secs:.2} s)",
            100.0 * (1.0 - pld / rdp)
        );
    }
}
