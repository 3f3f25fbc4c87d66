"""Centred ("residual") marginal tables: measuring only what lower orders miss.

A 2-way table T[x, y] holds its 1-way margins as well as the interaction of
x and y; measuring every pair table therefore re-measures each column's
1-way margin once per partner. The centred table

  R T = T - (row means) - (column means) + (grand mean),

i.e. R = (I - J/a) (x) (I - J/b) for an a x b table (J: all ones), keeps only
the interaction. One row moves one cell of T by 1, so it moves R T by the
column R e_cell, whose squared L2 norm is prod_i (1 - 1/a_i): the centred
table has L2 sensitivity s = sqrt(prod_i (1 - 1/a_i)) < 1, and releasing
R (T + N(0, sigma^2 I)) is s^2 / (2 sigma^2)-zCDP (the Gaussian mechanism
on R T, followed by the projection R, which is post-processing). For the
same rho the noise sd is s times that of the plain table: sqrt(1/2) for a
table with one binary column, 1/2 with two. This is the idea of McKenna et
al.'s ResidualPlanner (2023): the lower-order parts are measured once, by
the 1-way tables, not again inside every pair.

Centring may cover only some axes of a table: R = (x)_{i in axes} (I - J/a_i),
identity elsewhere; then s^2 = prod over those axes only.

The fit's likelihood of a centred measurement z = R (T + e) is
-||R (n P_theta) - z||^2 / (2 sigma^2) (z lies in R's range, where the noise
is isotropic). Since z = R z, that is ||x - z||^2 - x' (I - R) x, x = n P_theta
the model's (plain) table, and x' (I - R) x is a signed sum of squared lower-order
margins of x (`lower_order_terms`), which the mixture's marginal vector
already holds: the fit needs only gathers, no per-table reshaping.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

__all__ = ["centre", "lower_order_terms", "sensitivity"]


def centre(values: np.ndarray, shape: Sequence[int], axes: Sequence[int]) -> np.ndarray:
  """R applied to a flattened table: the mean over each centred axis removed.

  Args:
    values: [prod(shape)] or [..., prod(shape)] table(s) in C order.
    shape: the table's shape.
    axes: the axes (0-based, within the table) that are centred.

  Returns:
    R values, the same shape as `values`.
  """
  values = np.asarray(values, dtype=np.float64)
  lead = values.shape[:-1]
  t = values.reshape(lead + tuple(shape))
  for a in sorted(set(int(a) for a in axes)):
    ax = len(lead) + a
    t = t - t.mean(axis=ax, keepdims=True)
  return t.reshape(values.shape)


def sensitivity(shape: Sequence[int], axes: Sequence[int]) -> float:
  """L2 sensitivity of R T under add/remove one row: sqrt(prod (1 - 1/a_i))."""
  return math.sqrt(float(np.prod([1.0 - 1.0 / shape[a] for a in set(int(a) for a in axes)])))


def lower_order_terms(shape: Sequence[int], axes: Sequence[int]):
  """x' (I - R) x as signed sums of squared lower-order margins of x.

  With M_S the mean over the axes in S, I - R = I - prod_{a in axes} (I - M_a)
  = sum over non-empty S of (-1)^(|S| + 1) M_S, and x' M_S x = ||M_S x||^2 =
  sum over the margin's cells (sum of x over S)^2 / prod_{a in S} shape[a].
  Yields, per non-empty subset S of `axes` that leaves at least one axis:
  (sign / prod_{a in S} shape[a], the kept axes (tuple, increasing)). The
  subset of all axes, when `axes` covers the whole table, gives the squared
  grand total, a constant once the row count is fixed, and is left out.
  """
  axes = tuple(sorted(set(int(a) for a in axes)))
  ndim = len(shape)
  for r in range(1, len(axes) + 1):
    for subset in itertools.combinations(axes, r):
      kept = tuple(a for a in range(ndim) if a not in subset)
      if kept:
        yield (-1.0) ** (r + 1) / float(np.prod([shape[a] for a in subset])), kept
