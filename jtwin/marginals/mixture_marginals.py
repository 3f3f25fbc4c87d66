"""Closed-form marginals of a mixture of per-column categoricals.

The marginal method's model is jtwin's automatic mixture with every column a
categorical over its cells (`jtwin.marginals.cells`), the missing state being
one more cell. Component k gives cell i of column a the probability
Theta[k, (a, i)] (Theta [K, C] over all C cells of all columns; each column's
cells sum to one), and the mixture weights are pi [K]. Its marginals are

  P(x_a = i)                   = sum_k pi_k Theta[k, ai]            = u[ai]
  P(x_a = i, x_b = j)          = sum_k pi_k Theta[k, ai] Theta[k, bj] = G[ai, bj]
  P(x_a = i, x_b = j, x_c = l) = (Theta^T diag(pi * Theta[:, cl]) Theta)[ai, bj]

so every 1- and 2-way marginal is a block of u = pi^T Theta and of the Gram
matrix G = Theta^T diag(pi) Theta (one matrix product), and 3-way marginals
whose third column is a *conditioning* column (the target, or one named in a
query file) are blocks of one more Gram matrix per conditioning cell. All are
stacked into one *marginal vector*, and a measured table is a gather from it:
vectorised over cliques, with static shapes.

Parameters are exactly those of `jtwin.models.make_mixture_model` over the
cell features ("mix", "cat_logits" and, with missing cells, "missing_logit"),
so the fitted posterior is sampled by jtwin's own sampler.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jtwin.models import families as fam
from jtwin.models import mixture
from jtwin.models.interface import Feature

Array = jax.Array

__all__ = ["MarginalIndex", "cell_features", "clique_positions", "log_cell_table",
           "log_prior", "make_index", "marginal_vector", "roughness", "views"]


class MarginalIndex(NamedTuple):
  """Static (public) maps from cells to positions in Theta and the marginal vector.

  A *view* is a column seen at some resolution: views 0..D-1 are the columns'
  cells, and views D, D+1, ... the coarse views of the columns that have one
  (`jtwin.marginals.cells.coarsen`). Cliques are tuples of view ids; Theta is
  extended by the coarse cells (sums of fine cells).
  """
  layout: mixture.MixtureLayout
  sizes: np.ndarray          # [V] cells per view, the missing cell included
  cell_pos: tuple            # per view: int array [sizes[v]] of extended-Theta positions
  num_theta: int             # C_ext = flat categories + missing cells + coarse cells
  flat_missing: np.ndarray   # [Ct] index into missing_idx of each flat category, -1 if none
  cond_cols: tuple           # conditioning views (third member of a 3-way table)
  cond_pos: np.ndarray       # [L] extended-Theta positions of the conditioning cells
  cond_start: dict           # view -> offset of its first cell in cond_pos
  coarse: np.ndarray         # [C, C_coarse] 0/1: fine cell -> coarse cell
  view_column: tuple         # the column of each view
  multiway_view: tuple       # per column: the view used in multi-way tables
  adjacent: np.ndarray = np.zeros((0, 3), np.int64)   # [P, 3] runs of 3 neighbouring cells


def cell_features(cells) -> tuple:
  """The mixture features of cell columns: categorical over the observed cells."""
  return tuple(Feature(c.name, "categorical", c.num_cells, c.missing) for c in cells)


def views(cells, extra: Sequence[tuple] = ()) -> tuple:
  """The views of these cell columns (see `MarginalIndex`), without a model.

  Args:
    cells: the cell columns.
    extra: more views, (column, runs) each, runs a tuple of tuples of the
      column's cells (the missing cell, if any, is one more view cell);
      they come after the coarse views, in this order.

  Returns:
    (view_column, sizes, multiway_view): the column of every view, its
    number of cells, and per column the view its multi-way tables use.
  """
  columns, sizes, multiway = list(range(len(cells))), [c.size for c in cells], []
  for j, c in enumerate(cells):
    if c.coarse is None:
      multiway.append(j)
    else:
      multiway.append(len(columns))
      columns.append(j)
      sizes.append(c.coarse_size)
  for j, runs in extra:
    columns.append(int(j))
    sizes.append(len(runs) + int(cells[j].missing))
  return tuple(columns), tuple(int(s) for s in sizes), tuple(multiway)


def make_index(cells, num_components: int, cond_cols: Sequence[int] = (),
               extra: Sequence[tuple] = ()) -> MarginalIndex:
  """Builds the static index for these cell columns, conditioning views and
  `extra` views (see `views`)."""
  layout = mixture.make_layout(cell_features(cells), num_components)
  ct = len(layout.flat_feature)
  miss_of = {int(col): i for i, col in enumerate(layout.missing_idx)}
  cell_pos = []
  for j, c in enumerate(cells):
    pos = list(layout.pad_index[j, :c.num_cells])
    if c.missing:
      pos.append(ct + miss_of[j])
    cell_pos.append(np.asarray(pos, np.int64))
  c_fine = ct + len(layout.missing_idx)
  columns, sizes, multiway, blocks = list(range(len(cells))), [c.size for c in cells], [], []
  offset = c_fine
  for j, c in enumerate(cells):
    if c.coarse is None:
      multiway.append(j)
      continue
    multiway.append(len(columns))
    block = np.zeros((c_fine, len(c.coarse)))
    for i, members in enumerate(c.coarse):
      block[cell_pos[j][list(members)], i] = 1.0
    blocks.append(block)
    pos = list(range(offset, offset + len(c.coarse))) + ([cell_pos[j][-1]] if c.missing else [])
    cell_pos.append(np.asarray(pos, np.int64))
    columns.append(j)
    sizes.append(c.coarse_size)
    offset += len(c.coarse)
  for j, runs in extra:
    c = cells[j]
    block = np.zeros((c_fine, len(runs)))
    for i, members in enumerate(runs):
      block[cell_pos[j][list(members)], i] = 1.0
    blocks.append(block)
    pos = list(range(offset, offset + len(runs))) + ([cell_pos[j][-1]] if c.missing else [])
    cell_pos.append(np.asarray(pos, np.int64))
    columns.append(int(j))
    sizes.append(len(runs) + int(c.missing))
    offset += len(runs)
  coarse = np.concatenate(blocks, 1) if blocks else np.zeros((c_fine, 0))
  flat_missing = np.asarray([miss_of.get(int(layout.cat_idx[f]), -1)
                             for f in layout.flat_feature], np.int64)
  cond_cols = tuple(sorted(set(int(c) for c in cond_cols)))
  cond_start, pos = {}, []
  for c in cond_cols:
    cond_start[c] = len(pos)
    pos.extend(cell_pos[c])
  # the smoothness prior's neighbours: numeric columns that multi-way tables see coarsely
  adjacent = [np.stack([cell_pos[j][:c.num_cells - 2], cell_pos[j][1:c.num_cells - 1],
                        cell_pos[j][2:c.num_cells]], 1)
              for j, c in enumerate(cells)
              if c.kind == "numeric" and c.num_cells > 2 and c.coarse is not None]
  adjacent = np.concatenate(adjacent) if adjacent else np.zeros((0, 3), np.int64)
  return MarginalIndex(layout, np.asarray(sizes, np.int64), tuple(cell_pos), offset,
                       flat_missing, cond_cols, np.asarray(pos, np.int64), cond_start,
                       coarse.astype(np.float32), tuple(columns), tuple(multiway),
                       adjacent.astype(np.int64))


def log_cell_table(index: MarginalIndex, theta: dict) -> Array:
  """log Theta [K, C]: each component's log-probability of every cell."""
  layout = index.layout
  logp = mixture.cat_log_probs(layout, theta["cat_logits"])          # [K, Ct]
  if "missing_logit" not in theta:
    return logp
  z = theta["missing_logit"]                                         # [K, Dm]
  has = index.flat_missing >= 0
  log_obs = jax.nn.log_sigmoid(-z)[:, np.maximum(index.flat_missing, 0)]
  logp = logp + jnp.where(has, log_obs, 0.0)
  return jnp.concatenate([logp, jax.nn.log_sigmoid(z)], axis=-1)


