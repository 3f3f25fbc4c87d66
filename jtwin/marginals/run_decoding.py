"""How a merged numeric cell spreads its rows over its base cells.

`cells.compress` merges runs of adjacent numeric cells whose noisy 1-way
counts are small. The model then knows only the run's total; the decoder
draws each row's base cell within the run in proportion to per-cell weights
taken from the run's own noisy counts y_i (noise variance v_i = sigma^2).
Two estimates of the run's true counts x_i are candidates:

  * clip: max(y_i - s_i, 0), with s_i = sigma for interval cells and 0 for
    one-value cells (the long-standing rule, computed by `cells.compress`). Where most of a long run is
    empty (the tail of a 10,000-row table at epsilon = 0.3: open accounts
    from 16 to 237, real values up to 56), every empty cell still gets
    about 0.4 sigma, and the decoder spreads rows over the whole range.
  * smooth: the robust smooth fit of `histogram.smooth_histogram` to the
    run's noisy counts, except that cells above `SPIKE_SIGMAS` sigma keep
    their clipped count (a heaped value, such as 80 hours a week, is not
    flattened into its neighbours).

The run decodes by the blend f = clip + lam (smooth - clip), lam in [0, 1],
that minimises Stein's unbiased risk estimate of the squared error
sum_i (f_i - x_i)^2, known noise variances given:

  SURE(f) = sum_i (f_i - y_i)^2 + 2 sum_i v_i df_i/dy_i - sum_i v_i.

The clip's derivative is 1 where y_i > s_i and 0 elsewhere; the smooth
fit's is the diagonal of d fit / d y at the optimum (implicit function
theorem, `histogram.fit_sensitivity`). SURE of the blend is quadratic in
lam, so its minimiser has a closed form (clipped to [0, 1]): lam = 0 keeps
the clip, lam = 1 takes the smooth fit. Blending rather than choosing one
keeps part of the clip where a smooth fit misses real heaps just under the
spike threshold (measured: benchmarks/README.md §6, eleventh session).
Everything here is post-processing of the noisy counts.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jtwin.marginals import histogram

__all__ = ["RunDecoding", "decode_run", "run_chooser", "SPIKE_SIGMAS"]

SPIKE_SIGMAS = 3.0   # a cell above this many noise sds keeps its own (clipped) count
MIN_RUN = 3          # shorter runs keep the clipped counts


class RunDecoding(NamedTuple):
  """The weights of one merged run's base cells.

  Attributes:
    weights: float64 [k] non-negative, unnormalised: clip + share * (smooth - clip).
    share: the smooth estimate's share lam in [0, 1] (0: the clip alone).
    sure_clip: SURE of the clipped counts (in rows squared).
    sure: SURE of `weights`, with the share treated as fixed (it was chosen
      from the same counts, so this is optimistic).
  """
  weights: np.ndarray
  share: float
  sure_clip: float
  sure: float


def decode_run(noisy: np.ndarray, variance: np.ndarray, width: np.ndarray,
               clip: np.ndarray, *, weight: float) -> RunDecoding:
  """Per-cell weights of a merged numeric run (module docstring).

  Args:
    noisy: float [k] the run's noisy counts, in cell order.
    variance: float [k] their noise variances (> 0).
    width: float [k] the cells' widths (> 0).
    clip: float [k] the clipped counts max(noisy - shift, 0) (`cells.compress`).
    weight: the smooth fit's penalty weight; 0 keeps the clipped counts.

  Returns:
    a `RunDecoding`.
  """
  y = np.asarray(noisy, np.float64)
  var = np.asarray(variance, np.float64)
  sd = np.sqrt(var)
  clip = np.asarray(clip, np.float64)
  above = (clip > 0.0).astype(np.float64)      # d clip / d noisy
  sure_clip = _sure(clip, y, var, above)
  keep = RunDecoding(clip, 0.0, sure_clip, sure_clip)
  if weight <= 0 or len(y) < MIN_RUN:
    return keep
  fit = histogram.smooth_histogram(y, var, width, weight=weight, newton=True)
  slope = np.diag(histogram.fit_sensitivity(fit.counts, y, var, width, weight=weight))
  if not (np.all(np.isfinite(fit.counts)) and np.all(np.isfinite(slope))):
    return keep                                          # not a proper minimum
  spike = y > SPIKE_SIGMAS * sd
  step = np.where(spike, clip, fit.counts) - clip        # smooth - clip (0 at spikes)
  step_slope = np.where(spike, 0.0, slope - above)       # its derivative's diagonal
  size = float(step @ step)
  if size <= 0.0:
    return keep
  # SURE(clip + lam step) = sure_clip + lam^2 |step|^2 + 2 lam (step.(clip - y) + sum v step_slope)
  share = -(float(step @ (clip - y)) + float(np.sum(var * step_slope))) / size
  share = min(max(share, 0.0), 1.0)
  if share == 0.0:
    return keep
  weights = clip + share * step
  return RunDecoding(weights, share, sure_clip, _sure(weights, y, var, above + share * step_slope))


def _sure(estimate, y, var, slope) -> float:
  """Stein's unbiased estimate of sum_i (estimate_i - x_i)^2 for y ~ N(x, var)."""
  return float(np.sum((estimate - y) ** 2) + 2.0 * np.sum(var * slope) - np.sum(var))


def run_chooser(cells, measurements, weight: float):
  """A `cells.compress(run_weights=...)` callable that decodes by `decode_run`.

  Args:
    cells: the columns' `CellColumn`s before compression (singleton groups).
    measurements: per column, its noisy 1-way `Measurement` over those cells.
    weight: the smooth fit's penalty weight (0: every run keeps its clip).

  Returns:
    (callable, names): `names` is a list that the callable fills with the
    names of the columns that got at least one smooth-decoded run.
  """
  names = []

  def choose(j, run, clip):
    c, m = cells[j], measurements[j]
    run = np.asarray(run)
    width = np.diff(np.asarray(c.edges, np.float64))[run]
    out = decode_run(np.asarray(m.noisy, np.float64)[run],
                     np.asarray(m.variance, np.float64)[run], width, clip, weight=weight)
    if out.share == 0.0:
      return None
    if c.name not in names:
      names.append(c.name)
    return out.weights

  return choose, names
