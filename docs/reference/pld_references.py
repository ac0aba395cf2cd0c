#!/usr/bin/env python3
"""Reference values for the PLD accountant tests (attestation/tests/accountant.rs),
from implementations that share no code with sealtune:

- dp_accounting 0.4.4 (Google), PLDAccountant with connect-the-dots
  discretisation, both the pessimistic estimate (an upper bound) and the
  optimistic one (a lower bound), at a value-discretisation interval well
  below each case's per-step loss spread;
- for q = 1 the exact answer: T Gaussian steps of noise multiplier sigma are
  one Gaussian mechanism of sigma/sqrt(T), whose delta(eps) is Balle & Wang
  2018, Theorem 8, solved here with mpmath at 60 digits.

Reproduce (about 10 minutes on 2 cores):
    python3 -m venv .venv-ref && .venv-ref/bin/pip install dp-accounting==0.4.4 mpmath
    .venv-ref/bin/python docs/reference/pld_references.py
"""
import sys

from mpmath import mp, mpf, ncdf, exp, sqrt, log

mp.dps = 60


def gaussian_epsilon(sigma, steps, delta):
    s = mpf(sigma) / sqrt(steps)
    f = lambda e: ncdf(-e * s + 1 / (2 * s)) - exp(e) * ncdf(-e * s - 1 / (2 * s))
    lo, hi = mpf(0), mpf(1)
    while f(hi) > delta:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > delta else (lo, mid)
    return hi


def dp_accounting_epsilon(q, sigma, steps, delta, interval, pessimistic):
    from dp_accounting.pld import privacy_loss_distribution as pld

    one = pld.from_gaussian_mechanism(
        standard_deviation=sigma,
        pessimistic_estimate=pessimistic,
        value_discretization_interval=interval,
        sampling_prob=q,
    )
    return one.self_compose(steps).get_epsilon_for_delta(delta)


# (q, sigma, T, delta, value discretisation interval)
CASES = [
    (0.1, 0.5, 10_000, 1e-5, 1e-3),
    (0.0005, 1.0, 100_000, 1e-8, 1e-5),
    (0.0001, 1.0, 1_000_000, 1e-10, 2e-6),
    (0.001, 0.8, 1_000_000, 1e-10, 1e-5),
    (0.001, 2.0, 100_000, 1e-6, 1e-5),
    (0.01, 1.0, 10_000, 1e-12, 1e-4),
]

if __name__ == "__main__":
    for sigma, steps, delta in [(1.0, 10_000, 1e-5), (0.3, 1_000_000, 1e-10), (20.0, 1, 1e-2), (5.0, 1000, 1e-12)]:
        print(f"gaussian q=1 sigma={sigma} T={steps} delta={delta}: eps={mp.nstr(gaussian_epsilon(sigma, steps, delta), 15)}", flush=True)
    for q, sigma, steps, delta, interval in CASES:
        up = dp_accounting_epsilon(q, sigma, steps, delta, interval, True)
        down = dp_accounting_epsilon(q, sigma, steps, delta, interval, False)
        print(f"pld q={q} sigma={sigma} T={steps} delta={delta} interval={interval}: optimistic={down!r} pessimistic={up!r}", flush=True)
