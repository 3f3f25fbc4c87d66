"""Balanced sampling: a synthetic table whose counts follow the model closely.

Drawing N rows i.i.d. from a fitted mixture adds Monte Carlo noise to every
count of the synthetic table: a cell of probability p gets N p +- sqrt(N p).
That noise carries no information about the data and makes the twin's
marginals further from the model's (and so from the real data's) than they
need be. The balanced sampler removes most of it, as private-pgm's
`synthetic_data` does for graphical models (McKenna et al.):

1. the number of rows of each component is N pi_k rounded by systematic
   sampling (one uniform offset for all components, taken in a random
   order): every count is floor or ceil of N pi_k and they sum to N;
2. within component k, the number of rows with cell c of column j is
   n_k theta_kjc rounded the same way (one offset per component and
   column), and each column's values are shuffled within the component
   independently of the other columns (columns are independent given the
   component);
3. rows of one component swap values of one column when that brings the
   twin's 2-way tables (every pair of columns, the model's cells) closer to
   the model's expected ones, N sum_k pi_k theta_ki theta_kj' (`refine`,
   `SWEEPS` random proposals per row; this is kernel herding on the pair
   tables, a post-processing of the model only);
4. the rows are shuffled.

Steps 1-2 keep every count unbiased (E[count] = N pi_k, n_k theta_kjc)
and shrink its variance to at most 1/4 per rounding; swaps keep each
component's rows and each component's 1-way counts exactly and pull the
pair counts toward their expectations. On Adult at epsilon = 1 the swaps
took the median of ten seeds from 0.0295 to 0.0290 in 2-way TVD and from
0.0603 to 0.0595 in 3-way, lower on every seed (benchmarks/README.md
section 6). The mixture is the one at the posterior mean
(loc of the mean-field posterior). Use i.i.d. rows from posterior draws
(`sampling="iid"`) when the rows' sampling variance matters, e.g. for
Rubin's rules over several synthetic sets: those rules assume i.i.d. rows.

All steps are vectorised numpy on the host (counts, `np.repeat`, sorts,
batches of swap proposals), with loops over columns and batches only.
"""
from __future__ import annotations

import numpy as np

from jtwin.models import families as fam
from jtwin.models.mixture_layout import cat_log_probs, make_layout

__all__ = ["allocate", "balanced_rows", "component_tables", "refine", "sample_balanced"]

SWEEPS = 10          # swap proposals per row in `refine`
BATCH = 4096         # proposals scored at once (N / 64 for big tables, N / 8 for small)


def allocate(totals, probs, offsets) -> np.ndarray:
  """Systematic rounding of totals * probs: integer counts with the given sums.

  count_c = floor(n F_c + u) - floor(n F_{c-1} + u), F the cumulative
  probabilities and u in [0, 1) the offset: each count is floor or ceil of
  n p_c, they sum to n, and with u ~ U[0, 1) each is unbiased.

  Args:
    totals: [...] non-negative integers (as floats or ints).
    probs: [..., C] non-negative weights (normalised here; all-zero rows get
      uniform weights).
    offsets: [...] in [0, 1).

  Returns:
    int64 [..., C] counts, summing to `totals` along the last axis.
  """
  p = np.asarray(probs, np.float64)
  n = np.asarray(totals, np.float64)
  u = np.asarray(offsets, np.float64)
  s = p.sum(-1, keepdims=True)
  p = np.where(s > 0, p / np.where(s > 0, s, 1.0), 1.0 / p.shape[-1])
  cum = np.cumsum(p, -1)
  cum[..., -1] = 1.0                       # exact, so the counts sum to n
  cum = np.concatenate([np.zeros(cum.shape[:-1] + (1,)), cum], -1)
  edges = np.floor(n[..., None] * cum + u[..., None])
  return np.diff(edges, axis=-1).astype(np.int64)


