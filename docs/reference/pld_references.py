#!/usr/bin/env python3
"""Reference values for the PLD accountant tests (attestation/tests/accountant.rs),
from implementations that share no code with sealtune:

- dp_accounting 0.4.4 (Google), PLDAccountant with connect-the-dots
  discretisation, both the pessimistic estimate (an upper bound) and the
  optimistic one (a lower bound), at a value-discretisation interval well
  below each case's per-step loss spread;
- for q = 1 the exact answer: T Gaussian steps of noise multiplier sigma are
  one Gaussian mechanism of sigma/sqrt(T), whose delta(eps) is Balle & Wang
  2018, Theorem 8, solved here with mpmath at 60 digits;
- for q < 1 the exact answer by numerical Laplace inversion (no grid, no
  discretisation): with L the composed privacy loss under P and
  M(l) = E[e^{l L}] = m(l)^T,
      delta(eps) = E[(1 - e^{eps - L})_+]
                 = (1/2 pi i) * integral over Re l = c of M(l) e^{-l eps} / (l (l + 1)) dl
  for any c > 0 (close the contour: residues 1 at l = 0 and -e^{eps - L} at
  l = -1 when L > eps, none when L < eps). On the line through the saddle
  point (T m'(c)/m(c) = eps) the integrand is of the size of delta itself and
  falls off like a Gaussian in Im l, so double precision and Gauss-Legendre
  quadrature give delta to 10 digits; the one-step m(l) is an integral over
  the Gaussian noise, computed as E[(1+w)^a - 1 - a w] with
  w = q (e^{(2x-1)/(2 sigma^2)} - 1), E[w] = 0, so nothing cancels. The
  method reproduces the q = 1 exact values (run with --check); each delta is
  accepted only when doubling every node count changes nothing and a second
  line (3c/4) gives the same value, else it raises.

Reproduce (about 20 minutes on 2 cores):
    python3 -m venv .venv-ref && .venv-ref/bin/pip install dp-accounting==0.4.4 mpmath numpy scipy
    .venv-ref/bin/python docs/reference/pld_references.py
"""
import sys

import numpy as np
from scipy.optimize import brentq

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