def marginal_vector(index: MarginalIndex, theta: dict) -> Array:
  """[C + C^2 (1 + L)]: u, then G, then one Gram matrix per conditioning cell."""
  pi = jnp.exp(fam.categorical_log_probs(theta["mix"]))              # [K]
  table = jnp.exp(log_cell_table(index, theta))                      # [K, C]
  if index.coarse.shape[1]:
    table = jnp.concatenate([table, table @ index.coarse], axis=-1)  # [K, C_ext]
  weighted = table * pi[:, None]
  parts = [pi @ table, (weighted.T @ table).ravel()]
  if len(index.cond_pos):
    cond = table[:, index.cond_pos]                                  # [K, L]
    parts.append(jnp.einsum("kc,kl,kd->lcd", weighted, cond, table).ravel())
  return jnp.concatenate(parts)


def log_prior(index: MarginalIndex, theta: dict, concentration: float) -> Array:
  """A Dirichlet(concentration)-type prior on each component's cells and on pi.

  In the unconstrained (ALR / logit) coordinates, the Dirichlet(alpha)
  density of a probability vector, with the Jacobian, is alpha * sum log p
  (+ const): proper for every alpha > 0. Here alpha = `concentration` for
  every column's cells (the missing cell included) and for the weights.
  """
  log_pi = fam.categorical_log_probs(theta["mix"])
  return concentration * (jnp.sum(log_cell_table(index, theta)) + jnp.sum(log_pi))