def component_tables(features, num_components: int, theta: dict):
  """The mixture's weights and per-column cell probabilities at `theta`.

  Args:
    features: the model's `Feature`s (all categorical or Bernoulli).
    num_components: K.
    theta: the unconstrained parameters (numpy or jax arrays).

  Returns:
    (weights float64 [K], tables): tables[j] is float64 [K, C_j (+1)], the
    probability of each category of column j, with one more, last entry
    for the missing state when the column may be missing.

  Raises:
    JtwinInputError (a ValueError): a column is not categorical (Normal or
      Poisson).
  """
  from jtwin.errors import JtwinInputError
  layout = make_layout(features, num_components)
  if len(layout.cat_idx) != layout.num_features:
    raise JtwinInputError("balanced sampling needs a mixture of categorical columns only "
                          "(this one has Normal or Poisson columns): use --sampling iid "
                          "(sampling='iid')")
  f32 = lambda name: np.asarray(theta[name], np.float32)   # jax's default precision
  weights = np.exp(np.asarray(fam.categorical_log_probs(f32("mix")), np.float64))
  logp = np.asarray(cat_log_probs(layout, f32("cat_logits")), np.float64)
  missing = {int(j): m for m, j in enumerate(layout.missing_idx)}
  tables = []
  for jj, j in enumerate(layout.cat_idx):
    p = np.exp(logp[:, layout.pad_index[jj, :layout.cat_sizes[jj]]])
    p /= p.sum(1, keepdims=True)
    if int(j) in missing:
      q = 1.0 / (1.0 + np.exp(-np.asarray(theta["missing_logit"], np.float64)[:, missing[int(j)]]))
      p = np.concatenate([p * (1.0 - q[:, None]), q[:, None]], 1)
    tables.append(p)
  return weights / weights.sum(), tables


def balanced_rows(rng: np.random.Generator, weights, tables, missing, num_rows: int, *,
                  sweeps: int = SWEEPS):
  """Rows of a product mixture with counts rounded systematically (module docstring).

  Args:
    rng: numpy Generator (public randomness).
    weights: [K] component weights.
    tables: per column [K, C_j] cell probabilities (missing state last where
      the column may be missing).
    missing: per column, whether its last cell is the missing state.
    num_rows: N >= 0.
    sweeps: swap proposals per row (`refine`); 0: none.

  Returns:
    (values float32 [N, D] category codes, observed bool [N, D]); a missing
    value has code 0 and observed False.
  """
  weights = np.asarray(weights, np.float64)
  k, d, n = len(weights), len(tables), int(num_rows)
  order = rng.permutation(k)
  per_comp = np.zeros(k, np.int64)
  per_comp[order] = allocate(float(n), weights[order], rng.random())
  comp = np.repeat(np.arange(k), per_comp)                       # [N], sorted
  codes = np.zeros((n, d), np.int64)
  for j, table in enumerate(tables):
    c = table.shape[1]
    counts = allocate(per_comp, table, rng.random(k))              # [K, C]
    in_order = np.repeat(np.tile(np.arange(c), k), counts.ravel())   # component order
    codes[np.argsort(comp + rng.random(n), kind="stable"), j] = in_order   # shuffled within
  if sweeps > 0 and d > 1 and n > 1:
    codes = refine(rng, codes, per_comp, weights, tables, sweeps=sweeps)
  codes = codes[rng.permutation(n)]
  values = np.zeros((n, d), np.float32)
  observed = np.ones((n, d), bool)
  for j, (table, has_missing) in enumerate(zip(tables, missing)):
    col = codes[:, j]
    if has_missing:
      observed[:, j] = col < table.shape[1] - 1
      col = np.where(observed[:, j], col, 0)
    values[:, j] = col
  return values, observed


class _PairTables:
  """Every pair's 2-way table of the model's cells, flattened into one vector."""

  def __init__(self, sizes):
    d = len(sizes)
    self.sizes = np.asarray(sizes, np.int64)
    self.offset = np.zeros((d, d), np.int64)
    total = 0
    for i in range(d):
      for j in range(i + 1, d):
        self.offset[i, j] = total
        total += sizes[i] * sizes[j]
    self.total = total

  def cell(self, i, j, x_i, x_j):
    """Flat index of cell (x_i, x_j) of the table of columns i != j (arrays broadcast)."""
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    x_lo, x_hi = np.where(i < j, x_i, x_j), np.where(i < j, x_j, x_i)
    return self.offset[lo, hi] + x_lo * self.sizes[hi] + x_hi

  def counts(self, codes):
    out = np.zeros(self.total)
    d = codes.shape[1]
    for i in range(d):
      for j in range(i + 1, d):
        np.add.at(out, self.cell(i, j, codes[:, i], codes[:, j]), 1.0)
    return out


