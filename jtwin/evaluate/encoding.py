"""Encodes decoded tables to small integer codes, once, for all metrics.

Every column becomes integer codes `0 .. num_codes - 1`:

* a *numeric* column (a numeric, non-boolean dtype with more than
  `max_categories` distinct values in the real data, or any column given in
  `bins`) is cut into bins. By default these are `DEFAULT_BINS` (20)
  equal-width bins between the REAL data's minimum and maximum; values of
  other tables outside that range fall into the first or last bin;
* every other column is *categorical*: its codes index the sorted union of the
  values seen in all the tables given to `make_coders`. A column with more
  than `max_levels` (`DEFAULT_MAX_LEVELS`, 100) distinct values keeps its
  `max_levels` most frequent real values and pools the rest into one
  "(other)" code, so an ID column costs 102 codes, not one per row;
* missing (NaN / None / empty cell) is always its own, last, code.

`one_hot` builds the one-hot design as a scipy.sparse CSR matrix (one stored
entry per row and column), never a dense [N, sum(sizes)] array.

Privacy:
  Bin edges and category sets are read off the data (real and synthetic).
  They are for the data holder's evaluation only, never for release.
"""
from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_MAX_LEVELS",
    "ColumnCoder",
    "encode_frame",
    "is_numeric_column",
    "make_coders",
    "one_hot",
    "one_hot_dense",
]

DEFAULT_BINS = 20
DEFAULT_MAX_LEVELS = 100
MISSING_LABEL = "(missing)"
OTHER_LABEL = "(other)"

Bins = Union[None, int, Mapping[str, Union[int, Sequence[float]]]]


class ColumnCoder(NamedTuple):
  """How one column maps to integer codes.

  Attributes:
    name: column name.
    kind: "numeric" (binned) or "categorical".
    categories: the category values (categorical columns), else None.
    edges: float bin edges, increasing, length num_bins + 1 (numeric), else
      None.
    other: whether a categorical column has an "(other)" code (after the
      categories, before missing) pooling the values beyond `max_levels`.
  """
  name: str
  kind: str
  categories: Optional[tuple] = None
  edges: Optional[np.ndarray] = None
  other: bool = False

  @property
  def num_codes(self) -> int:
    """Number of codes, including the trailing missing code."""
    if self.kind == "numeric":
      return len(self.edges)
    return len(self.categories) + int(self.other) + 1

  def labels(self) -> list[str]:
    """A readable label per code (bins as `[lo, hi)`)."""
    if self.kind == "numeric":
      e = self.edges
      out = [f"[{e[i]:.4g}, {e[i + 1]:.4g})" for i in range(len(e) - 2)]
      out.append(f"[{e[-2]:.4g}, {e[-1]:.4g}]")
    else:
      out = [str(c) for c in self.categories]
      if self.other:
        out.append(OTHER_LABEL)
    return out + [MISSING_LABEL]


def is_numeric_column(column: pd.Series,
                      max_categories: int = DEFAULT_BINS) -> bool:
  """True if `column` is numeric (not bool) with > `max_categories` values."""
  if (not pd.api.types.is_numeric_dtype(column)
      or pd.api.types.is_bool_dtype(column)):
    return False
  return int(column.nunique(dropna=True)) > max_categories


def _sorted_values(values: np.ndarray) -> tuple:
  values = list(values)
  try:
    return tuple(sorted(values))
  except TypeError:
    return tuple(sorted(values, key=lambda v: (type(v).__name__, str(v))))


def _equal_width_edges(column: pd.Series, num_bins: int) -> np.ndarray:
  x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
  x = x[np.isfinite(x)]
  if x.size == 0:
    return np.array([0.0, 1.0])
  lo, hi = float(x.min()), float(x.max())
  if hi <= lo:
    return np.array([lo, lo + 1.0])
  return np.linspace(lo, hi, num_bins + 1)


