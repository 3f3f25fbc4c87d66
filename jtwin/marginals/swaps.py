"""Swap refinement: balanced rows herded toward the model's 2- and 3-way tables.

`jtwin.marginals.balanced` gives every component its rounded number of rows
and every column within a component its rounded cell counts, but pairs its
columns' values at random, so the twin's multi-way tables still carry the
Monte Carlo noise of that pairing. This module removes much of it by kernel
herding: a proposal takes a row r, a row s of the same component and a
column j, and swaps their values of j when that lowers

  L = sum over pair tables (model cells) of (count - N P_model)^2
      + triple_weight * sum over triple tables (coarse cells) of (count - N P_model)^2,

P_model(x_a, x_b) = sum_k pi_k theta_ka theta_kb (and the same with three
factors). Each component keeps its rows and each of its columns keeps its
multiset of values, so the twin's 1-way tables and every component's counts
are exactly those of the balanced draw. Triple tables use each column's
coarse view (`jtwin.marginals.cells.CellColumn.group_to_coarse`, the cells
the model's 3-way measurements used): at one cell per value they would be
too sparse to herd.

A swap of column j between rows r and s changes four cells of every table
that contains j and a column where r and s differ, by -1, +1, -1, +1, so
its effect on L is sum over those tables of 2 sum_q delta_q (count_q -
target_q) + 4, computed exactly. A batch of proposals is scored at once
(proposals sharing a row are dropped from the batch, and at most a third of
the batch, the first proposals kept, is scored; proposals touching
the same cell are scored independently, so L can rise a little within a
batch but falls by far overall). The batches run as one jit-compiled
`lax.scan`, with rows and tables padded to size buckets so that runs of
similar size share the compiled program; the randomness is public
(post-processing of the model only).

Measured on Adult at epsilon = 1 (benchmarks/README.md §6, ten seeds, the
same fits): with the triples, 3-way TVD against the test rows went from
0.0592 to 0.0590 (median), lower on every seed, and 2-way stayed at
0.0287; 3-way TVD was lower on every seed of Adult with twinify's model,
the loans-like table and diamonds too.
"""
from __future__ import annotations

import itertools
import math
from functools import partial
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["SWEEPS", "TRIPLE_WEIGHT", "TableLayout", "expected_counts", "pair_layout",
           "pair_strides", "refine", "table_counts", "triple_layout", "triple_strides"]

SWEEPS = 30                  # swap proposals per row
TRIPLE_WEIGHT = 1.0          # weight of the triple tables' squared error in the loss
BATCH = 4096                 # proposals drawn at once (N / 64 for big tables, N / 8 for small)
MAX_TRIPLE_CELLS = 1 << 23   # triple tables herded only when all of them fit (32 MiB)
MAX_TRIPLES = 4096           # ... and when there are at most this many
MAX_BATCH_ENTRIES = 1 << 21  # proposals x column pairs scored at once (memory)
TRIPLE_WORK = 1 << 27        # proposals x column pairs scored with triples in all (time)
MIN_TRIPLE_SWEEPS = 3        # fewer sweeps than this with triples: pairs only
SCORED_SHARE = 3             # a batch scores at most 1/3 of its proposals (those kept)


class TableLayout(NamedTuple):
  """Every table over `order` columns (2 or 3), flattened into one vector.

  Attributes:
    sizes: int [D] cells per column.
    offset: int [D]*order: start of the table of columns i < j (< l);
      entries with repeated or unsorted columns are 0.
    tables: the column tuples (sorted), in the order they are laid out.
    total: cells of all tables.
  """
  sizes: np.ndarray
  offset: np.ndarray
  tables: tuple
  total: int


def _layout(sizes, order: int) -> TableLayout:
  sizes = np.asarray(sizes, np.int64)
  d = len(sizes)
  offset = np.zeros((d,) * order, np.int64)
  tables, total = [], 0
  for cols in itertools.combinations(range(d), order):
    offset[cols] = total
    tables.append(cols)
    total += int(np.prod(sizes[list(cols)]))
  return TableLayout(sizes, offset, tuple(tables), total)