def _legendre(a, b, n, panels=64):
    x, w = np.polynomial.legendre.leggauss(n // panels)
    edges = np.linspace(a, b, panels + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    return (mid[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


def _cexpm1(z):
    x, y = z.real, z.imag
    return np.expm1(x) * np.cos(y) - 2 * np.sin(y / 2) ** 2 + 1j * np.exp(x) * np.sin(y)


class _Step:
    """One Poisson-subsampled Gaussian step, the loss ln(P/Q) taken under P.
    remove: P = (1-q)N(0,s^2) + qN(1,s^2), Q = N(0,s^2); add: the reverse."""

    def __init__(self, q, sigma, remove, c, nx):
        peak = 1 + c if remove else 0.0  # where the tilted integrand sits
        x, w = _legendre(min(-16 * sigma, peak - 16 * sigma), max(1 + 16 * sigma, peak + 16 * sigma), nx)
        self.remove = remove
        self.logdens = np.log(w) - x * x / (2 * sigma * sigma) - np.log(sigma * np.sqrt(2 * np.pi))
        self.dens = np.exp(self.logdens)
        self.w = q * np.expm1((2 * x - 1) / (2 * sigma * sigma))  # P/Q - 1 with x ~ N(0, s^2)
        self.l1p = np.log1p(self.w)

    def _a(self, lam):
        # E_P[e^{lam L}] = E_N0[(1+w)^a]
        return np.asarray(1 + lam if self.remove else -lam)[..., None]

    def log_m(self, lam):
        a = self._a(lam)
        z = a * self.l1p + 0j
        small = np.abs(z.real) < 1
        near = (_cexpm1(np.where(small, z, 0)) - a * self.w) * self.dens
        far = np.exp(np.where(small, 0, z) + self.logdens) - (1 + a * self.w) * self.dens
        return np.log1p(np.where(small, near, far).sum(axis=-1))

    def d_log_m(self, lam):
        e = self._a(lam) * self.l1p + self.logdens
        e = np.exp(e - e.max(axis=-1, keepdims=True))
        return (1 if self.remove else -1) * (e * self.l1p).sum(axis=-1) / e.sum(axis=-1)


def _line_integral(q, sigma, steps, eps, remove, c, nx, nt, widths):
    step = _Step(q, sigma, remove, c, nx)
    h = c * 1e-4
    width = 1 / np.sqrt(steps * (step.d_log_m(c + h) - step.d_log_m(c - h)) / (2 * h))
    t, wt = _legendre(0, widths * width, nt)
    total = 0.0
    for i in range(0, nt, 256):
        lam = c + 1j * t[i:i + 256]
        total += (np.exp(steps * step.log_m(lam) - lam * eps) / (lam * (lam + 1))).real @ wt[i:i + 256]
    return total / np.pi


def inversion_delta(q, sigma, steps, eps, remove, check=False):
    """delta(eps) of one direction. The line is the saddle point's where the
    integral converges there; where the saddle sits in the heavy upper tail of
    the subsampled loss (small q, many steps, small eps) the integrand
    oscillates past any grid (or overflows), so c is lowered in steps of 20%
    until doubling the t-nodes and the t-range changes nothing; lower still,
    cancellation would cost precision. With check, doubling the x-nodes must change
    nothing too, and a second line (3c/4) must give the same value: the
    integral does not depend on c."""
    saddle = lambda c: steps * _Step(q, sigma, remove, c, 8192).d_log_m(c) - eps
    hi = 1.0
    while saddle(hi) < 0:
        hi *= 2
    c = brentq(saddle, 1e-9, hi, xtol=1e-13, rtol=1e-12)
    for _ in range(40):
        coarse = _line_integral(q, sigma, steps, eps, remove, c, 8192, 2048, 30)
        finer_t = _line_integral(q, sigma, steps, eps, remove, c, 8192, 4096, 60)
        if abs(coarse - finer_t) <= 1e-5 * abs(finer_t):
            break
        c *= 0.8
    else:
        raise ArithmeticError(f"delta({eps}) does not converge on any line")
    if check:
        finer_x = _line_integral(q, sigma, steps, eps, remove, c, 16384, 4096, 60)
        other = _line_integral(q, sigma, steps, eps, remove, 0.75 * c, 16384, 4096, 60)
        for name, value in [("twice the x-nodes", finer_x), ("the line at 3c/4", other)]:
            if abs(value - finer_t) > 1e-4 * abs(finer_t):
                raise ArithmeticError(f"delta({eps}) = {finer_t} but {value} with {name}")
    return finer_t


def inversion_epsilon(q, sigma, steps, delta, guess):
    """The exact eps at delta: both directions, the larger delta; the root is
    checked (see inversion_delta) before it is returned."""
    d = lambda e: max(inversion_delta(q, sigma, steps, e, r) for r in (True, False))
    f = lambda e: np.log(d(e)) - np.log(delta)
    lo, hi = guess * 0.98, guess * 1.02
    while f(lo) < 0:
        lo *= 0.9
    while f(hi) > 0:
        hi *= 1.1
    eps = brentq(f, lo, hi, xtol=1e-12, rtol=1e-9)
    # The direction that sets delta is checked; the other may be far below it.
    remove = inversion_delta(q, sigma, steps, eps, True) >= inversion_delta(q, sigma, steps, eps, False)
    inversion_delta(q, sigma, steps, eps, remove, check=True)
    return eps


# (q, sigma, T, delta, value discretisation interval)
CASES = [
    (0.1, 0.5, 10_000, 1e-5, 1e-3),
    (0.0005, 1.0, 100_000, 1e-8, 1e-5),
    (0.0001, 1.0, 1_000_000, 1e-10, 2e-6),
    (0.001, 0.8, 1_000_000, 1e-10, 1e-5),
    (0.001, 2.0, 100_000, 1e-6, 1e-5),
    (0.01, 1.0, 10_000, 1e-12, 1e-4),
]

# (q, sigma, T, delta, a guess for the bracket)
INVERSION = [
    (0.001, 0.8, 1_000_000, 1e-10, 13.95),
    (0.0001, 1.0, 1_000_000, 1e-10, 0.774),
    (0.0005, 1.0, 100_000, 1e-8, 1.078),
    (0.1, 0.5, 10_000, 1e-5, 782.5),
    (0.001, 2.0, 100_000, 1e-6, 0.5),
    (0.01, 1.0, 10_000, 1e-12, 5.0),
]

if __name__ == "__main__":
    if "--check" in sys.argv:
        for sigma, steps, delta in [(1.0, 10_000, 1e-5), (5.0, 1000, 1e-12)]:
            exact = gaussian_epsilon(sigma, steps, delta)
            inv = inversion_epsilon(1.0, sigma, steps, delta, float(exact))
            print(f"check q=1 sigma={sigma} T={steps} delta={delta}: Balle-Wang {mp.nstr(exact, 15)} inversion {inv!r}", flush=True)
    for q, sigma, steps, delta, guess in INVERSION:
        eps = inversion_epsilon(q, sigma, steps, delta, guess)
        print(f"inversion q={q} sigma={sigma} T={steps} delta={delta}: eps={eps!r}", flush=True)
    for sigma, steps, delta in [(1.0, 10_000, 1e-5), (0.3, 1_000_000, 1e-10), (20.0, 1, 1e-2), (5.0, 1000, 1e-12)]:
        print(f"gaussian q=1 sigma={sigma} T={steps} delta={delta}: eps={mp.nstr(gaussian_epsilon(sigma, steps, delta), 15)}", flush=True)
    for q, sigma, steps, delta, interval in CASES:
        up = dp_accounting_epsilon(q, sigma, steps, delta, interval, True)
        down = dp_accounting_epsilon(q, sigma, steps, delta, interval, False)
        print(f"pld q={q} sigma={sigma} T={steps} delta={delta} interval={interval}: optimistic={down!r} pessimistic={up!r}", flush=True)