def refine(rng, codes, per_comp, weights, tables, *, sweeps: int = SWEEPS):
  """Swaps values within components toward the model's expected 2-way tables.

  A proposal takes a row r, a row s of the same component and a column j,
  and swaps their values of j. It changes, for every other column i, four
  cells of the (i, j) table by -1, +1, -1, +1, so its effect on the loss
  L = sum over all pair tables of (count - N P_model)^2 is
  sum_i (2 sum_q delta_q (count_q - target_q) + 4), computed exactly for
  each proposal. Proposals that lower L are applied, a batch at a time
  (proposals sharing a row are dropped from the batch; proposals touching
  the same cell are scored independently, so L can rise a little within a
  batch, but falls by far overall).

  Args:
    rng: numpy Generator.
    codes: int [N, D] cell codes, rows in component order (component k's
      rows are the per_comp[k] rows after those of components < k).
    per_comp: int [K] rows per component.
    weights, tables: the mixture (`component_tables`).
    sweeps: proposals per row.

  Returns:
    the refined codes (a new array; each component keeps its rows' multiset
    of values in every column).
  """
  codes = np.array(codes, np.int64)
  n, d = codes.shape
  pairs = _PairTables([t.shape[1] for t in tables])
  w = np.asarray(weights, np.float64)
  target = np.zeros(pairs.total)
  for i in range(d):
    for j in range(i + 1, d):
      start = pairs.offset[i, j]
      table = n * np.einsum("k,ka,kb->ab", w, tables[i], tables[j])
      target[start:start + table.size] = table.ravel()
  error = pairs.counts(codes) - target                     # count - target, kept current
  per_comp = np.asarray(per_comp, np.int64)
  first = np.concatenate([[0], np.cumsum(per_comp)[:-1]])
  comp = np.repeat(np.arange(len(per_comp)), per_comp)
  batch = max(min(max(BATCH, n // 64), n // 8), 1)   # few proposals share a row
  others = np.arange(d)
  for _ in range(int(sweeps) * -(-n // batch)):
    r = rng.integers(0, n, batch)
    c = comp[r]
    s = first[c] + np.minimum((rng.random(batch) * per_comp[c]).astype(np.int64), per_comp[c] - 1)
    j = rng.integers(0, d, batch)
    busy = np.bincount(np.concatenate([r, s]), minlength=n) > 1
    keep = (r != s) & (codes[r, j] != codes[s, j]) & ~busy[r] & ~busy[s]
    r, s, j = r[keep], s[keep], j[keep]
    if not len(r):
      continue
    a, b = codes[r, j], codes[s, j]
    gain = np.zeros(len(r))
    touched = []
    for i in others:
      live = (j != i) & (codes[r, i] != codes[s, i])
      u, v = codes[r, i], codes[s, i]
      # where not live, any valid cell (partner column i + 1, its cell 0): masked below
      jj, aa, bb = (np.where(live, j, (i + 1) % d), np.where(live, a, 0),
                    np.where(live, b, 0))
      cells = (pairs.cell(i, jj, u, aa), pairs.cell(i, jj, u, bb),
               pairs.cell(i, jj, v, bb), pairs.cell(i, jj, v, aa))
      change = (2.0 * (-error[cells[0]] + error[cells[1]] - error[cells[2]] + error[cells[3]])
                + 4.0)
      gain += np.where(live, change, 0.0)
      touched.append((live, cells))
    take = gain < 0
    if not take.any():
      continue
    for live, cells in touched:
      m = take & live
      for cell, sign in zip(cells, (-1.0, 1.0, -1.0, 1.0)):
        np.add.at(error, cell[m], sign)
    codes[r[take], j[take]], codes[s[take], j[take]] = b[take], a[take]
  return codes


def sample_balanced(rng: np.random.Generator, features, num_components: int, posterior,
                    num_rows: int):
  """Balanced rows from the mixture at the posterior mean (`posterior.loc`).

  Returns:
    numpy (values float32 [num_rows, D], observed bool [num_rows, D]).
  """
  weights, tables = component_tables(features, num_components, posterior.loc)
  missing = [bool(f.missing) for f in features]
  return balanced_rows(rng, weights, tables, missing, num_rows)