def pair_layout(sizes) -> TableLayout:
  """The layout of every pair table (i < j) of columns with `sizes` cells."""
  return _layout(sizes, 2)


def triple_layout(sizes) -> TableLayout:
  """The layout of every triple table (i < j < l) of columns with `sizes` cells."""
  return _layout(sizes, 3)


def pair_strides(layout: TableLayout):
  """Where cell (x_i, x_j) of the pair table of columns i != j lies, as strides.

  Returns:
    (base, stride_i, stride_j), int64 [D, D] each, indexed [j, i]: the cell
    is base + x_i stride_i + x_j stride_j; zeros where i == j.
  """
  d = len(layout.sizes)
  base, s_i, s_j = (np.zeros((d, d), np.int64) for _ in range(3))
  for j in range(d):
    for i in range(d):
      if i == j:
        continue
      lo, hi = min(i, j), max(i, j)
      base[j, i] = layout.offset[lo, hi]
      s_i[j, i], s_j[j, i] = (layout.sizes[hi], 1) if i < j else (1, layout.sizes[hi])
  return base, s_i, s_j


def triple_strides(layout: TableLayout):
  """Where cell (x_i, x_l, x_j) of the triple table of columns i < l and j lies.

  Returns:
    (base, stride_i, stride_l, stride_j), int64 [D, P] each, indexed [j, pair]
    with the pairs (i, l) in `np.triu_indices(D, 1)` order: the cell is
    base + x_i stride_i + x_l stride_l + x_j stride_j; zeros where j is i or l.
  """
  d = len(layout.sizes)
  ii, ll = np.triu_indices(d, 1)
  out = [np.zeros((d, len(ii)), np.int64) for _ in range(4)]
  for j in range(d):
    for m, (i, l) in enumerate(zip(ii, ll)):
      if j in (i, l):
        continue
      cols = tuple(sorted((int(i), int(l), j)))
      sizes = layout.sizes[list(cols)]
      stride = dict(zip(cols, (sizes[1] * sizes[2], sizes[2], 1)))
      out[0][j, m] = layout.offset[cols]
      out[1][j, m], out[2][j, m], out[3][j, m] = stride[i], stride[l], stride[j]
  return tuple(out)


def table_counts(layout: TableLayout, codes) -> np.ndarray:
  """Counts of every table of `layout` in int `codes` [N, D] (float64 [total])."""
  codes = np.asarray(codes, np.int64)
  out = np.zeros(layout.total)
  prefix, flat = None, None
  for cols in layout.tables:        # sorted: tables sharing leading columns are consecutive
    if cols[:-1] != prefix:         # the leading columns' joint index, once per prefix
      prefix, flat = cols[:-1], np.zeros(len(codes), np.int64)
      for c in prefix:
        flat = flat * layout.sizes[c] + codes[:, c]
    last = int(layout.sizes[cols[-1]])
    size = int(np.prod(layout.sizes[list(cols)]))
    start = int(layout.offset[cols])
    out[start:start + size] = np.bincount(flat * last + codes[:, cols[-1]], minlength=size)
  return out


def expected_counts(layout: TableLayout, num_rows: int, weights, tables) -> np.ndarray:
  """N * sum_k pi_k prod_c theta_kc for every table of `layout` (float64 [total]).

  Args:
    layout: from `pair_layout` or `triple_layout` over the tables' cells.
    num_rows: N.
    weights: [K] component weights.
    tables: per column [K, C_c] cell probabilities.
  """
  w = np.asarray(weights, np.float64)
  out = np.zeros(layout.total)
  letters = "abc"
  for cols in layout.tables:
    spec = "k," + ",".join(f"k{letters[m]}" for m in range(len(cols)))
    table = np.einsum(spec + "->" + letters[:len(cols)], w, *[tables[c] for c in cols])
    start = int(layout.offset[cols])
    out[start:start + table.size] = num_rows * table.ravel()
  return out


