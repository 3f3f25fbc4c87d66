"""Epsilon spent by DP-SGD: PRV bounds, checked against (and backed by) RDP.

The mechanism, relation and inputs are described in `jtwin.accounting`.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional, Tuple

from jtwin.accounting import _validate
from jtwin.accounting import prv as _prv
from jtwin.accounting import rdp as _rdp

__all__ = ["EpsilonBounds", "epsilon", "DEFAULT_EPS_ERROR"]

DEFAULT_EPS_ERROR = 0.01  # half-width of the certified PRV interval
_RETRY_EPS_ERROR = 0.1  # after a failure at the requested eps_error


class EpsilonBounds(NamedTuple):
  """Bounds on the epsilon of DP-SGD at a given delta.

  The true epsilon(delta) of the mechanism lies in [lower, upper]; `upper` is
  the figure jtwin reports and relies on.

  Attributes:
    lower: a valid lower bound (PRV), or 0.0 when prv-accountant failed.
    estimate: PRV point estimate (accurate to ~1e-3 even at coarse grids),
      capped at `upper`; equals `upper` when prv-accountant failed.
    upper: the certified upper bound: min(PRV upper, RDP bound), both valid
      upper bounds.
    accountant: which bound `upper` is: "prv" or "rdp" (RDP either because it
      was the smaller bound or because prv-accountant failed; `lower == 0.0`
      tells the two apart).
  """
  lower: float
  estimate: float
  upper: float
  accountant: str


def combine(prv_bounds: Optional[Tuple[float, float, float]],
            rdp_epsilon: float) -> EpsilonBounds:
  """Merges PRV (lower, estimate, upper) (None if it failed) with an RDP bound.

  Args:
    prv_bounds: (lower, estimate, upper) from prv-accountant, or None.
    rdp_epsilon: the RDP upper bound (may be +inf).

  Returns:
    `EpsilonBounds` whose upper is the smaller of the two upper bounds.

  Raises:
    ArithmeticError: neither bound is finite.
  """
  if prv_bounds is None:
    if not math.isfinite(rdp_epsilon):
      raise ArithmeticError("neither prv-accountant nor RDP gave a finite epsilon")
    return EpsilonBounds(0.0, rdp_epsilon, rdp_epsilon, "rdp")
  lower, estimate, upper = prv_bounds
  if rdp_epsilon < upper:
    upper, name = rdp_epsilon, "rdp"
  else:
    name = "prv"
  return EpsilonBounds(min(lower, upper), min(estimate, upper), upper, name)


def prv_or_none(noise_multiplier: float, sampling_prob: float, steps: int,
                delta: float, eps_error: float) -> Optional[Tuple[float, float, float]]:
  """PRV (lower, estimate, upper), retried once at eps_error 0.1; None if it fails."""
  for err in (eps_error,) if eps_error >= _RETRY_EPS_ERROR else (eps_error, _RETRY_EPS_ERROR):
    try:
      return _prv.prv_epsilon(noise_multiplier, sampling_prob, steps, delta, err)[:3]
    except _prv.PRVError:
      continue
  return None


@functools.lru_cache(maxsize=1024)
def _epsilon(sigma: float, q: float, steps: int, delta: float,
             eps_error: float) -> EpsilonBounds:
  return combine(prv_or_none(sigma, q, steps, delta, eps_error),
                 _rdp.rdp_epsilon(sigma, q, steps, delta))


def epsilon(noise_multiplier: float, sampling_prob: float, steps: int,
            delta: float, *, eps_error: float = DEFAULT_EPS_ERROR) -> EpsilonBounds:
  """Epsilon spent by `steps` DP-SGD steps (Poisson sampling, add/remove).

  prv-accountant gives (lower, estimate, upper) with
  delta_error = delta / 1000; if it raises, it is retried at eps_error 0.1
  and then replaced by the RDP bound. The reported upper bound is
  min(PRV upper, RDP), and `accountant` says which one it is. Results are
  cached in memory per input tuple.

  Args:
    noise_multiplier: sigma > 0: Gaussian noise std divided by the clip norm.
    sampling_prob: Poisson sampling rate q, 0 < q <= 1 (1: full batch).
    steps: number of noisy steps T >= 1.
    delta: target delta, 0 < delta < 1.
    eps_error: half-width of the PRV interval (keyword only).

  Returns:
    `EpsilonBounds(lower, estimate, upper, accountant)`.

  Raises:
    ValueError: (`jtwin.errors.JtwinInputError`) an argument out of range.

  Privacy:
    Uses public values only; see `jtwin.accounting` for the mechanism.

  Examples:
    >>> b = epsilon(2.0, 0.01, 10_000, 1e-5)
    >>> round(b.estimate, 2), b.accountant
    (2.16, 'prv')
  """
  return _epsilon(_validate.positive("noise_multiplier", noise_multiplier),
                  _validate.probability("sampling_prob", sampling_prob),
                  _validate.steps(steps), _validate.delta(delta),
                  _validate.positive("eps_error", eps_error))
