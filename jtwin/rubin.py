"""Rubin's rules for fully synthetic data: one estimate from m synthetic data sets.

Analyse each of m synthetic data sets (drawn from different posterior draws,
e.g. `jtwin napsumq --num_synthetic_records_per_parameter_sample n
--separate_output`) as if it were real, giving estimates q_i and their
variance estimates u_i, then combine them (Raghunathan, Reiter & Rubin 2003,
the rules twinify's NAPSU-MQ uses):

  q_bar = mean(q_i),  b = sample variance of q_i (ddof 1),  u_bar = mean(u_i)
  T = (1 + 1/m) b - u_bar,       nu = (m - 1) (1 - u_bar / ((1 + 1/m) b))^2

and the interval q_bar +- t_{nu, (1 + level)/2} sqrt(T). T can be negative
for small m; with `n_synthetic` and `n_original` given, the non-negative
variant replaces it by (n_synthetic / n_original) u_bar (Reiter 2002).

All functions work elementwise over any trailing shape (several
coefficients at once).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
from scipy.special import stdtrit

__all__ = ["RubinEstimate", "combine", "confidence_interval"]


class RubinEstimate(NamedTuple):
  """The combined estimate.

  Attributes:
    estimate: q_bar.
    variance: T (NaN where negative and no fallback was asked for).
    dof: the t distribution's degrees of freedom nu.
    between: b, the variance between data sets.
    within: u_bar, the mean variance estimate within data sets.
  """
  estimate: np.ndarray
  variance: np.ndarray
  dof: np.ndarray
  between: np.ndarray
  within: np.ndarray


def combine(estimates, variances, *, n_synthetic: Optional[int] = None,
            n_original: Optional[int] = None) -> RubinEstimate:
  """Combines per-data-set estimates [m, ...] and variances [m, ...].

  Raises:
    ValueError: fewer than 2 data sets, mismatched shapes, non-finite
      estimates, variances that are negative or not finite, or row counts
      that are not positive.
  """
  q = np.asarray(estimates, np.float64)
  u = np.asarray(variances, np.float64)
  if q.shape != u.shape:
    raise ValueError(f"estimates {q.shape} and variances {u.shape} must have one shape")
  if q.ndim == 0 or q.shape[0] < 2:
    raise ValueError("Rubin's rules need estimates from at least 2 synthetic data sets")
  if not np.all(np.isfinite(q)):
    raise ValueError("estimates must be finite")
  if not np.all(np.isfinite(u) & (u >= 0)):
    raise ValueError("variances must be finite and >= 0 (squared standard errors)")
  for name, value in (("n_synthetic", n_synthetic), ("n_original", n_original)):
    if value is not None and not value > 0:
      raise ValueError(f"{name} must be > 0, got {value}")
  m = q.shape[0]
  q_bar, b, u_bar = q.mean(0), q.var(0, ddof=1), u.mean(0)
  t = (1.0 + 1.0 / m) * b - u_bar
  if n_synthetic is not None and n_original is not None:
    t = np.where(t > 0, t, n_synthetic / n_original * u_bar)
  else:
    t = np.where(t > 0, t, np.nan)
  with np.errstate(divide="ignore", invalid="ignore"):
    dof = (m - 1) * (1.0 - u_bar / ((1.0 + 1.0 / m) * b)) ** 2
  return RubinEstimate(q_bar, t, dof, b, u_bar)


def confidence_interval(estimates, variances, level: float = 0.95, **kwargs):
  """(lower, upper) of the combined t interval; NaN where T is undefined."""
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}")
  r = combine(estimates, variances, **kwargs)
  half = stdtrit(r.dof, 0.5 + level / 2.0) * np.sqrt(r.variance)
  return r.estimate - half, r.estimate + half
