"""Distinguishability: propensity-score mean squared error (pMSE).

A classifier is trained to tell real (label 0) from synthetic (label 1) rows
of the stacked table. With fitted propensities p_i and c = n_synth / N,
pMSE = mean_i (p_i - c)^2. For logistic regression with k parameters its
expectation when both tables come from one distribution is
(k - 1) (1 - c)^2 c / N (Snoke et al. 2018), so pMSE / null is about 1 for a
perfect generator and grows as the twin becomes distinguishable.

Two logistic models are fitted:

* `propensity_mse`: main effects only (one-hot codes of every column). Its
  score equations only involve 1-way marginals, so it detects marginal
  differences but is blind to the dependence structure (a sample with each
  column permuted independently scores pMSE = 0).
* `propensity_mse_pairs`: main effects plus all pairwise interactions of
  coarsened codes (at most `levels` groups per column, plus missing), the
  default of synthpop's `utility.gen(method="logit")`. It sees 2-way
  dependence.

Both are fitted on at most `max_rows` rows of each table (a seeded
subsample of larger tables, default 100,000), with N, c and the null taken
from the rows used. The designs are scipy.sparse, so memory grows with
rows x columns, never with the number of categories.

References:
  Snoke, Raab, Nowok, Dibben, Slavkovic (2018), "General and specific
  utility measures for synthetic data", J. R. Stat. Soc. A 181(3).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from jtwin.evaluate.classifiers import _fit_lbfgs, fit_logistic, sigmoid
from jtwin.evaluate.encoding import one_hot
from jtwin.evaluate.metrics import sample_subsets

__all__ = ["MAX_ROWS", "coarsen_codes", "propensity_mse",
           "propensity_mse_pairs", "subsample"]

MAX_ROWS = 100_000
_BLOCK_ROWS = 16_384


def subsample(codes: np.ndarray, max_rows: Optional[int],
              seed: int) -> np.ndarray:
  """`codes`, or a seeded sample of `max_rows` of its rows (order kept)."""
  if max_rows is None or max_rows <= 0 or len(codes) <= max_rows:
    return codes
  rng = np.random.default_rng(seed)
  return codes[np.sort(rng.choice(len(codes), size=max_rows, replace=False))]


def _summary(p: np.ndarray, c: float, k: int, prefix: str) -> dict:
  n = p.size
  pmse = float(np.mean((p - c) ** 2))
  null = (k - 1) * (1 - c) ** 2 * c / n
  return {f"{prefix}": pmse, f"{prefix}_null": float(null),
          f"{prefix}_ratio": float(pmse / null) if null > 0 else float("nan"),
          f"{prefix}_num_params": int(k)}


def propensity_mse(codes_real: np.ndarray, codes_synth: np.ndarray,
                   sizes: Sequence[int], *, l2: float = 1e-6,
                   max_rows: Optional[int] = MAX_ROWS, seed: int = 0) -> dict:
  """pMSE of a main-effects logistic regression on one-hot codes.

  One reference level (the most frequent) is dropped per column, as are
  levels absent from both tables, so k = 1 + sum_j (L_j - 1).

  Args:
    codes_real: int [N_r, D] codes of the real table.
    codes_synth: int [N_s, D] codes of the synthetic table.
    sizes: number of codes of each column.
    l2: ridge strength (tiny: it only keeps separable fits finite).
    max_rows: most rows used of each table (None: all).
    seed: seed of the row subsample.

  Returns:
    dict with "pmse", "pmse_null", "pmse_ratio", "pmse_num_params" (k) and
    "pmse_rows" (rows used, both tables).
  """
  codes_real = subsample(codes_real, max_rows, seed)
  codes_synth = subsample(codes_synth, max_rows, seed + 1)
  codes = np.vstack([codes_real, codes_synth])
  y = np.concatenate([np.zeros(len(codes_real)), np.ones(len(codes_synth))])
  x = one_hot(codes, sizes)
  del codes
  counts = np.asarray(x.sum(0)).ravel()
  keep = counts > 0
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
  for start, size in zip(offsets, sizes):
    keep[start + int(np.argmax(counts[start:start + size]))] = False
  x = x[:, keep].tocsr()
  fit = fit_logistic(x, y, l2=l2)
  p = sigmoid(fit.logits(x))
  out = _summary(p, len(codes_synth) / len(y), 1 + x.shape[1], "pmse")
  out["pmse_rows"] = int(len(y))
  return out


def coarsen_codes(codes: np.ndarray, codes_real: np.ndarray,
                  sizes: Sequence[int], ordered: Sequence[bool],
                  levels: int = 5) -> np.ndarray:
  """Merges each column's codes into at most `levels` groups plus missing.

  Ordered (binned numeric) columns are cut into `levels` groups of about
  equal real mass; unordered columns keep their `levels - 1` most frequent
  real categories and pool the rest. Missing stays its own group. Groups
  are renumbered so that 0 is the most frequent one in `codes`.

  Args:
    codes: int [N, D] codes to coarsen.
    codes_real: int [N_r, D] real codes that decide the grouping.
    sizes: number of codes per column (the last is missing).
    ordered: per column, whether its codes are ordered bins.
    levels: non-missing groups per column.

  Returns:
    int [N, D] group codes.
  """
  out = np.empty_like(codes)
  for j, size in enumerate(sizes):
    counts = np.bincount(codes_real[:, j], minlength=size)[:-1].astype(float)
    total = max(counts.sum(), 1.0)
    if ordered[j]:
      before = (np.cumsum(counts) - counts) / total
      group = np.minimum((before * levels).astype(int), levels - 1)
    else:
      group = np.full(size - 1, levels - 1)
      top = np.argsort(-counts, kind="stable")[:levels - 1]
      group[top] = np.arange(top.size)
    group = np.append(group, levels)  # the missing code
    g = group[codes[:, j]]
    values, g = np.unique(g, return_inverse=True)
    ref = int(np.argmax(np.bincount(g, minlength=values.size)))
    out[:, j] = np.where(g == ref, 0, np.where(g == 0, ref, g))
  return out


def _fit_sparse_logistic(x, y: np.ndarray, l2: float,
                         max_iter: int = 1000) -> np.ndarray:
  """L-BFGS fit of mean log-loss + l2/2 |w|^2 on a sparse x; returns logits."""
  fit = _fit_lbfgs(x, y, l2, max_iter=max_iter)
  return fit.logits(x)


def propensity_mse_pairs(codes_real: np.ndarray, codes_synth: np.ndarray,
                         sizes: Sequence[int], ordered: Sequence[bool], *,
                         levels: int = 5, max_pairs: int = 300,
                         l2: float = 1e-4, seed: int = 0,
                         max_rows: Optional[int] = MAX_ROWS) -> dict:
  """pMSE of a logistic regression with all pairwise interactions.

  Codes are coarsened (`coarsen_codes`), dummy-coded against each column's
  most frequent group, and every pair of columns contributes the products of
  their dummies. With more than `max_pairs` column pairs a seeded random
  sample of pairs is used. Fitted by L-BFGS on a sparse design; k counts the
  intercept and the non-empty design columns.

  Args:
    codes_real: int [N_r, D] real codes.
    codes_synth: int [N_s, D] synthetic codes.
    sizes: number of codes per column.
    ordered: per column, whether its codes are ordered bins.
    levels: non-missing groups per column after coarsening.
    max_pairs: most column pairs given interactions.
    l2: ridge strength.
    seed: seed of the pair sample and of the row subsample.
    max_rows: most rows used of each table (None: all).

  Returns:
    dict with "pmse_pairs", "pmse_pairs_null", "pmse_pairs_ratio",
    "pmse_pairs_num_params", "pmse_pairs_num_column_pairs".
  """
  import scipy.sparse

  codes_real = subsample(codes_real, max_rows, seed)
  codes_synth = subsample(codes_synth, max_rows, seed + 1)
  codes = np.vstack([codes_real, codes_synth])
  y = np.concatenate([np.zeros(len(codes_real)), np.ones(len(codes_synth))])
  g = coarsen_codes(codes, codes_real, sizes, ordered, levels)
  del codes
  n, d = g.shape
  num = (g.max(0) + 1 if n else np.ones(d, int)).astype(np.int64)
  pairs = sample_subsets(d, 2, max_pairs, np.random.default_rng(seed))
  # First design column of every term (main effects, then pairs).
  widths = [int(num[j]) - 1 for j in range(d)]
  widths += [int((num[a] - 1) * (num[b] - 1)) for a, b in pairs]
  starts = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
  offset = int(starts[-1])
  # Design column of every (row, term), -1 where the dummy is 0, built in
  # blocks of rows so that the N x (D + pairs) table never exists at once.
  parts, counts = [], []
  for lo in range(0, n, _BLOCK_ROWS):
    gb = g[lo:lo + _BLOCK_ROWS].astype(np.int64)
    index = np.full((gb.shape[0], d + len(pairs)), -1, dtype=np.int64)
    for j in range(d):
      index[:, j] = np.where(gb[:, j] > 0, starts[j] + gb[:, j] - 1, -1)
    for t, (a, b) in enumerate(pairs):
      inside = (gb[:, a] > 0) & (gb[:, b] > 0)
      index[:, d + t] = np.where(
          inside, starts[d + t] + (gb[:, a] - 1) * (num[b] - 1) + gb[:, b] - 1,
          -1)
    used = index >= 0
    counts.append(used.sum(1))
    parts.append(index[used].astype(np.int32))  # row-major: rows stay whole
  del g
  indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
  if indptr[-1] < 2**31:
    indptr = indptr.astype(np.int32)
  indices = np.concatenate(parts) if parts else np.zeros(0, np.int32)
  del parts
  # Drop empty design columns by renumbering (no copy of the matrix).
  present = np.bincount(indices, minlength=offset) > 0
  indices = (np.cumsum(present) - 1).astype(np.int32)[indices]
  x = scipy.sparse.csr_matrix(
      (np.ones(indices.size), indices, indptr),
      shape=(n, int(present.sum())))
  del indices
  p = sigmoid(_fit_sparse_logistic(x, y, l2))
  out = _summary(p, len(codes_synth) / n, 1 + x.shape[1], "pmse_pairs")
  out["pmse_pairs_num_column_pairs"] = len(pairs)
  return out