class _Plan(NamedTuple):
  pairs: TableLayout
  triples: Optional[TableLayout]
  coarse: tuple


def _plan(tables, coarse, triple_weight: float) -> _Plan:
  """The layouts to herd: pairs always, triples when asked for and small enough."""
  sizes = [t.shape[1] for t in tables]
  pairs = pair_layout(sizes)
  if coarse is None or triple_weight <= 0 or len(tables) < 3:
    return _Plan(pairs, None, ())
  coarse = tuple(np.asarray(m, np.int64) for m in coarse)
  if len(coarse) != len(tables) or any(len(m) != s for m, s in zip(coarse, sizes)):
    raise ValueError("coarse: one map per column, with one entry per cell of its table")
  if math.comb(len(tables), 3) > MAX_TRIPLES:
    return _Plan(pairs, None, ())
  triples = triple_layout([int(m.max()) + 1 for m in coarse])
  if triples.total > MAX_TRIPLE_CELLS:
    return _Plan(pairs, None, ())
  return _Plan(pairs, triples, coarse)


def _coarse_tables(tables, coarse):
  """Per column [K, coarse cells]: the cells' probabilities summed within coarse cells."""
  out = []
  for t, m in zip(tables, coarse):
    c = np.zeros((t.shape[0], int(m.max()) + 1))
    np.add.at(c.T, m, np.asarray(t, np.float64).T)
    out.append(c)
  return out


