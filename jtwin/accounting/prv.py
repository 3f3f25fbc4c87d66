"""Thin adapter over Microsoft's prv-accountant (Gopi, Lee & Wutschitz 2021).

`build` makes one `prv_accountant.PRVAccountant` for the T-fold
Poisson-subsampled Gaussian (`GaussianMechanism` when q = 1) and `query`
reads (lower, estimate, upper) epsilon for any T <= max_steps from it. The
true epsilon(delta) lies in [lower, upper]; `upper` = estimate at
delta - delta_error, plus eps_error, with delta_error = delta / 1000.

Two speed-ups over the library's defaults, both keeping its guarantee:

* the truncation domain [-L, L] is computed as the library does
  (`compute_safe_domain_size`: an RDP epsilon at delta_error / 4 for the
  composition and at delta_error / (8 T) for one step, plus 3), but with
  jtwin's vectorised RDP (`jtwin.accounting.rdp`) instead of the library's
  per-order Python loop, and passed as `eps_max`;
* L is then enlarged slightly so that the grid length is 2^a 3^b 5^c: the
  library's long-double FFT is up to 5x slower on other lengths.

Every failure of the library (0.2.0 raises "Discrete mean differs from
continuous mean significantly." at some high-epsilon settings, "Cannot compute
epsilon", floating-point errors; issues #36, #42 upstream) is re-raised as
`PRVError`, and a grid that would be too large to build quickly is refused the
same way; callers then fall back to RDP.
"""
from __future__ import annotations

import math
import warnings
from typing import Tuple

import numpy as np
import prv_accountant
from scipy import fft, special

from jtwin.accounting import rdp as _rdp

__all__ = ["PRVError", "MAX_GRID", "build", "query", "prv_epsilon", "delta_error", "grid_size"]

MAX_GRID = 2**22  # grid points; beyond this eps_error is coarsened (~2 s build)
_MAX_EPS_ERROR = 0.5
_FAILURES = (RuntimeError, ValueError, OverflowError, FloatingPointError,
             ZeroDivisionError, MemoryError, AssertionError)


class PRVError(RuntimeError):
  """prv-accountant could not produce a bound for these inputs."""


def delta_error(delta: float) -> float:
  """The delta slack jtwin passes to prv-accountant: delta / 1000."""
  return delta / 1000.0


def _mesh(eps_error: float, max_steps: int, delta: float) -> float:
  """Grid spacing, exactly as `PRVAccountant.__init__` computes it."""
  return eps_error / np.sqrt(max_steps / 2 * np.log(12 / delta_error(delta)))


def _safe_domain(sigma: float, q: float, max_steps: int, delta: float,
                 eps_error: float) -> float:
  """`prv_accountant.accountant.compute_safe_domain_size` with jtwin's RDP."""
  d_err = delta_error(delta)
  l_max = max(_rdp.rdp_epsilon(sigma, q, max_steps, d_err / 4),
              _rdp.rdp_epsilon(sigma, q, 1, d_err / 8 / max_steps))
  return max(l_max, eps_error) + 3.0


def _fast_half_width(l_safe: float, dt: float) -> Tuple[float, int]:
  """An L >= l_safe whose aligned grid has an FFT-friendly even length.

  `Domain.create_aligned(-L, L, dt)` has 2 * (ceil(L / dt) + 1) points.

  Returns:
    (L, number of grid points).
  """
  n = 2 * (math.ceil(l_safe / dt) + 2)
  while True:
    n = fft.next_fast_len(n, real=True)
    if n % 2 == 0:
      break
    n += 1
  c = n // 2 - 1  # ceil(L / dt) we aim for; L = (c - 1/2) dt is robust to rounding
  return (c - 0.5) * dt, n


