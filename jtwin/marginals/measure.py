"""Marginal tables of cell-coded data, and their Gaussian measurement.

A *clique* is a tuple of column indices in increasing order; its marginal
table has one count per combination of the columns' cells (the missing cell
included), flattened in C order. Under add/remove-one-row every row adds one
count to exactly one cell of each table, so one table has L2 sensitivity 1,
and the Gaussian mechanism with noise sd sigma is 1/(2 sigma^2)-zCDP.

Counting is one `np.bincount` per table over the rows: linear in the rows,
no model involved.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Measurement", "clique_counts", "gaussian_measure", "table_size"]


class Measurement(NamedTuple):
  """One noisy marginal table (all public once made).

  Attributes:
    clique: the column indices.
    noisy: float64 [cells] noisy counts, in C order over the clique's cells.
    variance: float64 [cells] noise variance of each count.
  """
  clique: tuple
  noisy: np.ndarray
  variance: np.ndarray


def table_size(sizes, clique) -> int:
  """Number of cells of the clique's table."""
  return int(np.prod([sizes[c] for c in clique], dtype=np.int64))


def clique_counts(codes: np.ndarray, sizes, clique) -> np.ndarray:
  """Exact counts of a clique's table: float64 [cells] (PRIVATE)."""
  dims = tuple(int(sizes[c]) for c in clique)
  flat = np.ravel_multi_index(tuple(codes[:, c] for c in clique), dims)
  return np.bincount(flat, minlength=int(np.prod(dims))).astype(np.float64)


def gaussian_measure(counts: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
  """counts + N(0, sigma^2) per cell, float64 (numpy's normal has full tails)."""
  return counts + sigma * rng.standard_normal(counts.shape)
