"""Noise calibration: the smallest sigma whose certified epsilon meets a target.

Recipe (dp_engines.md §3.4); ~50x faster than
`prv_accountant.dpsgd.find_noise_multiplier(eps_error=0.01)` at the same
certified resolution (benchmarks/bench_accounting.py):

1. RDP bracket: sigma_rdp, the smallest sigma whose RDP bound is <= target
   (closed form per probe, ~2 ms). It is already certified; the answer lies
   below it (typically 5-10% below).
2. Coarse search on the PRV *estimate*, which is far more accurate than the
   grid's eps_error (relative bias ~0.05 (eps_error / eps)^2, always upwards
   here): a safeguarded secant in (log sigma, log eps) on
   estimate(delta - delta_error) + eps_fine, first at eps_error
   min(0.25, target / 2), then at min(0.1, target / 5), aiming at
   target - eps_fine / 10. Cost per probe is ~linear in 1 / eps_error and in
   sqrt(T).
3. One certification at eps_fine (`fine_eps_error`: 0.01, within
   [target / 400, target / 100]): the certified upper
   bound (min of PRV upper and RDP) must be <= target; if not, sigma is raised
   a little and re-certified. Any prv-accountant failure falls back to
   sigma_rdp, certified by RDP.

Results are cached in memory per input tuple.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional, Tuple

from scipy import optimize

from jtwin.accounting import _validate
from jtwin.accounting import bounds as _bounds
from jtwin.accounting import prv as _prv
from jtwin.accounting import rdp as _rdp
from jtwin.errors import JtwinInputError

__all__ = ["Calibration", "calibrate_noise", "SIGMA_MAX", "fine_eps_error"]

SIGMA_MAX = 1e4  # no search above this noise multiplier
_SIGMA_MIN = 1e-2
_COARSE = ((0.25, 0.5), (0.1, 0.2))  # per stage: eps_error min(a, b * target)
_REL_TOL = (5e-3, 2e-4)  # tolerance on log(eps) per stage
_MARGIN = 0.1  # aim at target - _MARGIN * eps_fine
_MAX_RECERTIFY = 3
_PROBE_MAX_GRID = 2**20  # a search probe needing more points counts as failed


class Calibration(NamedTuple):
  """A calibrated noise multiplier and its certified epsilon.

  Attributes:
    noise_multiplier: sigma (noise std / clip norm).
    bounds: `EpsilonBounds` at that sigma; `bounds.upper <= epsilon target`,
      and `bounds.accountant` names the accountant that certified it.
  """
  noise_multiplier: float
  bounds: _bounds.EpsilonBounds


def fine_eps_error(target: float) -> float:
  """eps_error of the final certification, for an epsilon target.

  0.01, but at most target / 100 (so that small targets stay tight) and at
  least target / 400 (large targets need no finer than 0.25%; the grid cost
  grows with the target and with 1 / eps_error).
  """
  return min(target / 100.0, max(_bounds.DEFAULT_EPS_ERROR, target / 400.0))


def _rdp_sigma(target: float, delta: float, q: float, steps: int) -> float:
  """Smallest sigma (to ~1e-4 relative) whose RDP epsilon is <= target."""
  def excess(log_sigma: float) -> float:
    eps = _rdp.rdp_epsilon(math.exp(log_sigma), q, steps, delta)
    return math.log(max(eps, 1e-300)) - math.log(target)
  lo, hi = math.log(_SIGMA_MIN), math.log(SIGMA_MAX)
  if excess(hi) > 0:
    return math.inf
  if excess(lo) <= 0:
    return _SIGMA_MIN
  x = optimize.brentq(excess, lo, hi, xtol=1e-5)
  sigma = math.exp(x + 1e-5)
  while _rdp.rdp_epsilon(sigma, q, steps, delta) > target:
    sigma *= 1 + 1e-4
  return sigma


def _secant(f: Callable[[float], float], x: float, fx: Optional[float],
            slope: float, tol: float, x_hi: float, x_lo: float,
            max_iter: int = 10) -> Tuple[float, float, float]:
  """Safeguarded secant for a decreasing f: finds x with -tol <= f(x) <= 0.

  Args:
    f: decreasing function of x = log sigma (+inf where PRV failed).
    x: starting point; fx: f(x) if already known, else None.
    slope: initial guess of df/dx (< 0; about -1 in log-log).
    tol: acceptance width.
    x_hi: a point known to satisfy f(x_hi) <= 0.
    x_lo: the search never goes below this point.

  Returns:
    (x, f(x), slope estimate) with f(x) <= 0. After max_iter, the smallest
    evaluated x with f(x) <= 0, or (x_hi, -inf, slope) if there is none.
  """
  lo = x_lo  # largest x seen with f > 0 (or the floor)
  best = (x_hi, -math.inf)  # smallest x seen with f <= 0
  if fx is None:
    fx = f(x)
  for _ in range(max_iter):
    if best[0] - lo < 1e-7:  # bracket collapsed (f is not smooth at this scale)
      break
    if fx <= 0:
      if fx >= -tol:
        return x, fx, slope
      if x < best[0]:
        best = (x, fx)
    else:
      lo = max(lo, x)
    x_new = x - (fx + tol / 2) / slope if math.isfinite(fx) else math.nan
    if not lo < x_new < best[0]:  # also catches nan
      x_new = 0.5 * (lo + best[0])
    f_new = f(x_new)
    if math.isfinite(f_new) and math.isfinite(fx) and x_new != x and f_new != fx:
      slope = min(max((f_new - fx) / (x_new - x), -10.0), -0.1)
    x, fx = x_new, f_new
  if fx <= 0 and x < best[0]:
    best = (x, fx)
  return best[0], best[1], slope


@functools.lru_cache(maxsize=256)
def _calibrate(target: float, delta: float, q: float, steps: int) -> Calibration:
  rdp_at = functools.partial(_rdp.rdp_epsilon, sampling_prob=q, steps=steps, delta=delta)
  eps_fine = fine_eps_error(target)
  sigma_top = _rdp_sigma(target, delta, q, steps)  # certified by RDP
  if math.isfinite(sigma_top):
    fallback = Calibration(sigma_top, _bounds.EpsilonBounds(
        0.0, rdp_at(sigma_top), rdp_at(sigma_top), "rdp"))
  else:  # RDP cannot certify any sigma <= SIGMA_MAX; perhaps PRV can
    sigma_top = SIGMA_MAX
    fallback = Calibration(SIGMA_MAX, _bounds._epsilon(SIGMA_MAX, q, steps, delta, eps_fine))
    if fallback.bounds.upper > target:
      raise JtwinInputError(
          f"epsilon={target:g} is not reachable with noise_multiplier <= {SIGMA_MAX:g} "
          f"(certified epsilon there is {fallback.bounds.upper:.4g} for delta={delta:g}, "
          f"sampling_prob={q:g}, steps={steps}); raise epsilon or delta, or "
          "lower sampling_prob or steps")
  try:  # the eps_error the fine build will really use (coarsened if huge)
    planned = _prv._plan(0.85 * sigma_top, q, steps, delta, eps_fine)[0]
    eps_fine = 1.02 * planned if planned > eps_fine else eps_fine
  except _prv.PRVError:
    pass
  if eps_fine >= target / 2:  # the PRV grid this needs is too large
    return fallback
  aim = math.log(target - _MARGIN * eps_fine)

  def excess(eps_error: float) -> Callable[[float], float]:
    def f(x: float) -> float:  # predicted fine upper bound vs the aim, in log
      try:
        _, _, upper, used = _prv.prv_epsilon(math.exp(x), q, steps, delta, eps_error,
                                             max_grid=_PROBE_MAX_GRID, coarsen=False)
      except _prv.PRVError:
        return math.inf  # treat as "not certifiable": search larger sigma
      return math.log(max(upper - used + eps_fine, 1e-300)) - aim
    return f

  # The coarse estimate's bias is ~0.05 (eps_error / target)^2 relative.
  coarse = [min(a, b * target) for a, b in _COARSE]
  x_top = math.log(sigma_top)
  f_top = excess(coarse[0])(x_top)
  if f_top > 0:  # PRV cannot beat RDP (or fails) here
    return fallback
  # log-log slope of the RDP curve: a good first guess for the PRV curve's.
  r0, r1 = rdp_at(sigma_top), rdp_at(sigma_top * 1.02)
  slope = math.log(r1 / r0) / math.log(1.02) if 0 < r1 < r0 < math.inf else -1.0
  x_min = math.log(_SIGMA_MIN)
  x, _, slope = _secant(excess(coarse[0]), x_top, f_top, min(slope, -0.1),
                        _REL_TOL[0], x_top, x_min)
  x, _, _ = _secant(excess(coarse[1]), x, None, slope, _REL_TOL[1], x_top, x_min)
  sigma = math.exp(x)
  try:
    for _ in range(_MAX_RECERTIFY):
      if sigma >= sigma_top:
        return fallback
      lower, estimate, upper, _ = _prv.prv_epsilon(sigma, q, steps, delta, eps_fine)
      cert = _bounds.combine((lower, estimate, upper), rdp_at(sigma))
      if cert.upper <= target:
        return Calibration(sigma, cert)
      sigma *= 1 + 1.5 * (cert.upper - target) / target + 1e-3
  except _prv.PRVError:
    pass
  return fallback


def calibrate_noise(epsilon: float, delta: float, sampling_prob: float,
                    steps: int) -> Calibration:
  """Smallest noise multiplier whose certified epsilon is <= `epsilon`.

  Certified means the upper bound min(PRV upper at eps_error
  `fine_eps_error(epsilon)` (0.01 within [epsilon / 400, epsilon / 100]),
  RDP), and the returned sigma is within ~0.5% of the smallest sigma that
  prv-accountant certifies at that resolution.
  Where prv-accountant fails (e.g. very large epsilon), the RDP-calibrated
  sigma is returned and `bounds.accountant == "rdp"`.

  Args:
    epsilon: target epsilon > 0.
    delta: target delta, 0 < delta < 1.
    sampling_prob: Poisson sampling rate q, 0 < q <= 1.
    steps: number of noisy steps T >= 1.

  Returns:
    `Calibration(noise_multiplier, bounds)` with `bounds.upper <= epsilon`.

  Raises:
    ValueError: (`jtwin.errors.JtwinInputError`) an argument out of range,
      or a target that no sigma <= `SIGMA_MAX` reaches.

  Privacy:
    Uses public values only; see `jtwin.accounting` for the mechanism.

  Examples:
    >>> cal = calibrate_noise(1.0, 1e-5, 0.01, 1000)
    >>> cal.bounds.upper <= 1.0, cal.bounds.accountant
    (True, 'prv')
  """
  return _calibrate(_validate.positive("epsilon", epsilon), _validate.delta(delta),
                    _validate.probability("sampling_prob", sampling_prob),
                    _validate.steps(steps))