class _SubsampledGaussian(prv_accountant.PoissonSubsampledGaussianMechanism):
  """The library's PRV with a cheaper CDF and cell masses.

  * `cdf`: the same closed form as upstream,
    1 - (p/2) erfc(A) - ((1-p)/2) erfc(B) with
    A, B = (2 sigma^2 z -/+ 1) / (2 sqrt(2) sigma), z = log(1 + (e^t - 1)/p).
    Upstream evaluates z twice in long double and then rounds A, B to double
    for erfc; here z = log1p(expm1(t)/p) is evaluated once in double (no
    cancellation near t = 0), erfc in double as upstream, and the result is
    assembled in long double as upstream. It agrees with upstream to ~1e-16
    (tests/accounting/test_prv_adapter.py).
  * `probability(a, b)`: when the intervals are consecutive cells
    (b[k] == a[k+1] up to rounding), as in the library's cell-centred
    discretisation, the CDF is evaluated once per cell edge instead of twice,
    and the masses telescope exactly to the total.
  """

  def cdf(self, t):
    p, sigma = self.p, self.sigma
    t = np.asarray(t)
    td = np.asarray(t, dtype=np.float64)
    s, ps = float(sigma), float(p)
    with np.errstate(all="ignore"):
      z = np.log1p(np.expm1(td) / ps)
      erfc_a = special.erfc((2 * s * s * z - 1) / (2 * math.sqrt(2) * s))
      erfc_b = special.erfc((2 * s * s * z + 1) / (2 * math.sqrt(2) * s))
      out = (1 - p / 2 * erfc_a.astype(np.longdouble)
             - (1 - p) / 2 * erfc_b.astype(np.longdouble))
      return np.where(t > np.log(1 - p), out, np.longdouble(0.0))

  def probability(self, a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 1 and a.shape == b.shape and a.size > 2:
      width = b - a
      if width.min() > 0 and np.abs(a[1:] - b[:-1]).max() <= 1e-9 * width.min():
        return np.diff(self.cdf(np.concatenate([a[:1], b])))
    return self.cdf(b) - self.cdf(a)


def _mechanism(sigma: float, q: float):
  if q >= 1.0:
    return prv_accountant.GaussianMechanism(noise_multiplier=sigma)
  return _SubsampledGaussian(sampling_probability=q, noise_multiplier=sigma)


def _plan(sigma: float, q: float, max_steps: int, delta: float, eps_error: float,
          max_grid: int = MAX_GRID, coarsen: bool = True) -> Tuple[float, float, int]:
  """eps_error (coarsened if the grid would exceed max_grid), L, grid length.

  Raises:
    PRVError: the RDP domain bound is infinite, or the grid is too large
      (with coarsen=False; else if eps_error would exceed 0.5).
  """
  l_safe = _safe_domain(sigma, q, max_steps, delta, eps_error)
  if not math.isfinite(l_safe):
    raise PRVError("RDP domain bound is not finite")
  points = 2 * l_safe / _mesh(eps_error, max_steps, delta)
  if points > max_grid:
    eps_error *= points / max_grid * 1.01
    if not coarsen or eps_error > _MAX_EPS_ERROR:
      raise PRVError(f"PRV grid too large ({points:.3g} points)")
    l_safe = _safe_domain(sigma, q, max_steps, delta, eps_error)
  half_width, n = _fast_half_width(l_safe, _mesh(eps_error, max_steps, delta))
  return eps_error, half_width, n


def grid_size(noise_multiplier: float, sampling_prob: float, max_steps: int,
              delta: float, eps_error: float) -> int:
  """Number of grid points `build` would use (its cost is ~linear in it)."""
  return _plan(float(noise_multiplier), float(sampling_prob), int(max_steps),
               delta, eps_error)[2]


def build(noise_multiplier: float, sampling_prob: float, max_steps: int,
          delta: float, eps_error: float, *, max_grid: int = MAX_GRID,
          coarsen: bool = True) -> prv_accountant.PRVAccountant:
  """Builds a PRV accountant for up to `max_steps` steps.

  If the grid at `eps_error` would exceed `max_grid` points, eps_error is
  raised until it fits (the bounds stay valid, just wider; read the value
  used from `accountant.eps_error`), or, with coarsen=False, PRVError.

  Args:
    noise_multiplier: sigma > 0.
    sampling_prob: q in (0, 1].
    max_steps: the largest T that will be queried.
    delta: the delta that will be queried (sets delta_error = delta / 1000).
    eps_error: requested half-width of the certified epsilon interval.
    max_grid: grid points allowed (the cost is about linear in them).
    coarsen: whether to coarsen eps_error rather than fail on a large grid.

  Returns:
    A `prv_accountant.PRVAccountant`.

  Raises:
    PRVError: the library failed, or the grid is too large.
  """
  sigma, q, steps = float(noise_multiplier), float(sampling_prob), int(max_steps)
  eps_error, half_width, _ = _plan(sigma, q, steps, delta, eps_error, max_grid, coarsen)
  try:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
      warnings.simplefilter("ignore")
      return prv_accountant.PRVAccountant(
          prvs=[_mechanism(sigma, q)], eps_error=eps_error,
          delta_error=delta_error(delta), max_self_compositions=[steps],
          eps_max=half_width)
  except _FAILURES as e:
    raise PRVError(f"prv-accountant {type(e).__name__}: {e}") from e


def query(accountant: prv_accountant.PRVAccountant, delta: float,
          steps: int) -> Tuple[float, float, float]:
  """(lower, estimate, upper) epsilon after `steps` compositions.

  Raises:
    PRVError: the library failed or returned non-finite / unordered values.
  """
  try:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
      warnings.simplefilter("ignore")
      lower, estimate, upper = accountant.compute_epsilon(
          delta=delta, num_self_compositions=[int(steps)])
  except _FAILURES as e:
    raise PRVError(f"prv-accountant {type(e).__name__}: {e}") from e
  lower, estimate, upper = float(lower), float(estimate), float(upper)
  if not (math.isfinite(upper) and math.isfinite(lower) and lower <= estimate <= upper):
    raise PRVError(f"prv-accountant returned ({lower}, {estimate}, {upper})")
  return max(lower, 0.0), max(estimate, 0.0), max(upper, 0.0)


def prv_epsilon(noise_multiplier: float, sampling_prob: float, steps: int,
                delta: float, eps_error: float, **build_kwargs
                ) -> Tuple[float, float, float, float]:
  """One-shot PRV bounds (`build_kwargs`: see `build`).

  Returns:
    (lower, estimate, upper, eps_error actually used).

  Raises:
    PRVError: see `build` and `query`.
  """
  acc = build(noise_multiplier, sampling_prob, steps, delta, eps_error, **build_kwargs)
  return (*query(acc, delta, steps), float(acc.eps_error))