def refine(rng: np.random.Generator, codes, per_comp, weights, tables, *,
           sweeps: int = SWEEPS, coarse: Optional[Sequence] = None,
           triple_weight: float = TRIPLE_WEIGHT) -> np.ndarray:
  """Swaps values within components toward the model's expected 2- and 3-way tables.

  Args:
    rng: numpy Generator (public randomness).
    codes: int [N, D] cell codes, rows in component order (component k's
      rows are the per_comp[k] rows after those of components < k).
    per_comp: int [K] rows per component.
    weights: [K] component weights.
    tables: per column [K, C_j] cell probabilities (`balanced.component_tables`).
    sweeps: proposals per row; 0 returns the codes unchanged (as do pair
      tables with 2^31 cells or more, which int32 cannot index).
    coarse: optional per column int [C_j], the coarse cell of each cell;
      with it (and at least 3 columns, at most `MAX_TRIPLES` triples of at
      most `MAX_TRIPLE_CELLS` coarse cells in all) the triple tables join
      the loss for the first min(sweeps, TRIPLE_WORK / (N * D (D - 1) / 2))
      sweeps, and the rest herd the pair tables only; when that is fewer
      than `MIN_TRIPLE_SWEEPS` (Adult's 14 modelled columns: more than
      about 490,000 rows, whose counts carry relatively less Monte Carlo
      noise), none do. That bounds the triples' time (all 30 sweeps take
      about 1 s for Adult's 32,561 rows on 2 CPU cores, once compiled).
    triple_weight: their weight in the loss; 0: pairs only.

  Returns:
    the refined codes (int64 [N, D], a new array; each component keeps its
    rows' multiset of values in every column).
  """
  codes = np.array(codes, np.int64)
  n, d = codes.shape
  if sweeps <= 0 or d < 2 or n < 2:
    return codes
  plan = _plan(tables, coarse, triple_weight)
  pairs = plan.pairs
  if _bucket(pairs.total) >= np.iinfo(np.int32).max:   # padded, as the scan indexes it
    return codes
  target2 = expected_counts(pairs, n, weights, tables)
  per_comp = np.asarray(per_comp, np.int64)
  first = np.concatenate([[0], np.cumsum(per_comp)[:-1]])
  # rows and tables padded to size buckets (never proposed, never indexed), so that
  # runs whose DP row count or cells differ a little reuse the compiled scan
  n_pad = _bucket(n)
  comp = _pad(np.repeat(np.arange(len(per_comp)), per_comp), n_pad)
  batch = max(min(max(BATCH, n_pad // 64), n_pad // 8), 1)   # few proposals share a row
  key = jax.random.key(int(rng.integers(0, 2**62)))
  consts = (jnp.int32(n), jnp.asarray(comp, jnp.int32), jnp.asarray(first, jnp.int32),
            jnp.asarray(per_comp, jnp.int32),
            tuple(jnp.asarray(a, jnp.int32) for a in pair_strides(pairs)))
  err2 = lambda c: _pad(table_counts(pairs, c) - target2, _bucket(pairs.total), np.float32)
  sweeps = int(sweeps)
  triple_sweeps = 0
  if plan.triples is not None:
    num_pairs = math.comb(d, 2)
    triple_sweeps = min(sweeps, TRIPLE_WORK // (n_pad * num_pairs))
  if plan.triples is not None and triple_sweeps >= MIN_TRIPLE_SWEEPS:
    cc = np.stack([plan.coarse[c][codes[:, c]] for c in range(d)], 1)
    err3 = (table_counts(plan.triples, cc) -
            expected_counts(plan.triples, n, weights, _coarse_tables(tables, plan.coarse)))
    small = max(min(batch, MAX_BATCH_ENTRIES // num_pairs), 1)
    key, k3 = jax.random.split(key)
    codes = np.asarray(_herd(
        k3, jnp.asarray(_pad(codes, n_pad), jnp.int32), jnp.asarray(_pad(cc, n_pad), jnp.int32),
        jnp.asarray(err2(codes)), jnp.asarray(_pad(err3, _bucket(plan.triples.total), np.float32)),
        *consts, tuple(jnp.asarray(a, jnp.int32) for a in triple_strides(plan.triples)),
        jnp.float32(triple_weight), steps=triple_sweeps * -(-n_pad // small), batch=small,
        triples=True), np.int64)[:n]
    sweeps -= triple_sweeps
  if sweeps > 0:
    none = (jnp.zeros((1, 1), jnp.int32),) * 4
    codes = np.asarray(_herd(
        key, jnp.asarray(_pad(codes, n_pad), jnp.int32), jnp.zeros((n_pad, 0), jnp.int32),
        jnp.asarray(err2(codes)), jnp.zeros(0, jnp.float32), *consts, none, jnp.float32(0.0),
        steps=sweeps * -(-n_pad // batch), batch=batch, triples=False), np.int64)[:n]
  return codes


def _bucket(size: int) -> int:
  """The smallest 2^(k/4), rounded up to an integer, that is at least `size` (>= 1)."""
  return max(int(math.ceil(2.0 ** (math.ceil(4.0 * math.log2(max(size, 1)) - 1e-9) / 4.0))), 1)


def _pad(x, length: int, dtype=None) -> np.ndarray:
  """`x` with zeros appended along its first axis up to `length`."""
  x = np.asarray(x, dtype)
  return np.concatenate([x, np.zeros((length - len(x),) + x.shape[1:], x.dtype)])


@partial(jax.jit, static_argnames=("steps", "batch", "triples"))
def _herd(key, codes, cc, err2, err3, n, comp, first, per_comp, p_strides, t_strides,
          triple_weight, *, steps: int, batch: int, triples: bool):
  """`refine`'s batches of proposals as one scan (see the module docstring).

  codes, cc and comp have `n_pad` >= n rows; only the first n are real.
  """
  n_pad, d = codes.shape
  cols = jnp.arange(d)
  if triples:
    ii, ll = np.triu_indices(d, 1)
    ii, ll = jnp.asarray(ii), jnp.asarray(ll)
  scored = max(batch // SCORED_SHARE, 1)
  rows = jnp.arange(scored)
  signs = (-1.0, 1.0, -1.0, 1.0)

  def gain_of(err, live, base_r, base_s, x_a, x_b):
    # the swap moves row r from cell (.., a) to (.., b) and row s from (.., b) to (.., a)
    cells = (base_r + x_a, base_r + x_b, base_s + x_b, base_s + x_a)
    e = [jnp.take(err, q, mode="clip") for q in cells]
    return jnp.sum(jnp.where(live, 2.0 * (-e[0] + e[1] - e[2] + e[3]) + 4.0, 0.0), axis=1), cells

  def step(state, i):
    codes, cc, err2, err3 = state
    k_r, k_s, k_j = jax.random.split(jax.random.fold_in(key, i), 3)
    r = jax.random.randint(k_r, (batch,), 0, n)
    c = comp[r]
    s = first[c] + jnp.minimum((jax.random.uniform(k_s, (batch,)) * per_comp[c]).astype(jnp.int32),
                               per_comp[c] - 1)
    j = jax.random.randint(k_j, (batch,), 0, d)
    uses = jnp.zeros(n_pad, jnp.int32).at[r].add(1).at[s].add(1)
    keep = (r != s) & (codes[r, j] != codes[s, j]) & (uses[r] == 1) & (uses[s] == 1)
    # only about a quarter of the proposals survive: score the first `scored` of them
    keep = keep & (jnp.cumsum(keep) <= scored)
    live = jnp.nonzero(keep, size=scored, fill_value=0)[0]
    keep, r, s, j = jnp.arange(scored) < jnp.sum(keep), r[live], s[live], j[live]
    code_r, code_s = codes[r], codes[s]                               # [S, D]
    a, b = code_r[rows, j], code_s[rows, j]
    # pair tables (i, j) for every other column i where the rows differ
    base, s_i, s_j = (x[j] for x in p_strides)                       # [S, D]
    live2 = keep[:, None] & (cols[None, :] != j[:, None]) & (code_r != code_s)
    gain, cells2 = gain_of(err2, live2, base + code_r * s_i, base + code_s * s_i,
                           a[:, None] * s_j, b[:, None] * s_j)
    if triples:
      c_r, c_s = cc[r], cc[s]
      ca, cb = c_r[rows, j], c_s[rows, j]
      base, s_i, s_l, s_j = (x[j] for x in t_strides)               # [S, P]
      xi_r, xl_r, xi_s, xl_s = c_r[:, ii], c_r[:, ll], c_s[:, ii], c_s[:, ll]
      live3 = ((keep & (ca != cb))[:, None] & (ii[None, :] != j[:, None]) &
               (ll[None, :] != j[:, None]) & ((xi_r != xi_s) | (xl_r != xl_s)))
      gain3, cells3 = gain_of(err3, live3, base + xi_r * s_i + xl_r * s_l,
                              base + xi_s * s_i + xl_s * s_l, ca[:, None] * s_j,
                              cb[:, None] * s_j)
      gain = gain + triple_weight * gain3
    take = keep & (gain < 0)
    for q, sign in zip(cells2, signs):
      err2 = err2.at[jnp.where(take[:, None] & live2, q, err2.shape[0])].add(sign, mode="drop")
    if triples:
      for q, sign in zip(cells3, signs):
        err3 = err3.at[jnp.where(take[:, None] & live3, q, err3.shape[0])].add(sign, mode="drop")
      cc = cc.at[jnp.where(take, r, n_pad), j].set(cb, mode="drop")
      cc = cc.at[jnp.where(take, s, n_pad), j].set(ca, mode="drop")
    codes = codes.at[jnp.where(take, r, n_pad), j].set(b, mode="drop")
    codes = codes.at[jnp.where(take, s, n_pad), j].set(a, mode="drop")
    return (codes, cc, err2, err3), None

  (codes, _, _, _), _ = jax.lax.scan(step, (codes, cc, err2, err3), jnp.arange(steps))
  return codes
