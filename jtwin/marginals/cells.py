"""Discretisation for the marginal-query method: every column as a few cells.

The marginal method models the data as a contingency table, so each modelled
column becomes a finite set of *cells* (its categories, after the missing
state is added as one more cell):

  * Categorical / Bernoulli columns: one cell per declared (or inferred)
    category.
  * Integer columns whose public range has at most `max_value_cells` values
    (a binned integer column such as Adult's age 17..90, or a Normal/Poisson
    column with declared bounds): one cell per value, so that spikes such as
    40 hours a week survive.
  * Other binned columns: their declared bins.
  * Normal / Poisson columns without bins: `num_bins` equal-width bins on the
    declared bounds; without declared bounds, one cell per distinct value
    for integer columns with few values, else bins at the data's quantiles.
    Both are taken from the private data and listed in `from_data`.
  * A column that may be missing gets a last "missing" cell.

After the noisy 1-way counts are measured, `compress` merges cells whose
noisy count is below a threshold (MST's domain compression): rare categories
into one cell, runs of adjacent rare numeric cells into one cell. A merged
cell is decoded by drawing one of its base cells with probabilities
proportional to their noisy counts, or (numeric runs, `run_weights`) to a
blend of them with a smooth fit, as far as that is estimated to bring them
closer to the truth (`jtwin.marginals.run_decoding`); both are
post-processing of DP measurements.

`CellColumn.groups` are the model's cells; each holds one or more base cells.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import pandas as pd

from jtwin import data as jdata

__all__ = ["CellColumn", "build_cells", "compress", "decode_cells", "encode_cells"]

MAX_VALUE_CELLS = 128
NUM_BINS = 32
SPLIT_BINS = 4
MAX_COARSE = 16


@dataclasses.dataclass(frozen=True)
class CellColumn:
  """The public cells of one column.

  Attributes:
    name: column name.
    kind: "category" (base cells are `labels`) or "numeric" (base cell i is
      [edges[i], edges[i+1]), the last one closed).
    labels: category labels in code order ("category" kind).
    edges: increasing bin edges ("numeric" kind).
    point: per numeric base cell, whether it stands for exactly the value
      `edges[i]` (one cell per value) rather than an interval.
    integer: numeric output is rounded to integers.
    missing: the column has a last, missing cell.
    groups: the model's cells: tuples of base-cell indices, in order.
    weights: per group, the relative frequency of its base cells (for
      decoding merged cells; DP: from noisy counts).
    from_data: what was taken from the private data without noise.
    bins: declared bin edges that the cells refine (binned columns), or None.
    coarse: the column's coarse view for multi-way tables: a tuple of
      tuples of consecutive group indices (see `coarsen`), or None.
  """
  name: str
  kind: str
  labels: Optional[tuple] = None
  edges: Optional[tuple] = None
  point: Optional[tuple] = None
  integer: bool = False
  missing: bool = False
  groups: tuple = ()
  weights: tuple = ()
  from_data: tuple = ()
  bins: Optional[tuple] = None
  coarse: Optional[tuple] = None

  @property
  def num_base(self) -> int:
    return len(self.labels) if self.kind == "category" else len(self.edges) - 1

  @property
  def num_cells(self) -> int:
    """Cells of observed values (the model's categories)."""
    return len(self.groups)

  @property
  def size(self) -> int:
    """All cells, including the missing cell."""
    return self.num_cells + int(self.missing)

  @property
  def coarse_size(self) -> int:
    """Cells of the coarse view, the missing cell included (= size without one)."""
    return self.size if self.coarse is None else len(self.coarse) + int(self.missing)

  def group_to_coarse(self) -> np.ndarray:
    """Coarse cell of every cell (the missing cell maps to the last coarse cell)."""
    if self.coarse is None:
      return np.arange(self.size)
    out = np.zeros(self.size, np.int64)
    for i, members in enumerate(self.coarse):
      out[list(members)] = i
    if self.missing:
      out[-1] = len(self.coarse)
    return out

  def base_to_group(self) -> np.ndarray:
    out = np.zeros(self.num_base, np.int64)
    for g, members in enumerate(self.groups):
      out[list(members)] = g
    return out

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    return {k: _listify(v) for k, v in d.items()}

  @classmethod
  def from_dict(cls, d: dict) -> "CellColumn":
    return cls(**{k: _tuplify(v) if k != "name" else v for k, v in d.items()})


def coarse_maps(cells) -> Optional[list]:
  """Each column's `group_to_coarse` map: the cells the swaps' triple tables use.

  Args:
    cells: `CellColumn`s, or their `to_dict` forms (as a result file stores
      them), or None (a result without cells, e.g. of `jtwin fit`).

  Returns:
    per column int64 [size], the coarse cell of each cell (missing cell
    last); None when `cells` is None or empty.
  """
  if not cells:
    return None
  return [(CellColumn.from_dict(c) if isinstance(c, dict) else c).group_to_coarse()
          for c in cells]


def _listify(v):
  return [_listify(x) for x in v] if isinstance(v, (tuple, list)) else v


def _tuplify(v):
  return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def _singletons(n: int) -> tuple:
  return tuple((i,) for i in range(n)), tuple((1.0,) for _ in range(n))


def _integer_points(lo: float, hi: float):
  values = np.arange(np.ceil(lo), np.floor(hi) + 1.0)
  return tuple(float(v) for v in np.append(values, values[-1] + 1.0)), (True,) * len(values)


def _quantile_levels(num_bins: int) -> np.ndarray:
  """Equal-mass levels plus finer ones in both tails.

  Values in a bin are decoded uniformly, so a wide outer bin (heavy tails)
  would spread its mass far from where the data are; the extra levels keep
  the outer bins narrow (sparse ones are merged again by `compress`, and a
  merged cell decodes by its members' noisy counts).
  """
  tails = np.array([0.001, 0.004, 0.01, 0.99, 0.996, 0.999])
  return np.union1d(np.linspace(0.0, 1.0, num_bins + 1), tails)


def _split_bins(bins, split: int, integer: bool) -> tuple:
  """Each declared bin cut into `split` equal parts (integer edges for integer columns)."""
  edges = []
  for a, b in zip(bins[:-1], bins[1:]):
    part = np.linspace(a, b, split + 1)[:-1]
    edges.extend(np.unique(np.ceil(part)) if integer else part)
  edges.append(bins[-1])
  return tuple(float(e) for e in np.unique(edges))


def build_cells(frame: pd.DataFrame, spec, domain, *, max_value_cells: int = MAX_VALUE_CELLS,
                num_bins: int = NUM_BINS, split_bins: int = SPLIT_BINS,
                edges: Optional[dict] = None) -> tuple:
  """The cells of every modelled column (before compression).

  Args:
    frame: the modelled columns (as read).
    spec: the `jtwin.spec.ModelSpec` (for declared bounds).
    domain: the `jtwin.data.Domain` resolved from `frame` and `spec`.
    max_value_cells: integer columns with at most this many values in their
      public range get one cell per value.
    num_bins: bins of numeric columns without declared bins.
    split_bins: other binned columns get each declared bin cut into this many
      equal parts (public refinements; sparse ones are merged again by
      `compress`).
    edges: {column: (edges, point flags)} released under DP
      (`jtwin.dp_domain`) for numeric columns without declared bounds; such
      columns' cells are read off the data only when absent here.

  Returns:
    a tuple of `CellColumn`, in model order.
  """
  out = []
  dp_edges = dict(edges or {})
  for f, c in zip(spec.features, domain.columns):
    from_data = tuple(x for x in c.from_data if not x.startswith("standardisation"))
    common = dict(name=c.name, missing=c.missing)
    if c.bins is None and c.categories is not None:
      groups, weights = _singletons(len(c.categories))
      out.append(CellColumn(kind="category", labels=tuple(c.categories), groups=groups,
                            weights=weights, from_data=from_data, **common))
      continue
    integer = bool(c.integer)
    if c.bins is not None:
      # the bins' range, narrowed by a declared top-code (`bounds` in the model file)
      lo, hi = c.bounds if c.bounds is not None else (c.bins[0], c.bins[-1])
      if integer and np.floor(hi) - np.ceil(lo) + 1 <= max_value_cells:
        edges, point = _integer_points(lo, hi)
      else:
        edges = _split_bins(c.bins, split_bins, integer)
        point = (False,) * (len(edges) - 1)
        if integer and edges[-2] == hi < edges[-1]:   # the top cell is the top-code alone
          point = point[:-1] + (True,)
      common["bins"] = tuple(float(e) for e in c.bins)
    elif f.bounds is not None:
      lo, hi = f.bounds
      if integer and np.floor(hi) - np.ceil(lo) + 1 <= max_value_cells:
        edges, point = _integer_points(lo, hi)
      else:
        e = np.linspace(lo, hi, num_bins + 1)
        edges, point = tuple(float(v) for v in e), (False,) * num_bins
    elif c.name in dp_edges:
      edges, point = (tuple(v) for v in dp_edges[c.name])
    else:
      x = jdata._numeric(frame[c.name], c.name, c.family, "data")
      x = x[~np.isnan(x)]
      distinct = np.unique(x)
      if integer and len(distinct) <= max_value_cells:
        values = list(distinct.astype(float))
        edges = tuple(values + [values[-1] + 1.0])
        point = (True,) * len(values)
        from_data += ("cells (its distinct values)",)
      else:
        e = np.unique(np.quantile(x, _quantile_levels(num_bins)))
        if len(e) < 2:
          e = np.array([e[0], e[0] + 1.0])
        edges, point = tuple(float(v) for v in e), (False,) * (len(e) - 1)
        from_data += (f"bin edges ({len(e) - 1} quantile bins)",)
    if len(edges) == 2:   # one cell: add an empty one, the model needs two
      edges = edges + (edges[-1] + 1.0,)
      point = point + (point[-1],)
    groups, weights = _singletons(len(edges) - 1)
    out.append(CellColumn(kind="numeric", edges=edges, point=point, integer=integer,
                          groups=groups, weights=weights, from_data=from_data, **common))
  return tuple(out)


def _base_codes(col: pd.Series, c: CellColumn, domain_col, source: str) -> np.ndarray:
  """Base-cell code of each observed value (anything where missing)."""
  isna = col.isna().to_numpy()
  if c.kind == "category":
    codes = np.zeros(len(col), np.int64)
    codes[~isna] = jdata._checked_codes(col[~isna], c.labels, c.name, source)
    return codes
  x = jdata._numeric(col, c.name, domain_col.family, source)
  x = np.where(isna, c.edges[0], x)
  codes = np.searchsorted(np.asarray(c.edges), x, side="right") - 1
  return np.clip(codes, 0, c.num_base - 1)


def encode_cells(frame: pd.DataFrame, cells, domain, *, source: str = "data") -> np.ndarray:
  """Model cell codes [N, D] int32; the missing cell is code `num_cells`."""
  out = np.zeros((len(frame), len(cells)), np.int32)
  for j, (c, dc) in enumerate(zip(cells, domain.columns)):
    col = frame[c.name]
    codes = c.base_to_group()[_base_codes(col, c, dc, source)]
    out[:, j] = np.where(col.isna().to_numpy(), c.num_cells, codes)
  return out


def compress(cells, noisy_counts, threshold: float, noise_sd: float = 0.0, *,
             run_weights=None):
  """MST-style domain compression from noisy 1-way counts.

  Args:
    cells: tuple of `CellColumn` with singleton groups.
    noisy_counts: per column, the noisy counts of its cells (incl. the
      missing cell last where present).
    threshold: cells whose noisy count is below this are merged.
    noise_sd: the counts' noise sd (0: as MST). With it, a numeric run of k
      cells must hold threshold * sqrt(k) (its noise grows as sqrt(k)), else
      it joins its neighbour: a stretch of empty tail cells whose noise adds
      up to the threshold does not become a cell of its own, which the model
      would fit and the decoder spread over the empty range. And a merged
      numeric cell decodes to its interval members in proportion to
      max(count - noise_sd, 0), so empty bins are rarely drawn for their
      noise alone (categories and one-value cells keep max(count, 0)).
    run_weights: optional callable (column index, run, clip) -> float
      [len(run)] weights of a merged numeric run's base cells (`run` lists
      their indices, `clip` their weights by the rule above), or None to
      keep `clip`; `napsumq` passes `run_decoding.run_chooser`'s.

  Returns:
    (new cells, per column the [new size, old size] 0/1 matrix that maps old
    cell counts to new ones).
  """
  new, maps = [], []
  for j, (c, y) in enumerate(zip(cells, noisy_counts)):
    y_obs = np.asarray(y[:c.num_cells], float)
    low = y_obs < threshold
    if c.kind == "category":
      keep = [[i] for i in range(c.num_cells) if not low[i]]
      rare = [i for i in range(c.num_cells) if low[i]]
      runs = keep + ([rare] if rare else [])
      runs.sort(key=lambda r: r[0])
    else:
      runs, current, total = [], [], 0.0
      for i in range(c.num_cells):
        current.append(i)
        total += y_obs[i]
        if total >= threshold:
          runs.append(current)
          current, total = [], 0.0
      if current:
        if runs:
          runs[-1] = runs[-1] + current
        else:
          runs.append(current)
      if noise_sd > 0:
        runs = _join_weak_runs(runs, y_obs, threshold)
    if len(runs) < 2:
      runs = [[i] for i in range(c.num_cells)]
    groups, weights = [], []
    for run in runs:
      members = tuple(m for g in run for m in c.groups[g])
      shift = [noise_sd if c.kind == "numeric" and not c.point[c.groups[g][0]] else 0.0
               for g in run]
      w = np.concatenate([np.asarray(c.weights[g]) * max(y_obs[g] - d, 0.0)
                          for g, d in zip(run, shift)])
      if run_weights is not None and c.kind == "numeric" and len(run) > 1:
        chosen = run_weights(j, run, w)
        if chosen is not None:
          w = np.concatenate([np.asarray(c.weights[g]) * max(float(v), 0.0)
                              for g, v in zip(run, chosen)])
      w = w + 1e-6 * max(w.sum(), 1.0) + 1e-12
      groups.append(members)
      weights.append(tuple(float(v) for v in w / w.sum()))
    m = np.zeros((len(runs) + int(c.missing), c.size))
    for g, run in enumerate(runs):
      m[g, run] = 1.0
    if c.missing:
      m[-1, -1] = 1.0
    new.append(dataclasses.replace(c, groups=tuple(groups), weights=tuple(weights)))
    maps.append(m)
  return tuple(new), maps


def _join_weak_runs(runs, y, threshold):
  """Runs whose total is below threshold * sqrt(length) join a neighbour."""
  runs = [list(r) for r in runs]
  i = 0
  while len(runs) > 1 and i < len(runs):
    if y[runs[i]].sum() >= threshold * np.sqrt(len(runs[i])):
      i += 1
      continue
    if i == 0:
      runs[1] = runs[0] + runs[1]
    else:
      runs[i - 1] = runs[i - 1] + runs[i]
    del runs[i]
    i = max(i - 1, 0)
  return runs


def coarsen(cells, max_coarse: int = MAX_COARSE) -> tuple:
  """Adds each numeric column's coarse view, used for multi-way tables.

  One cell per value (Adult's age, 17..90) keeps 1-way marginals sharp, but a
  2-way table over 74 x 99 cells spreads the noise thinly. Multi-way tables
  therefore use a coarse view of a numeric column: its declared bins where
  the cells refine declared bins, else at most `max_coarse` runs of
  consecutive cells. The model is fitted to the fine 1-way tables and the
  coarse multi-way tables at once (a coarse cell's probability is the sum of
  its fine cells'). Public: depends only on the (DP) cells.
  """
  out = []
  for c in cells:
    if c.kind != "numeric" or c.num_cells <= 2:
      out.append(c)
      continue
    lower = np.asarray([c.edges[g[0]] for g in c.groups])
    if c.bins is not None and len(c.bins) - 1 < c.num_cells:
      which = np.clip(np.searchsorted(np.asarray(c.bins), lower, side="right") - 1, 0, None)
    elif c.num_cells > max_coarse:
      which = (np.arange(c.num_cells) * max_coarse) // c.num_cells
    else:
      out.append(c)
      continue
    runs = [tuple(int(i) for i in np.flatnonzero(which == w)) for w in np.unique(which)]
    out.append(dataclasses.replace(c, coarse=tuple(runs)) if len(runs) < c.num_cells else c)
  return tuple(out)


def decode_cells(codes: np.ndarray, observed: np.ndarray, cells, rng,
                 derived=()) -> pd.DataFrame:
  """Model cell codes [N, D] (and observed [N, D]) -> a DataFrame of values.

  A merged cell draws one of its base cells by its weights; a numeric base
  cell is its value (one cell per value) or a uniform draw within its bin
  (integers where the column is integer). Unobserved cells are NA. Each
  `jtwin.marginals.derived.DerivedColumn` in `derived` is then set from its
  parent's drawn base cell and inserted at its position.
  """
  codes = np.asarray(codes)
  observed = np.asarray(observed, bool)
  out, parent_base = {}, {}
  for j, c in enumerate(cells):
    obs = observed[:, j] & (codes[:, j] < c.num_cells)
    g = np.clip(codes[:, j], 0, c.num_cells - 1).astype(np.int64)
    base = _draw_members(g, c, rng)
    out[c.name] = _base_values(base, obs, c, rng)
    parent_base[c.name] = np.where(obs, base, c.num_base)
  names = [c.name for c in cells]
  for dc in sorted(derived, key=lambda x: x.position):
    child = dc.child_codes(parent_base[dc.parent])
    obs = child < dc.cells.num_base
    out[dc.name] = _base_values(np.minimum(child, dc.cells.num_base - 1), obs, dc.cells, rng)
    names.insert(dc.position, dc.name)
  return pd.DataFrame(out, columns=names)


def _base_values(base: np.ndarray, obs: np.ndarray, c: CellColumn, rng) -> pd.Series:
  """A column's values from its base cells [N] (NA where not `obs`)."""
  if c.kind == "category":
    return jdata._labels_series(c.labels, base, obs)
  edges = np.asarray(c.edges)
  point = np.asarray(c.point, bool)[base]
  drawn = jdata._draw_in_bins(base, edges, c.integer, rng)
  x = np.where(point, edges[base], drawn)
  return (jdata._int_series(x, obs) if c.integer
          else pd.Series(np.where(obs, jdata._significant(x, 7), np.nan)))


def _draw_members(g: np.ndarray, c: CellColumn, rng) -> np.ndarray:
  """One base cell per row from its group's members, by the group's weights."""
  members = np.concatenate([np.asarray(m, np.int64) for m in c.groups])
  if all(len(m) == 1 for m in c.groups):
    return members[g]
  starts = np.concatenate([[0], np.cumsum([len(m) for m in c.groups])[:-1]])
  # cumulative weights shifted by the group index: one sorted array for all groups
  cum = np.concatenate([gi + np.cumsum(w) for gi, w in enumerate(c.weights)])
  cum[np.concatenate([starts[1:] - 1, [len(cum) - 1]])] = np.arange(1, c.num_cells + 1)
  u = g + rng.random(len(g)) * (1.0 - 1e-9)
  idx = np.searchsorted(cum, u, side="right")
  idx = np.clip(idx, starts[g], starts[g] + np.array([len(m) for m in c.groups])[g] - 1)
  return members[idx]
