"""Inverse accounting: how many DP-SGD steps a privacy budget allows.

Coarse-then-certify, as for the noise calibration:

1. RDP gives, in closed form, a number of steps T_rdp that is already
   certified (RDP is an upper bound).
2. A coarse PRV accountant (eps_error 0.1, whose estimate is accurate to
   ~1e-3) locates the T where estimate + eps_fine crosses the budget; one
   accountant built for the largest T answers every smaller T with one FFT.
3. One fine accountant (eps_error `fine_eps_error(budget)`) certifies the
   answer: the coarse prediction is corrected by the fine/coarse offset
   measured at that T, and the final T is checked to pass while T + 1 fails
   (binary search if the prediction was off).

If prv-accountant fails, T_rdp is returned.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import prv_accountant

from jtwin.accounting import _validate
from jtwin.accounting import bounds as _bounds
from jtwin.accounting import prv as _prv
from jtwin.accounting import rdp as _rdp
from jtwin.accounting.calibrate import fine_eps_error
from jtwin.errors import JtwinInputError

__all__ = ["steps_for_epsilon", "MAX_STEPS"]

MAX_STEPS = 10**7  # the search never returns more steps than this
_COARSE = 0.1


def _largest(ok: Callable[[int], bool], lo: int, hi: int) -> int:
  """Largest t in [lo, hi) with ok(t), given ok(lo) and not ok(hi)."""
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if ok(mid):
      lo = mid
    else:
      hi = mid
  return lo


def _rdp_steps(max_eps: float, sigma: float, q: float, delta: float) -> int:
  """Largest T <= MAX_STEPS whose RDP bound is <= max_eps (0 if none)."""
  t = _rdp.rdp_max_steps(max_eps, sigma, q, delta)
  t = int(min(t, MAX_STEPS))
  while t > 0 and _rdp.rdp_epsilon(sigma, q, t, delta) > max_eps:
    t -= 1  # guards the floor() in the closed form against rounding
  return t


def _predicted(acc: prv_accountant.PRVAccountant, delta: float, steps: int,
               eps_fine: float) -> float:
  """Fine upper bound predicted from a coarse accountant."""
  return _prv.query(acc, delta, steps)[2] - acc.eps_error + eps_fine


@functools.lru_cache(maxsize=256)
def _steps(max_eps: float, sigma: float, q: float, delta: float) -> int:
  eps_fine = fine_eps_error(max_eps)
  one = _bounds._epsilon(sigma, q, 1, delta, eps_fine)
  if one.upper > max_eps:
    raise JtwinInputError(
        f"max_epsilon={max_eps:g} is exceeded by a single step (certified "
        f"epsilon {one.upper:.4g} at noise_multiplier={sigma:g}, "
        f"sampling_prob={q:g}, delta={delta:g}); raise noise_multiplier or "
        "max_epsilon")
  t_lo = max(1, _rdp_steps(max_eps, sigma, q, delta))  # certified
  if t_lo >= MAX_STEPS:
    return MAX_STEPS
  try:
    # 1. Coarse: bracket and locate the crossing of the predicted fine bound.
    t_hi = max(t_lo + 8, math.ceil(1.5 * t_lo))
    while True:
      t_hi = min(t_hi, MAX_STEPS)
      coarse = _prv.build(sigma, q, t_hi, delta, _COARSE)
      if _predicted(coarse, delta, t_hi, eps_fine) > max_eps:
        break
      if t_hi == MAX_STEPS:
        return MAX_STEPS  # not certified at MAX_STEPS by the coarse bound
      t_hi *= 2
    t_c = _largest(lambda t: _predicted(coarse, delta, t, eps_fine) <= max_eps,
                   t_lo, t_hi)
    # 2. Fine: correct the prediction by the offset measured at t_c.
    top = min(t_c + max(4, math.ceil(5e-3 * t_c)), MAX_STEPS)
    fine = _prv.build(sigma, q, top, delta, eps_fine)

    def ok(t: int) -> bool:
      upper = min(_prv.query(fine, delta, t)[2], _rdp.rdp_epsilon(sigma, q, t, delta))
      return upper <= max_eps

    offset = (min(_prv.query(fine, delta, t_c)[2], _rdp.rdp_epsilon(sigma, q, t_c, delta))
              - _predicted(coarse, delta, t_c, eps_fine))
    corrected = lambda t: _predicted(coarse, delta, t, eps_fine) + offset <= max_eps
    reach = min(top, t_hi)  # both accountants answer every t <= reach
    near = max(t_lo, 2 * t_c - top)
    start = near if near > t_lo and corrected(near) else t_lo
    guess = _largest(corrected, start, reach + 1) if corrected(start) else t_lo
    # 3. Certify: guess passes and guess + 1 fails (else binary search).
    if not ok(guess):
      return _largest(ok, t_lo, guess)
    if guess == top or not ok(guess + 1):
      return guess
    return top if ok(top) else _largest(ok, guess + 1, top)
  except _prv.PRVError:
    return t_lo


def steps_for_epsilon(max_epsilon: float, noise_multiplier: float,
                      sampling_prob: float, delta: float) -> int:
  """Largest number of steps T whose certified epsilon is <= `max_epsilon`.

  Certified means min(PRV upper at eps_error `fine_eps_error(max_epsilon)`,
  RDP), as in `calibrate_noise`. If prv-accountant fails, the RDP answer is
  returned. The search stops at `MAX_STEPS` (1e7).

  Args:
    max_epsilon: the epsilon budget > 0.
    noise_multiplier: sigma > 0.
    sampling_prob: Poisson sampling rate q, 0 < q <= 1.
    delta: delta, 0 < delta < 1.

  Returns:
    T >= 1.

  Raises:
    ValueError: (`jtwin.errors.JtwinInputError`) an argument out of range, or
      a budget that even one step exceeds.

  Privacy:
    Uses public values only; see `jtwin.accounting` for the mechanism.

  Examples:
    >>> steps_for_epsilon(1.0, 1.0, 0.01, 1e-5)
    247
  """
  return _steps(_validate.positive("max_epsilon", max_epsilon),
                _validate.positive("noise_multiplier", noise_multiplier),
                _validate.probability("sampling_prob", sampling_prob),
                _validate.delta(delta))
