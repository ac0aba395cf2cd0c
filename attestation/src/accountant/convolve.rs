//! Linear convolution of probability vectors by FFT, with a bound on the
//! ℓ1 error of the result.
//!
//! The bound follows the standard analysis of the floating-point FFT
//! (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
//! Thm 24.2): a length-N transform computed in log2 N stages has relative
//! ℓ2 error at most log2(N)·η with η ≈ 6.7u for accurate twiddle factors.
//! We take η = 10u per stage and a further factor 2 of margin. For
//! vectors a, b with ‖a‖₁, ‖b‖₁ ≤ 1, forward transforms, the pointwise
//! product and the inverse transform give
//!   ‖ĉ − a∗b‖₂ ≤ (2·log2(N)·η + 4u)·(‖a‖₂ + ‖b‖₂),
//! and ‖·‖₁ ≤ √N‖·‖₂ turns it into an ℓ1 bound. Clamping negative entries of
//! ĉ to 0 can only move it closer to the non-negative a∗b.

use super::gaussian::U;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// Reuses FFT plans across the convolutions of one accounting request.
pub(crate) struct Convolver {
    planner: FftPlanner<f64>,
}

impl Convolver {
    pub(crate) fn new() -> Self {
        Convolver { planner: FftPlanner::new() }
    }

    /// a ∗ b (length |a| + |b| − 1, non-negative) and a bound on its ℓ1 error.
    pub(crate) fn convolve(&mut self, a: &[f64], b: &[f64]) -> (Vec<f64>, f64) {
        let n = a.len() + b.len() - 1;
        let size = n.next_power_of_two();
        let mut fa = self.forward(a, size);
        let fb = self.forward(b, size);
        for (x, y) in fa.iter_mut().zip(&fb) {
            *x *= *y;
        }
        let c = self.inverse(fa, n);
        (c, error_bound(size, norm2(a) + norm2(b)))
    }

    /// a ∗ a, with one forward transform instead of two.
    pub(crate) fn square(&mut self, a: &[f64]) -> (Vec<f64>, f64) {
        let n = 2 * a.len() - 1;
        let size = n.next_power_of_two();
        let mut fa = self.forward(a, size);
        for x in fa.iter_mut() {
            *x = *x * *x;
        }
        let c = self.inverse(fa, n);
        (c, error_bound(size, 2.0 * norm2(a)))
    }

    fn forward(&mut self, a: &[f64], size: usize) -> Vec<Complex<f64>> {
        let mut buf: Vec<Complex<f64>> = a.iter().map(|&x| Complex::new(x, 0.0)).collect();
        buf.resize(size, Complex::new(0.0, 0.0));
        self.planner.plan_fft_forward(size).process(&mut buf);
        buf
    }

    fn inverse(&mut self, mut buf: Vec<Complex<f64>>, n: usize) -> Vec<f64> {
        let size = buf.len();
        self.planner.plan_fft_inverse(size).process(&mut buf);
        // size is a power of two, so the scaling is exact.
        let scale = 1.0 / size as f64;
        buf[..n].iter().map(|z| (z.re * scale).max(0.0)).collect()
    }
}

fn norm2(a: &[f64]) -> f64 {
    // The 1.01 covers the rounding of this sum itself.
    a.iter().map(|x| x * x).sum::<f64>().sqrt() * 1.01
}

fn error_bound(size: usize, norms: f64) -> f64 {
    let stages = (size.max(2) as f64).log2();
    let eta = 10.0 * U;
    2.0 * (size as f64).sqrt() * (2.0 * stages * eta + 4.0 * U) * norms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                c[i + j] += x * y;
            }
        }
        c
    }

    // The reference is the schoolbook convolution (non-negative terms, so
    // its own relative error is below n·u): the FFT result must lie within
    // the claimed bound of it, and the bound must not be absurdly loose.
    #[test]
    fn fft_error_stays_within_the_claimed_bound() {
        let mut state = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut conv = Convolver::new();
        for &(la, lb) in &[(1usize, 1usize), (3, 700), (1000, 1000), (4096, 33)] {
            let mut a: Vec<f64> = (0..la).map(|_| next().powi(8)).collect();
            let mut b: Vec<f64> = (0..lb).map(|_| next()).collect();
            let (sa, sb) = (a.iter().sum::<f64>(), b.iter().sum::<f64>());
            a.iter_mut().for_each(|x| *x /= sa);
            b.iter_mut().for_each(|x| *x /= sb);
            let exact = direct(&a, &b);
            let exact_square = direct(&a, &a);
            for ((got, bound), want) in [(conv.convolve(&a, &b), &exact), (conv.square(&a), &exact_square)] {
                let err: f64 = got.iter().zip(want).map(|(x, y)| (x - y).abs()).sum();
                assert!(err <= bound, "{la}x{lb}: error {err:e} > bound {bound:e}");
                assert!(bound < 1e-10, "{la}x{lb}: bound {bound:e} is useless");
            }
        }
    }
}