def roughness(index: MarginalIndex, theta: dict) -> Array:
  """How unevenly P(component | value) varies between neighbouring numeric cells.

  With r[k, i] = log Theta[k, i] - log u[i] (a component's share of cell i
  relative to the mixture; the cells' widths and any spike in the marginal
  cancel), the roughness is the pi-weighted sum of squared second
  differences, sum_k pi_k sum_i (r[k, i+1] - 2 r[k, i] + r[k, i-1])^2, over
  the observed cells of every numeric column that has a coarse view
  (`index.adjacent`). Multi-way tables see those columns only through their
  coarse views, so within a coarse cell nothing but this prior shapes how
  the components share the fine cells.
  """
  if not len(index.adjacent):
    return jnp.float32(0.0)
  log_pi = fam.categorical_log_probs(theta["mix"])
  table = log_cell_table(index, theta)                               # [K, C]
  rel = table - jax.nn.logsumexp(table + log_pi[:, None], axis=0)
  a, b, c = (rel[:, index.adjacent[:, i]] for i in range(3))
  step = c - 2.0 * b + a
  return jnp.sum(jnp.exp(log_pi)[:, None] * step * step)


def clique_positions(index: MarginalIndex, clique: Sequence[int]) -> np.ndarray:
  """Positions in the marginal vector of a clique's cells, in C order.

  Raises:
    ValueError: a 3-way clique without a conditioning column, or a clique of
      more than 3 columns.
  """
  clique = tuple(int(c) for c in clique)
  if list(clique) != sorted(set(clique)):
    raise ValueError(f"clique {clique} must be increasing column indices")
  c_total = index.num_theta
  grids = np.meshgrid(*[index.cell_pos[a] for a in clique], indexing="ij")
  if len(clique) == 1:
    return grids[0].ravel()
  if len(clique) == 2:
    return c_total + grids[0].ravel() * c_total + grids[1].ravel()
  if len(clique) == 3:
    conds = [i for i, a in enumerate(clique) if a in index.cond_start]
    if not conds:
      raise ValueError(f"3-way clique {clique} has no conditioning column")
    k = conds[0]
    a, b = [i for i in range(3) if i != k]
    cell = np.meshgrid(*[np.arange(index.sizes[c]) for c in clique], indexing="ij")[k].ravel()
    offset = index.cond_start[clique[k]] + cell
    return (c_total + c_total**2 + offset * c_total**2
            + grids[a].ravel() * c_total + grids[b].ravel())
  raise ValueError(f"clique {clique}: at most 3 columns are supported")
