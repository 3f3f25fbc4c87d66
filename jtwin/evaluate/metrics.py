"""Fidelity metrics on integer-coded tables (see `encoding`), all NumPy.

Marginals are counted with one `np.bincount` per column subset on combined
codes (`code_a * size_b + code_b` ...), so all 2-way marginals of a 15-column
table with 32k rows take milliseconds. A marginal with more than
`DENSE_CELLS` cells (many fine bins) is counted sparsely instead, over its
non-empty cells only (`np.unique`), so memory never grows with the product
of the column sizes.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DENSE_CELLS",
    "auroc",
    "cramers_v",
    "cramers_v_matrix",
    "joint_counts",
    "kway_tvds",
    "pearson_matrix",
    "sample_subsets",
    "synthetic_ranking_agreement",
    "tvd",
    "wasserstein1",
]


DENSE_CELLS = 1 << 22


def _flat_codes(codes: np.ndarray, sizes: Sequence[int],
                columns: Sequence[int]) -> np.ndarray:
  flat = np.zeros(codes.shape[0], dtype=np.int64)
  for c in columns:
    flat = flat * int(sizes[c]) + codes[:, c]
  return flat


def _num_cells(sizes: Sequence[int], columns: Sequence[int]) -> int:
  return math.prod(int(sizes[c]) for c in columns)


def joint_counts(codes: np.ndarray, sizes: Sequence[int],
                 columns: Sequence[int]) -> np.ndarray:
  """Counts of the joint codes of `columns`: an array of shape sizes[columns].

  Args:
    codes: int [N, D] codes.
    sizes: number of codes of every column.
    columns: the column indices of the marginal.
  """
  shape = tuple(int(sizes[c]) for c in columns)
  flat = np.zeros(codes.shape[0], dtype=np.int64)
  for c, s in zip(columns, shape):
    flat = flat * s + codes[:, c]
  return np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape)


def tvd(counts_p: np.ndarray, counts_q: np.ndarray) -> float:
  """Total variation distance 0.5 * sum |p - q| of two count tables."""
  p = counts_p / max(counts_p.sum(), 1)
  q = counts_q / max(counts_q.sum(), 1)
  return float(0.5 * np.abs(p - q).sum())


def sample_subsets(num_columns: int, k: int, max_subsets: int,
                   rng: np.random.Generator) -> list[tuple[int, ...]]:
  """All k-subsets of the columns, or `max_subsets` of them drawn at random.

  The sample is drawn without replacement from all subsets, and sorted.
  """
  total = _comb(num_columns, k)
  if total <= max_subsets:
    return list(itertools.combinations(range(num_columns), k))
  seen = set()
  while len(seen) < max_subsets:
    seen.add(tuple(sorted(rng.choice(num_columns, size=k, replace=False)
                          .tolist())))
  return sorted(seen)


def _comb(n: int, k: int) -> int:
  return math.comb(n, k) if n >= k else 0


def _sparse_tvd(codes_p: np.ndarray, codes_q: np.ndarray,
                sizes: Sequence[int], columns: Sequence[int]) -> float:
  """TVD over the non-empty cells only (no dense table)."""
  up, cp = np.unique(_flat_codes(codes_p, sizes, columns), return_counts=True)
  uq, cq = np.unique(_flat_codes(codes_q, sizes, columns), return_counts=True)
  cells, where = np.unique(np.concatenate([up, uq]), return_inverse=True)
  diff = np.bincount(where, np.concatenate([cp / max(cp.sum(), 1),
                                            -cq / max(cq.sum(), 1)]),
                     minlength=cells.size)
  return float(0.5 * np.abs(diff).sum())


def kway_tvds(codes_p: np.ndarray, codes_q: np.ndarray, sizes: Sequence[int],
              subsets: Sequence[Sequence[int]]) -> np.ndarray:
  """TVD of the marginal of every column subset: float [len(subsets)].

  Subsets with more than `DENSE_CELLS` cells are counted sparsely.
  """
  return np.array([
      tvd(joint_counts(codes_p, sizes, s), joint_counts(codes_q, sizes, s))
      if _num_cells(sizes, s) <= DENSE_CELLS
      else _sparse_tvd(codes_p, codes_q, sizes, s) for s in subsets],
                  dtype=float)


def cramers_v(table: np.ndarray) -> float:
  """Cramér's V of a 2-way count table (no bias correction).

  V = sqrt(chi2 / (n * (min(r, c) - 1))), where r and c count the non-empty
  rows and columns. NaN if either margin has a single non-empty level.
  """
  table = np.asarray(table, dtype=float)
  table = table[table.sum(1) > 0][:, table.sum(0) > 0]
  r, c = table.shape
  n = table.sum()
  if min(r, c) < 2:
    return float("nan")
  expected = np.outer(table.sum(1), table.sum(0)) / n
  chi2 = ((table - expected) ** 2 / expected).sum()
  return float(np.sqrt(chi2 / (n * (min(r, c) - 1))))


def cramers_v_matrix(codes: np.ndarray, sizes: Sequence[int],
                     pairs: Optional[Sequence[tuple]] = None) -> np.ndarray:
  """Cramér's V of every column pair (or of `pairs` only, NaN elsewhere): float
  [D, D], symmetric, diagonal 1.

  Missing is a category of its own, numeric columns are binned (codes).
  """
  d = codes.shape[1]
  out = np.eye(d)
  if pairs is not None:
    out[~np.eye(d, dtype=bool)] = np.nan
  for a, b in (itertools.combinations(range(d), 2) if pairs is None else pairs):
    if _num_cells(sizes, (a, b)) <= DENSE_CELLS:
      v = cramers_v(joint_counts(codes, sizes, (a, b)))
    else:
      v = _sparse_cramers_v(codes[:, a], codes[:, b], int(sizes[b]))
    out[a, b] = out[b, a] = v
  return out


def _sparse_cramers_v(a: np.ndarray, b: np.ndarray, size_b: int) -> float:
  """Cramér's V from the non-empty cells: chi2 = n (sum n_ij^2/(n_i n_j) - 1)."""
  cells, counts = np.unique(a.astype(np.int64) * size_b + b,
                            return_counts=True)
  rows, row_of = np.unique(cells // size_b, return_inverse=True)
  cols, col_of = np.unique(cells % size_b, return_inverse=True)
  if min(rows.size, cols.size) < 2:
    return float("nan")
  counts = counts.astype(float)
  n = counts.sum()
  row_sum = np.bincount(row_of, counts)
  col_sum = np.bincount(col_of, counts)
  chi2 = n * (np.sum(counts ** 2 / (row_sum[row_of] * col_sum[col_of])) - 1)
  return float(np.sqrt(max(chi2, 0.0) / (n * (min(rows.size, cols.size) - 1))))


def pearson_matrix(frame: pd.DataFrame, chunk_rows: int = 65536
                   ) -> np.ndarray:
  """Pearson correlations of the columns of `frame` (pairwise complete).

  Streams over blocks of `chunk_rows` rows: for every column pair it sums,
  over the rows where both are finite, the counts, sums, squares and
  products of the values centred on the column means, so memory is one
  block, never a float copy of the whole table. NaN where a pair has fewer
  than 2 common rows or a constant column (as pandas' `DataFrame.corr`).
  """
  k, n = frame.shape[1], len(frame)
  if k == 0:
    return np.zeros((0, 0))
  columns = [frame.iloc[:, j] for j in range(k)]
  columns = [c if pd.api.types.is_numeric_dtype(c)
             and not pd.api.types.is_bool_dtype(c)
             else pd.to_numeric(c, errors="coerce") for c in columns]
  means = np.array([float(c.mean()) if c.notna().any() else 0.0
                    for c in columns])
  count = np.zeros((k, k))
  sum_x = np.zeros((k, k))  # sum_x[i, j]: sum of x_i where i and j finite
  sum_xx = np.zeros((k, k))
  sum_xy = np.zeros((k, k))
  for start in range(0, n, chunk_rows):
    block = np.stack([c.iloc[start:start + chunk_rows].to_numpy(
        dtype=float, na_value=np.nan) for c in columns], axis=1) - means
    finite = np.isfinite(block)
    mask = finite.astype(float)
    block[~finite] = 0.0
    count += mask.T @ mask
    sum_x += block.T @ mask
    sum_xx += (block * block).T @ mask
    sum_xy += block.T @ block
  with np.errstate(invalid="ignore", divide="ignore"):
    cov = sum_xy - sum_x * sum_x.T / count
    var_i = sum_xx - sum_x ** 2 / count
    out = cov / np.sqrt(var_i * var_i.T)
  out[(count < 2) | ~np.isfinite(out)] = np.nan
  return np.clip(out, -1.0, 1.0)


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
  """Exact Wasserstein-1 distance of two 1-d samples, via sorted quantiles.

  W1 = integral over u in (0, 1) of |F_a^{-1}(u) - F_b^{-1}(u)|, evaluated
  exactly on the union of the two step functions' breakpoints. NaNs are
  dropped; NaN if either sample is empty.
  """
  a = np.sort(np.asarray(a, dtype=float)[~np.isnan(a)])
  b = np.sort(np.asarray(b, dtype=float)[~np.isnan(b)])
  n, m = a.size, b.size
  if n == 0 or m == 0:
    return float("nan")
  u = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
  du = np.diff(u, prepend=0.0)
  mid = u - du / 2
  ia = np.minimum((mid * n).astype(np.int64), n - 1)
  ib = np.minimum((mid * m).astype(np.int64), m - 1)
  return float(np.sum(du * np.abs(a[ia] - b[ib])))


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x, ties sharing their average rank."""
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  boundaries = np.flatnonzero(np.diff(xs)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [xs.size]])
  avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
  ranks = np.empty(x.size)
  ranks[order] = np.repeat(avg, ends - starts)
  return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve by the rank (Mann-Whitney U) statistic.

  AUROC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0), R_1 the sum of the
  positives' ranks among all scores (ties get average ranks, so a tie
  counts 1/2). NaN if one class is absent.

  Args:
    labels: bool or 0/1 [N], 1 = positive.
    scores: float [N], higher = more likely positive.
  """
  labels = np.asarray(labels).astype(bool)
  scores = np.asarray(scores, dtype=float)
  n1 = int(labels.sum())
  n0 = labels.size - n1
  if n1 == 0 or n0 == 0:
    return float("nan")
  r1 = _average_ranks(scores)[labels].sum()
  return float((r1 - n1 * (n1 + 1) / 2) / (n1 * n0))


def synthetic_ranking_agreement(scores_real: Sequence[float],
                                scores_synth: Sequence[float]) -> float:
  """Fraction of model pairs ordered the same way by both score lists.

  A pair (i, j) agrees when sign(real_i - real_j) == sign(synth_i - synth_j)
  (a tie agrees only with a tie); pairs with an undefined (NaN) score are
  left out. NaN with fewer than two models with defined scores.

  References:
    Jordon, Yoon, van der Schaar (2018), "Measuring the quality of synthetic
    data for use in competitions", arXiv:1806.11345.
  """
  r = np.asarray(scores_real, dtype=float)
  s = np.asarray(scores_synth, dtype=float)
  ok = np.isfinite(r) & np.isfinite(s)    # an undefined score (e.g. AUROC of one class)
  pairs = [(i, j) for i, j in itertools.combinations(range(r.size), 2) if ok[i] and ok[j]]
  if not pairs:
    return float("nan")
  agree = [np.sign(r[i] - r[j]) == np.sign(s[i] - s[j]) for i, j in pairs]
  return float(np.mean(agree))
