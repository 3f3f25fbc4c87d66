"""Denoising an integer column's noisy 1-way histogram by a robust smooth fit.

An integer column with one cell per value (Adult's age: 74 ages) has a noisy
count per cell with noise sd sigma (27 rows on Adult at epsilon = 1), so a
range of a few values carries the noise of every cell in it. Most such
densities are smooth, and a smooth fit to the noisy counts removes most of
that noise; but some columns have spikes (40 hours a week) that a smooth fit
would flatten. So each such column (at least `MIN_CELLS` cells, at least 3/4
of its base cells single values; binned columns are never tried) is
fitted, and the fit is used only when it explains the noisy counts within
their noise:

  1. The log density l_i of cell i (count / width) maximises
       -1/2 sum_i (y_i - w_i exp(l_i))^2 / v_i
         - weight * sum_i log(1 + ((l_{i+1} - 2 l_i + l_{i-1}) / scale)^2),
     a Gaussian likelihood of the noisy counts y (variances v) and a robust
     (Cauchy) penalty on the second differences of the log density: a smooth
     curve, with room for a few kinks (one spike survives). Merged cells are
     wider: the differences are divided differences over the cells'
     centres, so a smooth density is smooth whatever the cells' widths.
  2. chi^2 = sum_i (y_i - fit_i)^2 / v_i. When chi^2 <= `accept` * cells the
     fitted counts replace the noisy ones; otherwise the column keeps its
     noisy counts. On Adult at epsilon = 1 (seeds 0-5), age gives chi^2 of
     1.7 to 2.2 per cell and is smoothed; hours per week, with a spike every
     five hours, gives 4 to 9 and keeps its counts. At epsilon = 0.3 the
     noise is larger and hours is smoothed too (chi^2 about 1: the fit, its
     spikes kept by the robust penalty, is within the noise); at epsilon = 3
     only age is.

Post-processing of the noisy counts (and of the public cells): it costs no
privacy. Measured effects: benchmarks/README.md §6.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["SmoothFit", "fit_sensitivity", "smooth_histogram", "smooth_one_way"]

SCALE = 0.1          # the Cauchy penalty's scale on second differences of log density
ACCEPT = 3.0         # largest chi^2 per cell at which the smooth fit is used
MIN_CELLS = 16       # fewer observed cells: left as they are


class SmoothFit(NamedTuple):
  """A smooth fit to one noisy histogram.

  Attributes:
    counts: float64 [cells] the fitted counts.
    chi2: sum of squared standardised residuals of the noisy counts.
    accepted: chi2 <= accept * cells.
  """
  counts: np.ndarray
  chi2: float
  accepted: bool


def smooth_histogram(noisy: np.ndarray, variance: np.ndarray, width: np.ndarray, *,
                     weight: float, scale: float = SCALE, accept: float = ACCEPT,
                     newton: bool = False) -> SmoothFit:
  """The robust smooth fit of step 1 and the check of step 2 (module docstring).

  Args:
    noisy: float [C] noisy counts of consecutive cells (C >= 3).
    variance: float [C] their noise variances (> 0).
    width: float [C] the cells' widths (> 0; only their ratios matter).
    weight: the penalty's weight (> 0).
    scale: the penalty's scale.
    accept: largest chi^2 per cell at which the fit is accepted.
    newton: optimise by damped Newton steps (`_newton`: converged, and tens
      of times faster on long runs) instead of L-BFGS capped at 5,000
      iterations (the 1-way smoothing's measured default).

  Returns:
    a `SmoothFit`.
  """
  y = np.asarray(noisy, np.float64)
  var = np.asarray(variance, np.float64)
  w = np.asarray(width, np.float64)
  w = w / w.mean()
  floor = np.sqrt(var.mean())         # a start that never takes the log of 0
  start = np.log(np.maximum(y, floor) / w)
  coef = _second_differences(w)
  if newton:
    l = _newton(start, y, var, w, weight, scale, coef)
  else:
    from scipy.optimize import minimize
    l = minimize(_objective, start, args=(y, var, w, weight, scale, coef), jac=True,
                 method="L-BFGS-B", options={"maxiter": 5000}).x
  counts = w * np.exp(l)
  chi2 = float(np.sum((y - counts) ** 2 / var))
  ok = bool(np.all(np.isfinite(counts)) and chi2 <= accept * len(y))
  return SmoothFit(counts, chi2, ok)


def fit_sensitivity(counts: np.ndarray, noisy: np.ndarray, variance: np.ndarray,
                    width: np.ndarray, *, weight: float, scale: float = SCALE) -> np.ndarray:
  """How the smooth fit moves with the noisy counts: d counts_i / d noisy_j.

  At the optimum of step 1 the gradient g(l, y) = -J V^-1 (y - x) + grad P(l)
  vanishes (x = w exp(l), J = diag(x), V = diag(variance), P the penalty), so
  by the implicit function theorem dl/dy = H^-1 J V^-1 with H the Hessian of
  the objective in l, and dx/dy = J H^-1 J V^-1. Its trace is the fit's
  degrees of freedom (used by `jtwin.marginals.run_decoding`'s risk estimate).

  Args:
    counts: float [C] the fitted counts (`SmoothFit.counts`).
    noisy, variance, width, weight, scale: as given to `smooth_histogram`.

  Returns:
    float64 [C, C]; NaN where the Hessian is not positive definite (not a
    proper minimum).
  """
  y = np.asarray(noisy, np.float64)
  var = np.asarray(variance, np.float64)
  w = np.asarray(width, np.float64)
  w = w / w.mean()
  x = np.asarray(counts, np.float64)
  l = np.log(np.maximum(x, np.finfo(np.float64).tiny) / w)
  hess = _hessian(l, y, var, w, weight, scale, _second_differences(w))
  jac = np.diag(x)
  try:
    chol = np.linalg.cholesky(hess)      # fails unless the optimum is a proper minimum
  except np.linalg.LinAlgError:
    return np.full((len(y), len(y)), np.nan)
  half = np.linalg.solve(chol, jac)      # L^-1 J, so J H^-1 J = half^T half
  return (half.T @ half) / var[None, :]


def _hessian(l, y, var, w, weight, scale, coef):
  """[C, C] Hessian of `_objective` in the log densities l."""
  x = w * np.exp(l)
  hess = np.diag((x * x - (y - x) * x) / var)
  u = (coef[0] * l[:-2] + coef[1] * l[1:-1] + coef[2] * l[2:]) / scale
  curv = weight * 2.0 * (1.0 - u * u) / (scale * scale * (1.0 + u * u) ** 2)  # P'' per d2
  i = np.arange(len(u))
  for a in range(3):
    for b in range(3):
      np.add.at(hess, (i + a, i + b), curv * coef[a] * coef[b])
  return hess


def _newton(l, y, var, w, weight, scale, coef, *, max_steps=500):
  """A local minimum of `_objective` by damped Newton steps (Levenberg-Marquardt).

  The objective has a banded Hessian of C <= a few hundred cells, so exact
  Newton steps converge in tens of iterations where L-BFGS needs thousands
  (a long, mostly empty tail pushes log densities down a shallow valley).
  """
  value, grad = _objective(l, y, var, w, weight, scale, coef)
  damping = 1e-3
  for _ in range(max_steps):
    if np.max(np.abs(grad)) <= 1e-9 * (1.0 + abs(value)):
      break
    hess = _hessian(l, y, var, w, weight, scale, coef)
    scale_diag = np.maximum(np.abs(np.diag(hess)), 1e-12)
    while damping < 1e12:
      try:
        step = np.linalg.solve(hess + damping * np.diag(scale_diag), -grad)
      except np.linalg.LinAlgError:
        damping *= 10.0
        continue
      with np.errstate(over="ignore", invalid="ignore"):   # a too-long step: rejected below
        new_value, new_grad = _objective(l + step, y, var, w, weight, scale, coef)
      if np.isfinite(new_value) and new_value <= value:
        break
      damping *= 10.0
    else:
      break
    done = value - new_value <= 1e-13 * (1.0 + abs(value))
    l, value, grad = l + step, new_value, new_grad
    damping = max(damping / 10.0, 1e-9)
    if done:
      break
  return l


def _second_differences(width: np.ndarray) -> np.ndarray:
  """[3, C - 2] weights of l[:-2], l[1:-1], l[2:] in the second derivative at each
  inner cell's centre, for contiguous cells of these widths (divided
  differences), scaled by the median spacing squared: the plain second
  difference l[i+1] - 2 l[i] + l[i-1] when all widths are equal."""
  centre = np.cumsum(width) - width / 2.0
  h = np.diff(centre)                                  # [C - 1] spacings
  h0, h1 = h[:-1], h[1:]
  unit = np.median(h) ** 2
  scale = 2.0 * unit / (h0 + h1)
  return np.stack([scale / h0, -scale * (1.0 / h0 + 1.0 / h1), scale / h1])


def _objective(l, y, var, w, weight, scale, coef):
  """Negative log posterior of log densities l [C] and its gradient (step 1)."""
  x = w * np.exp(l)
  r = y - x
  d2 = coef[0] * l[:-2] + coef[1] * l[1:-1] + coef[2] * l[2:]
  u = d2 / scale
  value = 0.5 * np.sum(r * r / var) + weight * np.sum(np.log1p(u * u))
  g2 = weight * 2.0 * u / (scale * (1.0 + u * u))        # d penalty / d d2
  grad = -(r / var) * x
  grad[:-2] += coef[0] * g2
  grad[1:-1] += coef[1] * g2
  grad[2:] += coef[2] * g2
  return value, grad


def _one_per_value(cell) -> bool:
  """Whether (at least 3/4 of) the column's base cells are single values.

  An integer column's cells: one per value in its range, with a few tail
  intervals when the range came from the DP domain step. Quantile bins of
  very unequal widths are left alone (measured: smoothing them made the
  loans-like table worse).
  """
  if cell.kind != "numeric" or cell.point is None or not len(cell.point):
    return False
  return 4 * sum(bool(p) for p in cell.point) >= 3 * len(cell.point)


def _widths(cell) -> np.ndarray:
  edges = np.asarray(cell.edges, np.float64)
  return np.array([edges[max(g) + 1] - edges[min(g)] for g in cell.groups])


def smooth_one_way(cells: Sequence, measurements: Sequence, weight: float, *,
                   accept: float = ACCEPT):
  """Numeric columns' 1-way tables with their smooth fits where accepted.

  Args:
    cells: the columns' `jtwin.marginals.cells.CellColumn`s (after compression).
    measurements: per column, its 1-way `Measurement` over those cells (the
      missing cell last, where present; it is left as it is).
    weight: the penalty's weight; 0 returns the measurements unchanged.
    accept: largest chi^2 per cell at which a fit is used.

  Returns:
    (measurements, smoothed): the new list, and the names of the columns
    whose counts were replaced by their smooth fit.
  """
  out, smoothed = [], []
  for cell, m in zip(cells, measurements):
    k = cell.num_cells
    if weight <= 0 or not _one_per_value(cell) or k < MIN_CELLS:
      out.append(m)
      continue
    fit = smooth_histogram(m.noisy[:k], m.variance[:k], _widths(cell), weight=weight,
                           accept=accept)
    if not fit.accepted:
      out.append(m)
      continue
    noisy = np.array(m.noisy, np.float64)
    noisy[:k] = fit.counts
    out.append(m._replace(noisy=noisy))
    smoothed.append(cell.name)
  return out, smoothed
