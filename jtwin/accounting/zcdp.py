"""Zero-concentrated DP (zCDP): the accountant of the marginal-query method.

A mechanism is rho-zCDP when the Renyi divergence of order alpha between its
outputs on neighbouring data sets is at most rho * alpha for every alpha > 1
(Bun & Steinke 2016). rho adds up under composition, so a run that makes many
measurements and selections is accounted by summing their rho:

  * Gaussian mechanism, L2 sensitivity Delta, noise sd sigma:
    rho = Delta^2 / (2 sigma^2)  (`gaussian_rho`);
  * exponential mechanism with parameter epsilon0 (probabilities
    proportional to exp(epsilon0 * score / (2 Delta)), score sensitivity
    Delta): rho = epsilon0^2 / 8, by its bounded-range property (Cesar &
    Rogers 2021)  (`exponential_rho`).

`cdp_epsilon(rho, delta)` converts to (epsilon, delta)-DP with the tight
conversion of Canonne, Kamath & Steinke (2020, Prop. 12; private-pgm's
`cdp2adp.py` uses the same formula):

  delta = inf_{alpha > 1} exp((alpha - 1)(alpha rho - epsilon)) / (alpha - 1)
                          * (1 - 1/alpha)^alpha,

which is always at most the classical rho + 2 sqrt(rho log(1/delta)). Any
alpha > 1 gives a valid bound, so a slightly suboptimal alpha only loosens the
result; the bisections below round so that the returned epsilon is an upper
bound and the returned rho a lower bound (the safe directions). At
delta = 1e-5, epsilon = 1 corresponds to rho = 0.0306.
"""
from __future__ import annotations

import math

from jtwin.accounting import _validate

__all__ = ["cdp_delta", "cdp_epsilon", "cdp_rho", "exponential_rho", "gaussian_rho"]

_ITERS = 200


def gaussian_rho(sensitivity: float, sigma: float) -> float:
  """rho of the Gaussian mechanism: sensitivity^2 / (2 sigma^2)."""
  return float(sensitivity) ** 2 / (2.0 * float(sigma) ** 2)


def exponential_rho(epsilon0: float) -> float:
  """rho of the exponential mechanism with parameter epsilon0: epsilon0^2 / 8."""
  return float(epsilon0) ** 2 / 8.0


def _log_delta_at(alpha: float, rho: float, epsilon: float) -> float:
  return ((alpha - 1.0) * (alpha * rho - epsilon) + alpha * math.log1p(-1.0 / alpha)
          - math.log(alpha - 1.0))


def cdp_delta(rho: float, epsilon: float) -> float:
  """The delta at which rho-zCDP implies (epsilon, delta)-DP (tight, CKS 2020).

  The exponent is convex in alpha; its minimiser is found by bisection on the
  derivative (2 alpha - 1) rho - epsilon + log(1 - 1/alpha). Alpha is kept
  >= 1.01 for numerical stability (only the regime epsilon <~ rho, where
  delta is large anyway, is affected), which can only loosen the bound.
  """
  if rho < 0 or epsilon < 0:
    raise ValueError(f"rho and epsilon must be >= 0, got {rho}, {epsilon}")
  if rho == 0:
    return 0.0
  lo, hi = 1.01, (epsilon + 1.0) / (2.0 * rho) + 2.0
  for _ in range(_ITERS):
    alpha = 0.5 * (lo + hi)
    if (2.0 * alpha - 1.0) * rho - epsilon + math.log1p(-1.0 / alpha) < 0:
      lo = alpha
    else:
      hi = alpha
  log_delta = min(_log_delta_at(alpha, rho, epsilon) for alpha in (lo, hi, 0.5 * (lo + hi)))
  return min(1.0, math.exp(log_delta))


def cdp_epsilon(rho: float, delta: float) -> float:
  """The smallest epsilon (rounded up) such that rho-zCDP is (epsilon, delta)-DP."""
  delta = _validate.delta(delta)
  if rho < 0:
    raise ValueError(f"rho must be >= 0, got {rho}")
  if rho == 0:
    return 0.0
  # the classical bound rho + 2 sqrt(rho log 1/delta) always satisfies delta
  _, hi = _bisect(lambda e: cdp_delta(rho, e) <= delta,
                  0.0, rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta)))
  if cdp_delta(rho, hi) > delta:      # never expected; a bound must stay a bound
    raise ArithmeticError(f"zCDP conversion failed for rho = {rho}, delta = {delta}")
  return hi


def cdp_rho(epsilon: float, delta: float) -> float:
  """The largest rho (rounded down) such that rho-zCDP is (epsilon, delta)-DP."""
  epsilon = _validate.positive("epsilon", epsilon)
  delta = _validate.delta(delta)
  lo, _ = _bisect(lambda r: cdp_delta(r, epsilon) > delta, 0.0, epsilon + 1.0)
  return lo * (1.0 - 1e-9)   # margin: cdp_epsilon(cdp_rho(e, d), d) <= e despite rounding


def _bisect(flips, lo: float, hi: float) -> tuple:
  """Narrows [lo, hi] around where the monotone predicate `flips` becomes True
  (False at lo, True at hi); returns the final (lo, hi)."""
  for _ in range(_ITERS):
    mid = 0.5 * (lo + hi)
    if flips(mid):
      hi = mid
    else:
      lo = mid
  return lo, hi
