"""Differentially private row count and column domains.

Whatever the model file does not declare (category sets, missing flags,
integer flags, Normal standardisation, the marginal method's bin edges) is
released here under DP instead of being read off the data, and the row count
N is released as a DP estimate. Both are composed with the main mechanism by
basic composition, so the printed epsilon covers them.

Mechanisms (add/remove-one relation):

* **Row count**: N + L, L two-sided geometric with parameter exp(-eps_rows):
  exactly eps_rows-DP (delta 0). Defaults (synthetic rows, delta = 0.1/N)
  use this estimate, never the exact N; the delta chosen from it is a
  post-processing of an earlier pure-DP release (adaptive composition).
* **Domains**: one histogram per column with anything undeclared; every row
  adds 1 to exactly one cell of each, so the stacked histograms have L2
  sensitivity sqrt(m) for m such columns. Gaussian noise N(0, s^2) is added to
  every cell, with s = sqrt(m) * sigma(eps_dom, delta_dom / 2) (the exact
  analytic Gaussian mechanism).

  - categories: the cells are the distinct labels; a label is released only
    if its noisy count exceeds tau = 1 + s * z, z = Phi^-1(1 - delta_thr / m_cat)
    (Gaussian partition selection). A label seen in only one of two
    neighbouring data sets is released with probability <= delta_thr / m_cat
    per column, which adds e^eps_dom * delta_thr <= delta_dom / 2 to delta.
    Labels below tau are merged into `OTHER`, which every categorical column
    with discovered categories has (a public rule, so its presence says
    nothing).
  - numeric columns: cells of a fixed public signed-log grid (16 per decade,
    |x| from 1e-4 to 1e10) times {integer, non-integer}, plus a missing cell.
    Quantiles (median, 15.9/84.1%, the marginal method's bin edges) come from
    the noisy histogram after zeroing cells below 2 sqrt(2) s.
  - missing flags: modelled when the noisy missing count exceeds 2 s; rows
    missing in a column whose flag came out "no" are left out of the fit (a
    row-wise filter with a public rule).

Everything downstream reads the released `spec` (a fully declared model file)
and nothing else from the data's domain.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from jtwin.errors import DataError, JtwinInputError
from jtwin.spec import FeatureSpec, ModelSpec

__all__ = ["OTHER", "ColumnCounts", "DomainCounts", "DomainRelease", "PublicPlan", "count_domain",
           "merge_counts", "needs_release", "noisy_row_count", "plan_release", "release_counts",
           "release_domain", "DEFAULT_DOMAIN_FRACTION", "ROWS_FRACTION"]

OTHER = "(other)"
DEFAULT_DOMAIN_FRACTION = 0.1   # of epsilon and delta, when something is undeclared
ROWS_FRACTION = 0.01            # of epsilon, for the row count
_PER_DECADE = 16
_LOG_LO, _LOG_HI = -4, 10
_MAGNITUDES = 10.0 ** (np.arange(_LOG_LO * _PER_DECADE, _LOG_HI * _PER_DECADE + 1) / _PER_DECADE)
GRID = np.concatenate([-_MAGNITUDES[::-1], _MAGNITUDES])   # public edges, increasing
_CATEGORICAL = ("categorical", "bernoulli")
_ZCDP_THRESHOLD_DELTA = 0.05   # of delta, for the category threshold (zCDP composition)
_FALSE_CELL = 0.01   # chance that some empty cell of a column passes its threshold


@dataclasses.dataclass(frozen=True)
class DomainRelease:
  """What the DP domain step released and how much it spent.

  Attributes:
    spec: the model spec with every released item declared (what the fit uses).
    epsilon: epsilon spent on the domains (0 when nothing was undeclared).
    delta: delta spent on the domains.
    noise_std: Gaussian noise sd on every histogram cell, except the label
      and missing counts of columns whose categories are released (`category_std`).
    threshold: a category is released when its noisy count exceeds this.
    category_std: the noise sd of the label and missing counts of a column
      whose categories are released: `noise_std`, or less where the caller
      gave those columns more budget (`category_rho`).
    label_counts: {name: ({label: noisy count}, noisy missing count)} of the
      columns whose categories were released: the released labels' noisy
      counts (DP outputs of the thresholded Gaussian mechanism, sd
      `category_std`; a label near the threshold is released only when its
      noise is high, so those few counts lean high), for reuse as a measurement.
    released: human-readable list of the items released under DP.
    merged: columns whose rare (or unseen) labels map to `OTHER`.
    drop_missing: columns whose missing values are left out (flag "no").
    undecided_integer: columns whose integer flag the noisy counts could not
      decide (too few rows clear the noise): released as non-integer.
    edges: DP quantile bin edges and point flags of numeric columns without
      declared bounds, {name: (edges, point)} (for the marginal method).
    rho: zCDP budget of the histograms when composed in zCDP (then `epsilon`
      is 0 and `delta` is the category threshold's share only).
  """
  spec: ModelSpec
  epsilon: float = 0.0
  delta: float = 0.0
  noise_std: float = 0.0
  threshold: float = math.inf
  released: tuple = ()
  merged: tuple = ()
  drop_missing: tuple = ()
  edges: dict = dataclasses.field(default_factory=dict)
  rho: float = 0.0
  category_std: float = 0.0
  label_counts: dict = dataclasses.field(default_factory=dict)
  undecided_integer: tuple = ()

  def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
    """The frame the fit sees: merged labels -> OTHER, rows dropped per `drop_missing`."""
    from jtwin import data as jdata
    out = frame.copy() if (self.merged or self.drop_missing) else frame
    by_name = {f.name: f for f in self.spec.features}
    for name in self.merged:
      col = out[name]
      keep = col.notna().to_numpy()
      labels = jdata._labels(col[keep])
      known = set(by_name[name].categories)
      if OTHER not in known and not labels.isin(known).all():
        raise DataError(f"column '{name}' has values other than the two frequent ones "
                        f"released under DP ({', '.join(sorted(known))}) but is modelled as "
                        "Bernoulli; use Categorical, or declare its categories")
      mapped = labels.where(labels.isin(known), OTHER)
      new = pd.Series(np.full(len(col), np.nan, dtype=object), index=col.index)
      new[keep] = mapped.to_numpy(dtype=object)
      out[name] = new
    if self.drop_missing:
      out = out.dropna(subset=list(self.drop_missing))
    return out

  def to_dict(self) -> dict:
    """JSON-able record for the result file (no data statistics beyond the DP ones)."""
    return {"epsilon": self.epsilon, "delta": self.delta, "rho": self.rho,
            "noise_std": self.noise_std, "category_std": self.category_std,
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "released": list(self.released), "merged": list(self.merged),
            "drop_missing": list(self.drop_missing),
            "undecided_integer": list(self.undecided_integer)}


def _undeclared(f: FeatureSpec, need_edges: bool) -> list:
  items = []
  if f.missing is None:
    items.append("missing")
  if f.family in _CATEGORICAL and f.bins is None and f.categories is None:
    items.append("categories")
  if f.bins is not None and f.integer is None:
    items.append("integer")
  if f.family == "normal":
    if f.integer is None:
      items.append("integer")
    if f.bounds is None and (f.loc is None or f.scale is None):
      items.append("standardisation")
  if need_edges and f.family in ("normal", "poisson") and f.bounds is None:
    items.append("edges")
  return items


def needs_release(spec: ModelSpec, *, need_edges: bool = False) -> list:
  """Undeclared items, e.g. ["age: missing", "sex: categories"] ([] if none)."""
  return [f"{f.name}: {item}" for f in spec.features for item in _undeclared(f, need_edges)]


def row_count_sd(epsilon: float) -> float:
  """The sd of `noisy_row_count`'s two-sided geometric noise at this epsilon."""
  a = math.exp(-epsilon)
  return math.sqrt(2.0 * a) / (1.0 - a)


def noisy_row_count(rng: np.random.Generator, n: int, epsilon: float) -> int:
  """N + two-sided geometric noise (exactly epsilon-DP), at least 1."""
  if not epsilon > 0:
    raise JtwinInputError(f"the row count's epsilon must be > 0, got {epsilon}")
  p = -math.expm1(-epsilon)          # 1 - exp(-epsilon)
  noise = int(rng.geometric(p)) - int(rng.geometric(p))
  return max(int(n) + noise, 1)


class ColumnCounts(NamedTuple):
  """The exact (private) counts of one column that its DP domain is released from.

  Attributes:
    missing: rows missing in the column.
    labels: {label: rows} of the observed labels in order of first
      appearance (categorical columns whose categories are undeclared), or
      None.
    cells: int64 [2 (len(GRID) + 1)] rows per (grid cell, is-integer) of the
      finite values, flattened (numeric and binned columns), or None.
    fine: int64 [(len(GRID) + 1) FINE_CELLS] rows per equal-width sub-cell
      of every grid cell (columns that need bin edges), or None; released
      only for a narrow column (`_narrow_cells`).
  """
  missing: int
  labels: Optional[dict] = None
  cells: Optional[np.ndarray] = None
  fine: Optional[np.ndarray] = None


class DomainCounts(NamedTuple):
  """Everything the row count and the DP domain step read from the data.

  Counts add up over any split of the rows (`merge_counts`), so a file read in
  chunks gives the same counts, and with the same `rng` the same release, as
  the whole file at once. Private: exact statistics, never released as such.

  Attributes:
    rows: N, the rows (after --drop_na).
    columns: {name: `ColumnCounts`} of the columns with something undeclared.
  """
  rows: int
  columns: dict


def _counted(f: FeatureSpec, need_edges: bool) -> bool:
  return bool(_undeclared(f, need_edges))


def count_domain(frame: pd.DataFrame, spec: Optional[ModelSpec], *, need_edges: bool = False,
                 source: str = "data") -> DomainCounts:
  """The exact counts of `frame` that `release_counts` releases from.

  Args:
    frame: the modelled columns (private); a chunk of them is fine.
    spec: the model file (None: the row count only).
    need_edges: as in `release_domain`.
    source: the data file's name, for messages.

  Raises:
    DataError: a numeric column has a non-numeric or infinite value (naming
      its line).
  """
  columns = {}
  for f in (spec.features if spec is not None else ()):
    if not _counted(f, need_edges):
      continue
    col = frame[f.name]
    isna = col.isna().to_numpy()
    labels = cells = fine = None
    if f.family in _CATEGORICAL and f.bins is None:
      if f.categories is None:
        from jtwin import data as jdata
        vc = jdata._labels(col[~isna]).value_counts(sort=False)
        labels = {str(k): int(v) for k, v in zip(vc.index, vc.to_numpy())}
    else:
      x = _numeric(col, f, source)[~isna]
      cell = np.searchsorted(GRID, x, side="right")           # 0 .. len(GRID)
      integer = (x == np.rint(x)).astype(np.int64)
      cells = np.bincount(cell * 2 + integer, minlength=2 * (len(GRID) + 1)).astype(np.int64)
      if need_edges and "edges" in _undeclared(f, need_edges):
        fine = _fine_counts(x, cell)
    columns[f.name] = ColumnCounts(int(isna.sum()), labels, cells, fine)
  return DomainCounts(int(len(frame)), columns)


def merge_counts(a: DomainCounts, b: DomainCounts) -> DomainCounts:
  """The counts of the rows of `a` and `b` together (labels: first appearance in a, then b)."""
  columns = {}
  for name, ca in a.columns.items():
    cb = b.columns[name]
    labels = None
    if ca.labels is not None:
      labels = dict(ca.labels)
      for k, v in cb.labels.items():
        labels[k] = labels.get(k, 0) + v
    cells = None if ca.cells is None else ca.cells + cb.cells
    fine = None if ca.fine is None else ca.fine + cb.fine
    columns[name] = ColumnCounts(ca.missing + cb.missing, labels, cells, fine)
  return DomainCounts(a.rows + b.rows, columns)


def _noise_params(m: int, m_cat: int, epsilon, delta, rho, threshold_delta,
                  category_rho: float = 0.0) -> tuple:
  """(noise sd, category noise sd, category threshold) of the histograms of m
  columns, m_cat of them with categories to release (validated).

  In zCDP each of the m histograms has noise sd s = sqrt(m / (2 rho)); a
  column with categories to release gets `category_rho` more, so its sd is
  (1 / s^2 + 2 category_rho)^(-1/2) and the step costs rho + m_cat
  category_rho. With (epsilon, delta) every sd is sqrt(m) times the noise
  multiplier (`category_rho` must be 0).
  """
  from jtwin.accounting import gaussian
  if not (category_rho >= 0 and math.isfinite(category_rho)):
    raise JtwinInputError(f"category_rho must be finite and >= 0, got {category_rho}")
  if rho is not None:
    if not (rho > 0 and threshold_delta is not None and 0 < threshold_delta < 1):
      raise JtwinInputError(f"the domain step needs rho > 0 and 0 < threshold_delta < 1, got "
                            f"{rho:g}, {threshold_delta}")
    noise_std = math.sqrt(m / (2.0 * rho))
    delta_thr = threshold_delta
  else:
    if not (epsilon > 0 and 0 < delta < 1):
      raise JtwinInputError(f"the domain step needs epsilon > 0 and 0 < delta < 1, got "
                            f"{epsilon:g}, {delta:g}")
    if category_rho:
      raise JtwinInputError("category_rho needs the zCDP composition (rho)")
    noise_std = math.sqrt(m) * gaussian.gaussian_noise_multiplier(epsilon, delta / 2)
    delta_thr = delta / 2 * math.exp(-epsilon)
  category_std = (noise_std if not category_rho else
                  1.0 / math.sqrt(1.0 / noise_std**2 + 2.0 * category_rho))
  threshold = math.inf
  if m_cat:
    threshold = 1.0 + category_std * statistics.NormalDist().inv_cdf(1.0 - delta_thr / m_cat)
  return noise_std, category_std, threshold


def release_domain(rng: np.random.Generator, frame: pd.DataFrame, spec: ModelSpec, *,
                   epsilon: float = 0.0, delta: float = 0.0, rho: Optional[float] = None,
                   threshold_delta: Optional[float] = None, need_edges: bool = False,
                   edge_levels: Optional[np.ndarray] = None,
                   max_value_cells: int = 128, source: str = "data",
                   category_rho: float = 0.0) -> DomainRelease:
  """Releases every undeclared domain item of `spec` under (epsilon, delta)-DP.

  `count_domain` (the exact histograms) followed by `release_counts` (the
  noise); the same as calling those two.

  Args:
    rng: numpy Generator for the noise (full-tailed float64 normals).
    frame: the modelled columns (private).
    spec: the model file; declared items are kept as they are.
    epsilon, delta: the domain step's budget (> 0 when anything is undeclared):
      the Gaussian part gets (epsilon, delta / 2) exactly, the category
      threshold delta / 2 (times e^-epsilon).
    rho, threshold_delta: instead of (epsilon, delta), for composition in
      zCDP: the histograms are rho-zCDP (noise sd sqrt(m / (2 rho))) and the
      category threshold adds `threshold_delta` (the caller includes the
      e^-epsilon factor of the whole run).
    category_rho: with rho, each column whose categories are released gets
      this much more zCDP budget (less noise, a lower threshold); the
      release's rho includes it. The marginal method moves part of those
      columns' 1-way budget here and reuses the noisy label counts
      (`DomainRelease.label_counts`).
    need_edges: also release bin edges for numeric columns without bounds
      (the marginal method's cells), at `edge_levels` (quantile levels).
    max_value_cells: an integer column whose DP range has at most this many
      values gets one cell per value instead of quantile bins.
    source: the data file's name, for messages.

  Returns:
    a `DomainRelease`; with nothing undeclared, one that spent nothing.

  Raises:
    DataError: a column has no category frequent enough to be released, or
      a numeric column's range (for its standardisation or bin edges) has
      no part that clears the noise (too few rows: declare its bounds).
  """
  columns = [f for f in spec.features if _counted(f, need_edges)]
  if not columns:
    return DomainRelease(spec)
  m_cat = sum("categories" in _undeclared(f, need_edges) for f in columns)
  _noise_params(len(columns), m_cat, epsilon, delta, rho, threshold_delta,
                category_rho)   # validate first
  counts = count_domain(frame, spec, need_edges=need_edges, source=source)
  return release_counts(rng, counts, spec, epsilon=epsilon, delta=delta, rho=rho,
                        threshold_delta=threshold_delta, need_edges=need_edges,
                        edge_levels=edge_levels, max_value_cells=max_value_cells, source=source,
                        category_rho=category_rho)


def release_counts(rng: np.random.Generator, counts: DomainCounts, spec: ModelSpec, *,
                   epsilon: float = 0.0, delta: float = 0.0, rho: Optional[float] = None,
                   threshold_delta: Optional[float] = None, need_edges: bool = False,
                   edge_levels: Optional[np.ndarray] = None,
                   max_value_cells: int = 128, source: str = "data",
                   category_rho: float = 0.0) -> DomainRelease:
  """The noisy release of `release_domain`, from exact counts (`count_domain`).

  The noise is added once, to the total counts, in a fixed order (per column
  in model order: its label or cell counts, then its missing count), so the
  counts of a file read in chunks (`merge_counts`) give the same release as
  the whole file for the same `rng`. Arguments and result as in
  `release_domain`.
  """
  todo = {f.name: _undeclared(f, need_edges) for f in spec.features}
  columns = [f for f in spec.features if todo[f.name]]
  if not columns:
    return DomainRelease(spec)
  m_cat = sum("categories" in todo[f.name] for f in columns)
  noise_std, category_std, threshold = _noise_params(len(columns), m_cat, epsilon, delta,
                                                     rho, threshold_delta, category_rho)
  label_counts = {}
  released, merged, drop, edges, new, undecided = [], [], [], {}, [], []
  fine_released = 0
  fine_rng = _child_generator(rng)   # the fine stage's noise leaves rng's stream as it was
  for f in spec.features:
    items = todo[f.name]
    if not items:
      new.append(f)
      continue
    c = counts.columns[f.name]
    fields = {}
    if f.family in _CATEGORICAL and f.bins is None:
      sd = category_std if "categories" in items else noise_std
      if "categories" in items:
        fields["categories"], kept = _release_categories(rng, c.labels, f, sd, threshold,
                                                         spec, source)
        merged.append(f.name)
        released.append(f"{f.name}: categories")
      missing_count = float(c.missing) + rng.normal(0.0, sd)
      if "categories" in items:
        label_counts[f.name] = (kept, missing_count)
    else:
      sd = noise_std
      hist = _numeric_histogram(rng, c.cells, noise_std)
      missing_count = float(c.missing) + rng.normal(0.0, noise_std)
      fields.update(_numeric_items(hist, items, f, noise_std, edge_levels, max_value_cells,
                                   edges, f"{source}: column '{f.name}'", spec.where(f),
                                   undecided))
      if rho is not None and f.name in edges and c.fine is not None:
        drawn, refined = _fine_edges(fine_rng, c.fine, hist, noise_std, edge_levels,
                                     fields.get("integer", f.integer if f.family != "poisson"
                                                else True), max_value_cells)
        fine_released += drawn          # released (and paid for) whether used or not
        if refined is not None:
          edges[f.name] = refined
          released.append(f"{f.name}: fine bin edges")
        elif drawn:
          released.append(f"{f.name}: fine histogram (coarse edges kept)")
      released += [f"{f.name}: {i}" for i in items if i not in ("missing", "categories")]
    if "missing" in items:
      fields["missing"] = bool(missing_count > 2.0 * sd)
      released.append(f"{f.name}: missing flag")
      if not fields["missing"]:
        drop.append(f.name)
    new.append(dataclasses.replace(f, **fields))
  out_spec = ModelSpec(tuple(new), spec.path)
  if rho is not None:
    # each fine histogram is one more released histogram at the same noise sd
    return DomainRelease(out_spec, 0.0, float(threshold_delta), float(noise_std),
                         float(threshold), tuple(released), tuple(merged), tuple(drop), edges,
                         rho=float(rho) + m_cat * category_rho
                         + fine_released / (2.0 * noise_std**2),
                         category_std=float(category_std), label_counts=label_counts,
                         undecided_integer=tuple(undecided))
  return DomainRelease(out_spec, float(epsilon), float(delta), float(noise_std),
                       float(threshold), tuple(released), tuple(merged), tuple(drop), edges,
                       category_std=float(category_std), label_counts=label_counts,
                       undecided_integer=tuple(undecided))


# ------------------------------------------------------------ categories
def _release_categories(rng, counts: dict, f: FeatureSpec, noise_std: float,
                        threshold: float, spec: ModelSpec, source: str) -> tuple:
  """(released labels, with OTHER where needed; {label: noisy count} of those that passed)."""
  from jtwin import data as jdata
  noisy = np.fromiter(counts.values(), np.float64, len(counts)) + rng.normal(0.0, noise_std,
                                                                             len(counts))
  passed = {str(v): float(c) for v, c in zip(counts, noisy) if c > threshold and str(v) != OTHER}
  kept = list(passed)
  if not kept:
    raise DataError(f"{source}: column '{f.name}': no category is frequent enough to be "
                    f"released under DP (each needs about {threshold:.0f} rows at this "
                    f"budget); declare its categories at {spec.where(f)} "
                    "('categories = ...') or remove the column")
  labels = jdata._sorted_labels(kept)
  if f.family == "bernoulli":
    if len(labels) > 2:
      raise DataError(f"{source}: column '{f.name}' has more than two frequent values but "
                      f"{spec.where(f)} models it as Bernoulli; use Categorical")
    return (labels if len(labels) == 2 else labels + (OTHER,)), passed
  return labels + (OTHER,), passed


# ------------------------------------------------------------ numeric columns
def _numeric(col: pd.Series, f: FeatureSpec, source: str) -> np.ndarray:
  from jtwin import data as jdata
  return jdata._numeric(col, f.name, f.family, source)


def _numeric_histogram(rng, cells: np.ndarray, noise_std: float) -> np.ndarray:
  """Noisy counts [len(GRID) + 1, 2] (grid cell, is-integer) from exact `cells`."""
  counts = np.asarray(cells, np.float64)
  return (counts + rng.normal(0.0, noise_std, counts.shape)).reshape(-1, 2)


def _cell_edges() -> tuple:
  """Lower and upper edge of every grid cell (outer cells closed at +-10^(hi + 1/8))."""
  outer = 10.0 ** (_LOG_HI + 1.0 / _PER_DECADE)
  full = np.concatenate([[-outer], GRID, [outer]])
  return full[:-1], full[1:]


def _cell_threshold(noise_std: float, num_cells: int) -> float:
  """Noisy totals (sd sqrt(2) s) above this are kept: an empty cell passes with
  probability `_FALSE_CELL` / num_cells, so a column's quantiles rarely see a
  noise cell."""
  z = statistics.NormalDist().inv_cdf(1.0 - _FALSE_CELL / num_cells)
  return z * math.sqrt(2.0) * noise_std


def _denoised(total: np.ndarray, noise_std: float) -> np.ndarray:
  """Cell weights from noisy totals at two resolutions.

  A cell is kept when its own total passes `_cell_threshold`; the rest of a
  block of `_PER_DECADE` cells (one decade) is kept, spread evenly over the
  block's other cells, when the block's total passes the threshold for its
  larger noise. So a tail spread thinly over a decade (capital gains) is
  still seen, and empty cells are zero.
  """
  total = np.asarray(total, np.float64)
  cell_sd = math.sqrt(2.0) * noise_std
  kept = total > _cell_threshold(noise_std, len(total))
  weight = np.where(kept, total, 0.0)
  size = _PER_DECADE
  blocks = math.ceil(len(total) / size)
  pad = blocks * size - len(total)
  t = np.concatenate([total, np.zeros(pad)]).reshape(blocks, size)
  k = np.concatenate([kept, np.ones(pad, bool)]).reshape(blocks, size)
  rest = np.where(k, 0.0, t).sum(1)
  free = (~k).sum(1)
  z = statistics.NormalDist().inv_cdf(1.0 - _FALSE_CELL / blocks)
  ok = (free > 0) & (rest > z * cell_sd * np.sqrt(np.maximum(free, 1)))
  spread = np.where(ok, rest / np.maximum(free, 1), 0.0)[:, None] * ~k
  return weight + spread.ravel()[:len(total)]


def _quantiles(hist: np.ndarray, levels, noise_std: float) -> Optional[np.ndarray]:
  """Quantiles of the denoised histogram (linear within a cell); None if empty."""
  weight = _denoised(hist.sum(1), noise_std)
  if not weight.sum() > 0:
    return None
  cum = np.concatenate([[0.0], np.cumsum(weight)]) / weight.sum()
  lo, hi = _cell_edges()
  levels = np.clip(np.asarray(levels, np.float64), 0.0, 1.0)
  j = np.clip(np.searchsorted(cum, levels, side="left") - 1, 0, len(weight) - 1)
  j = np.where(weight[j] > 0, j, np.clip(np.searchsorted(cum, levels, side="right") - 1, 0,
                                          len(weight) - 1))
  first, last = np.flatnonzero(weight)[[0, -1]]
  j = np.clip(j, first, last)
  frac = np.clip((levels - cum[j]) / np.where(weight[j] > 0, weight[j] / weight.sum(), 1.0),
                 0.0, 1.0)
  return lo[j] + frac * (hi[j] - lo[j])


def _numeric_items(hist, items, f: FeatureSpec, noise_std, edge_levels, max_value_cells,
                   edges_out, what: str = "column", where: str = "its model file line",
                   undecided_out: Optional[list] = None) -> dict:
  fields = {}
  integer = f.integer if f.family != "poisson" else True
  total = hist.sum(1)
  threshold = _cell_threshold(noise_std, len(total))
  if ({"standardisation", "edges"} & set(items)) and not _denoised(total, noise_std).sum() > 0:
    # nothing clears the noise: any range read off the noisy histogram would be noise
    raise DataError(f"{what}: too few rows for its range to be released under DP at this "
                    f"budget (a range of values needs about {threshold:.0f} rows); declare "
                    f"its range at {where} ('bounds = lo, hi'), or remove the column")
  if "integer" in items:
    kept = total > threshold
    if not kept.any():    # no cell clears the noise alone: the cells of the blocks that do
      kept = _denoised(total, noise_std) > 0
    # integer when the non-integer counts of the occupied cells exceed 1% of
    # their rows by at most 3 noise sds of their sum, and their integer counts
    # clear 3 noise sds: without that evidence (too few rows for the noise)
    # non-integer, which keeps a continuous column continuous
    nonint, ints = hist[kept, 0].sum(), hist[kept, 1].sum()
    slack = 3.0 * noise_std * math.sqrt(max(int(kept.sum()), 1))
    few_nonint = bool(nonint <= 0.01 * max(total[kept].sum(), 0.0) + slack)
    integer = few_nonint and bool(ints > slack)
    if few_nonint and not integer and undecided_out is not None:
      undecided_out.append(f.name)
    fields["integer"] = integer
  if "standardisation" in items:
    q = _quantiles(hist, [0.1587, 0.5, 0.8413, 0.01, 0.99], noise_std)   # not empty: see above
    loc = float(q[1])
    # the robust sd, unless a spike (e.g. most values 0) makes it tiny
    # next to the 1-99% range (for Normal data the second term is 0.47 sd)
    scale = max(float(q[2] - q[0]) / 2.0, float(q[4] - q[3]) / 10.0)
    if not scale > 0:
      scale = max(abs(loc) * 0.1, 1.0)
    if abs(loc) < 1e-3 * scale:
      loc = 0.0
    fields["loc"] = f.loc if f.loc is not None else _round(loc)
    fields["scale"] = f.scale if f.scale is not None else _round(scale)
  if "edges" in items:
    levels = edge_levels if edge_levels is not None else np.linspace(0.0, 1.0, 33)
    e = np.unique(_quantiles(hist, levels, noise_std))     # not empty: see above
    below, above = _tail_edges(float(e[0]), float(e[-1]))
    if integer:
      e = np.unique(np.ceil(e))
      if e[-1] - e[0] + 1 <= max_value_cells:
        values = np.arange(e[0], e[-1] + 1.0)
        below = np.unique(np.ceil(below))
        above = np.unique(np.ceil(above))
        below, above = below[below < values[0]], above[above > values[-1] + 1.0]
        e = np.concatenate([below, values, [values[-1] + 1.0], above])
        points = (False,) * len(below) + (True,) * len(values) + (False,) * len(above)
        edges_out[f.name] = (tuple(float(v) for v in e), points)
        return fields
      below, above = np.ceil(below), np.ceil(above)
    e = np.unique(np.concatenate([below[below < e[0]], e, above[above > e[-1]]]))
    if len(e) < 2:
      e = np.array([e[0], e[0] + 1.0])
    edges_out[f.name] = (tuple(float(v) for v in e), (False,) * (len(e) - 1))
  return fields


_TAIL_STEPS = (1, 2, 4, 8)   # grid cells beyond each end: out to half a decade
ZERO_REACH = 1.0             # ... and on to zero when it is this near (x the range's width)


FINE_CELLS = 256    # equal-width sub-cells of a grid cell for a narrow column's edges
NARROW_CELLS = 4    # a column whose DP edges span at most this many grid cells is narrow
FINE_SHARE = 0.5    # ... and its fine edges are used when the data fill at most this share


def _child_generator(rng: np.random.Generator) -> np.random.Generator:
  """An independent Generator spawned from rng's seed sequence, without drawing from rng."""
  seed_seq = getattr(rng.bit_generator, "seed_seq", None)
  if seed_seq is None or not hasattr(seed_seq, "spawn"):
    return rng
  return np.random.Generator(np.random.PCG64(seed_seq.spawn(1)[0]))


def _fine_counts(x: np.ndarray, cell: np.ndarray) -> np.ndarray:
  """Exact rows per (grid cell, equal-width sub-cell) of finite values `x` (PRIVATE)."""
  lo, hi = _cell_edges()
  width = np.maximum(hi[cell] - lo[cell], 1e-300)
  sub = np.clip(((x - lo[cell]) / width * FINE_CELLS).astype(np.int64), 0, FINE_CELLS - 1)
  return np.bincount(cell * FINE_CELLS + sub,
                     minlength=(len(GRID) + 1) * FINE_CELLS).astype(np.int64)


def _narrow_cells(span) -> Optional[np.ndarray]:
  """The grid cells the DP range `span` = (lo, hi) covers, when they are few and on
  one side of zero (the tails of `_tail_edges` are not part of it)."""
  if span is None:
    return None
  lo, hi = float(span[0]), float(span[-1])
  if lo <= 0.0 <= hi:
    return None
  first = int(np.searchsorted(GRID, lo, side="right"))
  last = int(np.searchsorted(GRID, np.nextafter(hi, -np.inf), side="right"))
  if last - first + 1 > NARROW_CELLS:
    return None
  return np.arange(first, last + 1)


def _fine_edges(rng, fine: np.ndarray, hist: np.ndarray, noise_std: float, edge_levels,
                integer, max_value_cells: int):
  """Finer DP edges for a narrow column: one more noisy histogram, of its sub-cells.

  The coarse grid has 16 cells a decade, so a column such as years (2000 to
  2015) sits inside one or two cells about 300 wide, and its DP edges would
  make bins that wide. When the DP edges span at most `NARROW_CELLS` grid
  cells (a public fact), the exact counts of those cells' `FINE_CELLS`
  equal-width sub-cells are released with the same noise sd as every other
  histogram (one more histogram of sensitivity 1, which `release_counts`
  adds to the release's rho), and the edges are recomputed from them: one cell per integer
  value when the column is integer with at most `max_value_cells` values in
  its new range, else quantile bins. As in `_denoised`, a sub-cell counts
  when its noisy count passes the threshold, and what a grid cell's noisy
  total holds beyond its counted sub-cells, when that is above its noise, is
  spread evenly over its other sub-cells (a thin tail is kept, an empty
  stretch is not).

  The fine edges replace the coarse ones only when the data fill at most
  half of the grid cells' width (`FINE_SHARE`): a column such as a year
  fills 16 of about 300, while one whose grid cells it fills anyway (a
  spiky measurement with thin tails, such as diamonds' depth) keeps the
  coarse edges and their tail cells.

  Args:
    rng: the fine stage's own generator (`_child_generator`).
    fine: the column's exact sub-cell counts (`ColumnCounts.fine`, PRIVATE).
    hist: the column's released coarse histogram [len(GRID) + 1, 2].
    noise_std, edge_levels, integer, max_value_cells: as for the coarse edges.

  Returns:
    (drawn, edges): drawn is 1 when the fine histogram was released (its
    budget counts even when it is not used), else 0; edges are (edges,
    point flags), or None to keep the coarse edges.
  """
  cells = _narrow_cells(_quantiles(hist, [0.0, 1.0], noise_std))
  if cells is None:
    return 0, None
  counts = fine.reshape(-1, FINE_CELLS)[cells].ravel().astype(np.float64)
  noisy = counts + rng.normal(0.0, noise_std, counts.shape)
  keep = noisy > _cell_threshold(noise_std / math.sqrt(2.0), len(noisy))
  if not keep.any():
    return 1, None
  weight = np.where(keep, noisy, 0.0).reshape(len(cells), FINE_CELLS)
  kept = keep.reshape(len(cells), FINE_CELLS)
  z = statistics.NormalDist().inv_cdf(1.0 - _FALSE_CELL / len(cells))
  for i, c in enumerate(cells):      # the rest of each grid cell's noisy total
    rest = float(hist[c].sum()) - weight[i].sum()
    sd = noise_std * math.sqrt(2.0 + kept[i].sum())
    free = ~kept[i]
    if free.any() and rest > z * sd:
      weight[i, free] = rest / free.sum()
  weight = weight.ravel()
  keep = weight > 0
  lo, hi = _cell_edges()
  sub_lo = np.concatenate([lo[c] + (hi[c] - lo[c]) * np.arange(FINE_CELLS) / FINE_CELLS
                           for c in cells])
  sub_w = np.concatenate([np.full(FINE_CELLS, (hi[c] - lo[c]) / FINE_CELLS) for c in cells])
  first, last = np.flatnonzero(keep)[[0, -1]]
  a, b = sub_lo[first], sub_lo[last] + sub_w[last]
  if b - a > FINE_SHARE * (hi[cells[-1]] - lo[cells[0]]):
    return 1, None
  if integer:   # a kept sub-cell holds integers: the first and last ones bound the values
    a, b = math.ceil(a), math.ceil(b)
    if b - a <= max_value_cells:
      values = np.arange(a, b, dtype=np.float64)
      return 1, (tuple(float(v) for v in np.append(values, b)), (True,) * len(values))
  levels = edge_levels if edge_levels is not None else np.linspace(0.0, 1.0, 33)
  cum = np.concatenate([[0.0], np.cumsum(weight)]) / weight.sum()
  grid = np.append(sub_lo, sub_lo[-1] + sub_w[-1])
  e = np.unique(np.interp(np.clip(levels, 0.0, 1.0), cum, grid))
  e = np.unique(np.concatenate([[a], e[(e > a) & (e < b)], [b]]))
  if integer:
    e = np.unique(np.ceil(e))
  if len(e) < 2:
    e = np.array([a, a + 1.0])
  return 1, (tuple(float(v) for v in e), (False,) * (len(e) - 1))


def _tail_edges(lo: float, hi: float) -> tuple:
  """Extra edges beyond `lo` and `hi`: cells of doubling width on the public grid.

  The DP quantiles of a small table miss its outer few percent (their grid
  cells hold fewer rows than the noise threshold), and values beyond the
  edges would be clipped into the outer bins. The marginal method measures
  its 1-way tables on these cells far more precisely than the domain step
  can (and merges the empty ones), so the edges are widened by up to half a
  decade of the grid on each side, never across zero for a column whose
  edges do not cross it. On the 10,000-row loans table at epsilon = 1 this
  took napsumq's 1-way TVD from 0.038 to 0.022 and its 2-way TVD from 0.084
  to 0.061. And when zero is nearer to the outer tail edge than `ZERO_REACH`
  times the DP range's width, one more cell reaches zero: the zeros of a
  clipped or zero-inflated column and the low tail of an amount, a few
  percent of a small table, fall below the noise threshold and would
  otherwise be decoded half a decade above zero (an empty such cell is
  merged by the 1-way compression; measured: benchmarks/README.md §6, ninth
  session). Public: a function of the DP edges only.

  Returns:
    (edges below lo, edges above hi), increasing float arrays.
  """
  i_lo = np.searchsorted(GRID, lo, side="right") - 1
  i_hi = np.searchsorted(GRID, hi, side="left")
  steps = np.asarray(_TAIL_STEPS)
  below = GRID[np.clip(i_lo - steps, 0, len(GRID) - 1)][::-1]
  above = GRID[np.clip(i_hi + steps, 0, len(GRID) - 1)]
  if lo >= 0.0:
    below = np.maximum(below, 0.0)
    if 0.0 < below.min() < ZERO_REACH * (hi - lo):
      below = np.concatenate([[0.0], below])
  if hi <= 0.0:
    above = np.minimum(above, 0.0)
    if ZERO_REACH * (lo - hi) < above.max() < 0.0:
      above = np.concatenate([above, [0.0]])
  return np.unique(below[below < lo]), np.unique(above[above > hi])


def _round(x: float) -> float:
  """Four significant digits (a cleaner model file; post-processing)."""
  return float(f"{x:.4g}")


# ------------------------------------------------------------ one call for a run
LARGE_DEFAULT_DELTA = 1e-3   # a default delta above this (under 100 rows) is warned about


class PublicPlan(NamedTuple):
  """The public quantities of a run, released before the main mechanism.

  Attributes:
    frame: the rows and columns the main mechanism sees (`DomainRelease.apply`);
      None when the plan was made from `DomainCounts` (the caller applies
      `release` to each chunk it reads).
    spec: the model spec with the released domain declared.
    rows: the DP row-count estimate (the exact N only when non-private).
    delta: the run's total delta (given, or 0.1 / rows).
    rows_epsilon: epsilon spent on the row count.
    release: the `DomainRelease` (spent nothing if all was declared).
    epsilon_rest: epsilon left for the main mechanism (None: not calibrated).
    delta_rest: delta left for the main mechanism.
    domain_mode: "dp" or "data" (undeclared items read off the data, warned).
  """
  frame: pd.DataFrame
  spec: ModelSpec
  rows: int
  delta: float
  rows_epsilon: float
  release: DomainRelease
  epsilon_rest: Optional[float]
  delta_rest: float
  domain_mode: str

  @property
  def epsilon(self) -> float:
    """Epsilon spent before the main mechanism (row count + domains)."""
    return self.rows_epsilon + self.release.epsilon

  def record(self) -> dict:
    """JSON-able summary for the result file."""
    return {"rows_estimate": int(self.rows), "rows_epsilon": self.rows_epsilon,
            "domain_mode": self.domain_mode, "domain": self.release.to_dict()}


def plan_release(rng: np.random.Generator, frame: pd.DataFrame, spec: Optional[ModelSpec], *,
                 epsilon: Optional[float], delta: Optional[float], domain: str = "dp",
                 domain_epsilon: Optional[float] = None, non_private: bool = False,
                 need_edges: bool = False, edge_levels=None, max_value_cells: int = 128,
                 composition: str = "basic", source: str = "data",
                 category_share: float = 0.0) -> PublicPlan:
  """Releases the row count and every undeclared domain item, and splits the budget.

  Budget (basic composition with the main mechanism): the row count gets
  `ROWS_FRACTION` epsilon; the domains get `domain_epsilon` (default
  `DEFAULT_DOMAIN_FRACTION` epsilon minus the row count's share) and
  `DEFAULT_DOMAIN_FRACTION` delta, only when something is undeclared; the
  main mechanism gets the rest. Fractions refer to `epsilon` (1.0 if None,
  i.e. when the main mechanism's noise is given instead).

  Args:
    rng: numpy Generator (purpose-specific; its draws are the noise).
    frame: the modelled rows and columns (private), or their `DomainCounts`
      (`count_domain`, merged over the chunks of a file read in a streaming
      pass: the same counts give the same release). With counts, the plan's
      `frame` is None and the caller applies `release` to every chunk (and
      checks that rows are left).
    spec: the model spec, or None for a custom model (row count only).
    epsilon, delta: the run's total budget; delta None means 0.1 / rows.
    domain: "dp", or "data" to read undeclared items off the data (NOT
      covered by epsilon; the caller warns).
    domain_epsilon: epsilon for the domains (overrides the default share).
    non_private: no noise anywhere: the exact N, domains from the data.
    need_edges, edge_levels, max_value_cells, source: see `release_domain`.
    composition: "basic" (above), or "zcdp" for a main mechanism accounted in
      zCDP (the marginal method): the domain histograms then get the share
      domain_epsilon / epsilon (default 0.1) of the zCDP budget
      rho = cdp_rho(epsilon - rows_epsilon, delta - threshold delta), which
      they share with the main mechanism (`release.rho`; the caller
      adds it to what it spends), and the category threshold gets 5% of
      delta. Composing Gaussian mechanisms in zCDP costs far less than
      adding epsilons: at epsilon 1 the noise per count is a third.
      "gdp": the same, for a main mechanism made of Gaussian mechanisms
      only, whose composition is accounted exactly
      (`jtwin.accounting.gaussian.composed_rho` replaces `cdp_rho`).
    category_share: with "zcdp" or "gdp", each column whose categories are
      released gets this share of rho on top (`release_domain`'s
      `category_rho`), which the caller takes from what it would have
      spent on those columns' counts anyway.

  Raises:
    JtwinInputError: an unknown mode, or shares that leave nothing for the
      main mechanism.
  """
  if domain not in ("dp", "data"):
    raise JtwinInputError(f"domain must be 'dp' or 'data', got {domain!r}")
  counts = frame if isinstance(frame, DomainCounts) else None
  if counts is not None:
    frame = None
  n = counts.rows if counts is not None else len(frame)
  if non_private:
    return PublicPlan(frame, spec, n, delta if delta is not None else 0.1 / n, 0.0,
                      DomainRelease(spec), epsilon, delta if delta is not None else 0.1 / n,
                      "data")
  ref = float(epsilon) if epsilon is not None else 1.0
  rows_eps = ROWS_FRACTION * ref
  rows = noisy_row_count(rng, n, rows_eps)
  if delta is None:
    import warnings
    # the default delta = 0.1 / N-hat, with N-hat never taken below 3 noise sds of the
    # row count: a noise-dominated count (a tiny table, or a tiny epsilon) would otherwise
    # give a large delta (0.1 when the count is clamped at 1); a larger N-hat only makes
    # delta smaller, which is the safe direction
    sd = row_count_sd(rows_eps)
    delta = 0.1 / max(rows, 3.0 * sd)
    if rows < 3.0 * sd:
      warnings.warn(f"the DP row count ({rows:,}) is within 3 noise sds ({sd:,.0f} rows at "
                    f"this epsilon) of zero, so the default delta is 0.1 / (3 sds) = "
                    f"{delta:.2g} and the default number of synthetic rows ({rows:,}) is "
                    "unreliable: pass --num_synthetic (and --delta to choose delta yourself)",
                    stacklevel=2)
    elif delta > LARGE_DEFAULT_DELTA:
      warnings.warn(f"the table is tiny (about {rows} rows, DP estimate), so the default "
                    f"delta = 0.1 / rows is {delta:.2g}: a weak guarantee; no DP method "
                    "protects so few rows well (pass --delta to choose it yourself)",
                    stacklevel=2)
  delta = float(delta)
  todo = needs_release(spec, need_edges=need_edges) if spec is not None else []
  if composition not in ("basic", "zcdp", "gdp"):
    raise JtwinInputError(f"composition must be 'basic', 'zcdp' or 'gdp', got {composition!r}")
  if domain == "dp" and todo:
    if composition in ("zcdp", "gdp"):
      from jtwin.accounting import gaussian, zcdp
      share = DEFAULT_DOMAIN_FRACTION if domain_epsilon is None else float(domain_epsilon) / ref
      if not 0 < share < 1:
        raise JtwinInputError(f"domain_epsilon must be below epsilon, got {domain_epsilon:g}")
      thr_delta = _ZCDP_THRESHOLD_DELTA * delta
      to_rho = gaussian.composed_rho if composition == "gdp" else zcdp.cdp_rho
      rho_all = to_rho(ref - rows_eps, delta - thr_delta)
      if not thr_delta * math.exp(-ref) > 0:
        raise JtwinInputError(
            f"epsilon {ref:g} is too large for the DP domain step: its category threshold "
            "needs delta x e^-epsilon, which is below the smallest float; declare the "
            "domain in the model file, or use a smaller epsilon")
      release = _release(rng, frame, counts, spec, rho=share * rho_all,
                         category_rho=float(category_share) * rho_all,
                         threshold_delta=thr_delta * math.exp(-ref),
                         need_edges=need_edges, edge_levels=edge_levels,
                         max_value_cells=max_value_cells, source=source)
      release = dataclasses.replace(release, delta=thr_delta)
    else:
      dom_eps = (DEFAULT_DOMAIN_FRACTION * ref - rows_eps if domain_epsilon is None
                 else float(domain_epsilon))
      dom_delta = DEFAULT_DOMAIN_FRACTION * delta
      release = _release(rng, frame, counts, spec, epsilon=dom_eps, delta=dom_delta,
                         need_edges=need_edges, edge_levels=edge_levels,
                         max_value_cells=max_value_cells, source=source)
    # the main mechanism sees the released domain, whatever the composition
    spec = release.spec
    if frame is not None:
      frame = release.apply(frame)
    if frame is not None and len(frame) == 0:
      raise DataError(f"{source}: no rows are left after leaving out rows missing in columns "
                      "whose DP missing flag is 'no'; declare 'missing' for them")
  else:
    release = DomainRelease(spec)
  rest = None
  if epsilon is not None:
    rest = float(epsilon) - rows_eps - release.epsilon
    if not rest > 0:
      raise JtwinInputError(f"the row count ({rows_eps:g}) and domain ({release.epsilon:g}) "
                            f"shares leave nothing of epsilon = {epsilon:g}; lower "
                            "--domain_epsilon or declare the domains in the model file")
  return PublicPlan(frame, spec, rows, delta, rows_eps, release, rest, delta - release.delta,
                    domain)


def _release(rng, frame, counts, spec, **kwargs) -> DomainRelease:
  if counts is None:
    return release_domain(rng, frame, spec, **kwargs)
  need_edges = kwargs.get("need_edges", False)
  columns = [f for f in spec.features if _counted(f, need_edges)]
  if columns and set(counts.columns) != {f.name for f in columns}:
    raise ValueError("the DomainCounts were counted for another model spec (or need_edges)")
  return release_counts(rng, counts, spec, **kwargs)