def make_coders(real: pd.DataFrame, others: Iterable[pd.DataFrame] = (), *,
                bins: Bins = None,
                categorical: Optional[Iterable[str]] = None,
                max_categories: int = DEFAULT_BINS,
                max_levels: Optional[int] = DEFAULT_MAX_LEVELS
                ) -> list[ColumnCoder]:
  """Builds a coder for every column of `real`.

  Args:
    real: the real table; decides each column's kind and the bin edges.
    others: further tables (synthetic, test) whose category values are added
      to the categorical columns' category sets. Missing columns are skipped.
    bins: None (`DEFAULT_BINS` equal-width bins), an int (that many
      equal-width bins between the real min and max), or a mapping from
      column name to an int or to explicit increasing bin edges. A column
      named in the mapping is binned even if it has few distinct values;
      unnamed numeric columns get `DEFAULT_BINS` bins.
    categorical: column names to treat as categorical whatever their dtype.
    max_categories: numeric columns with more distinct real values than
      this are binned.
    max_levels: most categories a categorical column keeps: with more
      distinct values (over all tables), the `max_levels` most frequent in
      `real` (ties: most frequent in `others`, then sorted order) are kept
      and the rest share an "(other)" code. None keeps every value.

  Returns:
    One `ColumnCoder` per column of `real`, in order.

  Raises:
    ValueError: explicit bin edges are not increasing or have < 2 entries.
  """
  others = list(others)
  forced = set(categorical or ())
  per_column = bins if isinstance(bins, Mapping) else {}
  default_bins = DEFAULT_BINS if bins is None or isinstance(
      bins, Mapping) else int(bins)
  if default_bins < 1:
    raise ValueError(f"bins must be >= 1, got {default_bins}")
  coders = []
  for name in real.columns:
    column = real[name]
    if name in per_column and name not in forced:
      spec = per_column[name]
      if np.ndim(spec) == 0:
        edges = _equal_width_edges(column, int(spec))
      else:
        edges = np.asarray(spec, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
          raise ValueError(f"bins[{name!r}] must be >= 2 increasing edges")
      coders.append(ColumnCoder(name, "numeric", edges=edges))
    elif name not in forced and is_numeric_column(column, max_categories):
      coders.append(ColumnCoder(
          name, "numeric", edges=_equal_width_edges(column, default_bins)))
    else:
      parts = [o[name] for o in others if name in o.columns]
      coders.append(_categorical_coder(name, column, parts, max_levels))
  return coders


def _categorical_coder(name: str, column: pd.Series, others: list,
                       max_levels: Optional[int]) -> ColumnCoder:
  """The coder of one categorical column, capped at `max_levels` values."""
  real_counts = column.astype(object).value_counts(dropna=True)
  other_counts = (pd.concat([p.astype(object) for p in others],
                            ignore_index=True).value_counts(dropna=True)
                  if others else pd.Series(dtype=float))
  values = real_counts.index.union(other_counts.index, sort=False)
  if max_levels is None or len(values) <= max_levels:
    return ColumnCoder(name, "categorical", categories=_sorted_values(values))
  if max_levels < 1:
    raise ValueError(f"max_levels must be >= 1, got {max_levels}")
  ranked = pd.DataFrame({
      "real": real_counts.reindex(values, fill_value=0).to_numpy(),
      "other": other_counts.reindex(values, fill_value=0).to_numpy(),
  })
  rank = {v: i for i, v in enumerate(_sorted_values(values))}
  ranked["order"] = [rank[v] for v in values]
  keep = ranked.sort_values(["real", "other", "order"],
                            ascending=[False, False, True]).index[:max_levels]
  return ColumnCoder(name, "categorical", other=True,
                     categories=_sorted_values(values[np.sort(keep)]))


def encode_column(column: pd.Series, coder: ColumnCoder) -> np.ndarray:
  """Codes of one column (int32 [N]); missing -> `coder.num_codes - 1`."""
  missing = coder.num_codes - 1
  if coder.kind == "numeric":
    x = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    num_bins = len(coder.edges) - 1
    codes = np.searchsorted(coder.edges[1:-1], x, side="right")
    codes = np.clip(codes, 0, num_bins - 1)
    codes[~np.isfinite(x)] = missing
    return codes.astype(np.int32)
  index = pd.Index(coder.categories, dtype=object)
  values = column.astype(object)
  codes = index.get_indexer(values)
  if coder.other:  # unseen or pooled values: "(other)"; missing stays missing
    codes[(codes < 0) & ~pd.isna(values).to_numpy()] = missing - 1
  codes[codes < 0] = missing  # missing values (and unseen ones, if any)
  return codes.astype(np.int32)


def encode_frame(frame: pd.DataFrame,
                 coders: Sequence[ColumnCoder]) -> np.ndarray:
  """Codes of all coded columns: int32 [N, D], columns in `coders` order."""
  out = np.empty((len(frame), len(coders)), dtype=np.int32)
  for j, coder in enumerate(coders):
    out[:, j] = encode_column(frame[coder.name], coder)
  return out


def _offsets(sizes: Sequence[int]) -> np.ndarray:
  return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def one_hot(codes: np.ndarray, sizes: Sequence[int], dtype=np.float64):
  """Concatenated one-hot blocks as a scipy.sparse CSR [N, sum(sizes)].

  Every row stores exactly one entry per column (D entries), so the memory
  is about 12 N D bytes whatever the number of categories.
  """
  import scipy.sparse

  codes = np.asarray(codes)
  n, d = codes.shape
  width = int(np.sum(sizes))
  index_dtype = np.int32 if width < 2**31 and n * d < 2**31 else np.int64
  indices = (codes + _offsets(sizes)).astype(index_dtype).ravel()
  indptr = np.arange(0, n * d + 1, d, dtype=index_dtype)
  return scipy.sparse.csr_matrix((np.ones(n * d, dtype=dtype), indices, indptr),
                                 shape=(n, width))


def one_hot_dense(codes: np.ndarray, sizes: Sequence[int],
                  dtype=np.float32) -> np.ndarray:
  """Dense one-hot blocks [N, sum(sizes)]: for small tables and tests only."""
  return one_hot(codes, sizes, dtype=dtype).toarray()
