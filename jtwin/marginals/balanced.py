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
3. the rows are shuffled.

Every row is still marginally a draw from the mixture: each count is
unbiased (E[count] = N pi_k, n_k theta_kjc), only its variance shrinks, to
at most 1/4 per rounding. The mixture is the one at the posterior mean
(loc of the mean-field posterior). Use i.i.d. rows from posterior draws
(`sampling="iid"`) when the rows' sampling variance matters, e.g. for
Rubin's rules over several synthetic sets: those rules assume i.i.d. rows.

All steps are vectorised numpy on the host (counts, `np.repeat`, sorts),
with a loop over columns only.
"""
from __future__ import annotations

import numpy as np

from jtwin.models import families as fam
from jtwin.models.mixture_layout import cat_log_probs, make_layout

__all__ = ["allocate", "balanced_rows", "component_tables", "sample_balanced"]


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
    ValueError: a column is not categorical (Normal or Poisson).
  """
  layout = make_layout(features, num_components)
  if len(layout.cat_idx) != layout.num_features:
    raise ValueError("balanced sampling needs a mixture of categorical columns only")
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


def balanced_rows(rng: np.random.Generator, weights, tables, missing, num_rows: int):
  """Rows of a product mixture with counts rounded systematically (module docstring).

  Args:
    rng: numpy Generator (public randomness).
    weights: [K] component weights.
    tables: per column [K, C_j] cell probabilities (missing state last where
      the column may be missing).
    missing: per column, whether its last cell is the missing state.
    num_rows: N >= 0.

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
  values = np.zeros((n, d), np.float32)
  observed = np.ones((n, d), bool)
  for j, (table, has_missing) in enumerate(zip(tables, missing)):
    c = table.shape[1]
    counts = allocate(per_comp, table, rng.random(k))              # [K, C]
    codes = np.repeat(np.tile(np.arange(c), k), counts.ravel())   # component order
    col = np.empty(n, np.int64)
    col[np.argsort(comp + rng.random(n), kind="stable")] = codes  # shuffled within components
    if has_missing:
      observed[:, j] = col < c - 1
      col = np.where(observed[:, j], col, 0)
    values[:, j] = col
  rows = rng.permutation(n)
  return values[rows], observed[rows]


def sample_balanced(rng: np.random.Generator, features, num_components: int, posterior,
                    num_rows: int):
  """Balanced rows from the mixture at the posterior mean (`posterior.loc`).

  Returns:
    numpy (values float32 [num_rows, D], observed bool [num_rows, D]).
  """
  weights, tables = component_tables(features, num_components, posterior.loc)
  missing = [bool(f.missing) for f in features]
  return balanced_rows(rng, weights, tables, missing, num_rows)
