"""Marginal tables of cell-coded data, and their Gaussian measurement.

A *clique* is a tuple of column indices in increasing order; its marginal
table has one count per combination of the columns' cells (the missing cell
included), flattened in C order. Under add/remove-one-row every row adds one
count to exactly one cell of each table, so one table has L2 sensitivity 1,
and the Gaussian mechanism with noise sd sigma is 1/(2 sigma^2)-zCDP.

Counting is linear in the rows, with no model involved: `clique_counts` is
one `np.bincount` per table over the rows; `make_counter` counts every table
asked for at once in one blocked pass over the rows on the host
(`jtwin.marginals.counting`) or with the rows sharded over devices
(`jtwin.marginals.counting_sharded`); both give the same exact counts, and the
noise is added afterwards, once, on the host (`gaussian_measure`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

__all__ = ["Measurement", "clique_counts", "gaussian_measure", "make_counter", "table_size"]


class Measurement(NamedTuple):
  """One noisy marginal table (all public once made).

  Attributes:
    clique: the column indices.
    noisy: float64 [cells] noisy counts, in C order over the clique's cells.
    variance: float64 [cells] noise variance of each count.
    centred: the axes of the table that were centred before it was released
      (`jtwin.marginals.residual`): `noisy` is then R (T + noise), and
      `variance` the noise variance within R's range. () for a plain table.
    shape: the table's shape (needed when `centred` is not empty).
  """
  clique: tuple
  noisy: np.ndarray
  variance: np.ndarray
  centred: tuple = ()
  shape: tuple = ()


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


def make_counter(devices: int = 1, block_rows: Optional[int] = None) -> Callable:
  """`count(codes, sizes, cliques)`: exact tables, memoised for the latest codes.

  Every clique not counted yet for this `codes` array (the same object) and
  `sizes` is counted in one pass over the rows; asking for many cliques at
  once (a whole workload) is what makes that pass pay off.

  Args:
    devices: 1: host counting in row blocks (`counting.count_tables`);
      D > 1: rows sharded over D local devices, one psum
      (`counting_sharded.count_tables_sharded`; the counts are identical).
    block_rows: rows per block (per device), default chosen by the counter.

  Returns:
    count(codes int [N, F], sizes, cliques) -> list of float64 [cells]
    tables (PRIVATE), equal to `clique_counts` per clique.

  Raises:
    JtwinInputError: devices is not a positive integer, or more devices
      than JAX sees.
  """
  from jtwin.marginals.counting import count_tables
  if not isinstance(devices, (int, np.integer)) or devices < 1:
    from jtwin.errors import JtwinInputError
    raise JtwinInputError(f"devices must be a positive integer, got {devices!r}")
  memo = {"codes": None, "sizes": None, "tables": {}}
  mesh = None
  if devices > 1:
    from jtwin.parallel import make_mesh
    mesh = make_mesh(devices)

  def count(codes, sizes, cliques) -> list:
    sizes = tuple(int(s) for s in sizes)
    if memo["codes"] is not codes or memo["sizes"] != sizes:   # new codes: forget
      memo.update(codes=codes, sizes=sizes, tables={})
    tables = memo["tables"]
    wanted = [tuple(int(c) for c in q) for q in cliques]
    missing = list(dict.fromkeys(q for q in wanted if q not in tables))
    if missing:
      if mesh is None:
        counted = count_tables(codes, sizes, missing, block_rows=block_rows)
      else:
        from jtwin.marginals.counting_sharded import count_tables_sharded
        counted = count_tables_sharded(codes, sizes, missing, mesh, block_rows=block_rows)
      tables.update(zip(missing, counted))
    return [tables[q] for q in wanted]

  return count
