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
   twin's 2-way tables (every pair of columns, the model's cells) and 3-way
   tables (every triple, the columns' coarse views) closer to the model's
   expected ones, N sum_k pi_k theta_ki theta_kj' and the same with three
   factors (`jtwin.marginals.swaps.refine`, `SWEEPS` random proposals per
   row; kernel herding on the model's tables, a post-processing of the
   model only);
4. the rows are shuffled.

Steps 1-2 keep every count unbiased (E[count] = N pi_k, n_k theta_kjc)
and shrink its variance to at most 1/4 per rounding; swaps keep each
component's rows and each component's 1-way counts exactly and pull the
pair and triple counts toward their expectations. On Adult at epsilon = 1
the pair swaps took the median of ten seeds from 0.0295 to 0.0290 in
2-way TVD and from 0.0603 to 0.0595 in 3-way, lower on every seed; the
triples' effect is in benchmarks/README.md section 6. The mixture is the one at the posterior mean
(loc of the mean-field posterior). Use i.i.d. rows from posterior draws
(`sampling="iid"`) when the rows' sampling variance matters, e.g. for
Rubin's rules over several synthetic sets: those rules assume i.i.d. rows.

Steps 1, 2 and 4 are vectorised numpy on the host (counts, `np.repeat`,
sorts, with a loop over columns only); the swaps run as one jit-compiled
scan (`jtwin.marginals.swaps`).
"""
from __future__ import annotations

import numpy as np

from jtwin.marginals.swaps import SWEEPS, refine
from jtwin.models import families as fam
from jtwin.models.mixture_layout import cat_log_probs, make_layout

__all__ = ["allocate", "balanced_rows", "component_tables", "refine", "sample_balanced"]


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
                  sweeps: int = SWEEPS, coarse=None):
  """Rows of a product mixture with counts rounded systematically (module docstring).

  Args:
    rng: numpy Generator (public randomness).
    weights: [K] component weights.
    tables: per column [K, C_j] cell probabilities (missing state last where
      the column may be missing).
    missing: per column, whether its last cell is the missing state.
    num_rows: N >= 0.
    sweeps: swap proposals per row (`refine`); 0: none.
    coarse: optional per column int [C_j], each cell's coarse cell: the
      swaps then herd the triple tables over these views as well.

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
    codes = refine(rng, codes, per_comp, weights, tables, sweeps=sweeps, coarse=coarse)
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


def sample_balanced(rng: np.random.Generator, features, num_components: int, posterior,
                    num_rows: int, coarse=None):
  """Balanced rows from the mixture at the posterior mean (`posterior.loc`).

  `coarse`: optional per column coarse-cell maps (`cells.coarse_maps`), for
  the swaps' triple tables.

  Returns:
    numpy (values float32 [num_rows, D], observed bool [num_rows, D]).
  """
  weights, tables = component_tables(features, num_components, posterior.loc)
  missing = [bool(f.missing) for f in features]
  return balanced_rows(rng, weights, tables, missing, num_rows, coarse=coarse)
