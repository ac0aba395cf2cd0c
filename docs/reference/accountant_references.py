#!/usr/bin/env python3
"""Independent reference values for attestation/tests/accountant.rs, computed
with mpmath at 50 digits from the textbook definitions (not from our code):

- RDP of the Poisson-subsampled Gaussian by numerical integration of
  A_alpha = E_{z~N(0,s^2)}[((1-q) + q e^{(2z-1)/(2s^2)})^alpha];
- the exact (epsilon, delta) curve of the Gaussian mechanism (Balle & Wang
  2018, Theorem 8) and of one step of the subsampled Gaussian in both
  directions of add/remove neighbouring, solved for epsilon by bisection.
"""
from mpmath import mp, npdf, ncdf, exp, log, quad, inf, mpf

mp.dps = 50


def rdp(q, s, alpha, steps):
    f = lambda z: npdf(z, 0, s) * ((1 - q) + q * exp((2 * z - 1) / (2 * s**2))) ** alpha
    return steps * log(quad(f, [-inf, 0, 1, inf])) / (alpha - 1)


def gaussian_delta(eps, s):
    return ncdf(-eps * s + 1 / (2 * s)) - exp(eps) * ncdf(-eps * s - 1 / (2 * s))


def remove_delta(eps, q, s):
    if eps <= log(1 - q):
        return 1 - exp(eps)
    x = s**2 * log((exp(eps) - (1 - q)) / q) + mpf(1) / 2
    return (1 - q) * (1 - ncdf(x / s)) + q * (1 - ncdf((x - 1) / s)) - exp(eps) * (1 - ncdf(x / s))


def add_delta(eps, q, s):
    if eps >= -log(1 - q):
        return mpf(0)
    x = s**2 * log((exp(-eps) - (1 - q)) / q) + mpf(1) / 2
    return ncdf(x / s) - exp(eps) * ((1 - q) * ncdf(x / s) + q * ncdf((x - 1) / s))


def solve(f, d):
    lo, hi = mpf(0), mpf(60)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > d else (lo, mid)
    return hi


if __name__ == "__main__":
    for alpha in [1.5, 2.5]:
        print("rdp q=0.01 s=2.5 T=50 alpha", alpha, mp.nstr(rdp(0.01, 2.5, alpha, 50), 15))
    for s, d in [(4.530877117, 1e-6), (1.0, 1e-5), (0.5, 1e-5), (2.0, 1e-3)]:
        print("gaussian", s, d, mp.nstr(solve(lambda e: gaussian_delta(e, s), d), 15))
    for q, s, d in [(0.1, 0.8, 1e-5), (0.5, 1.0, 1e-6), (0.01, 0.5, 1e-5)]:
        er = solve(lambda e: remove_delta(e, q, s), d)
        ea = solve(lambda e: add_delta(e, q, s), d)
        print("one step", q, s, d, mp.nstr(max(er, ea), 15))
