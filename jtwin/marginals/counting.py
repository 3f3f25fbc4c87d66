"""Exact marginal tables of many cliques in one pass over the rows, in row blocks.

`jtwin.marginals.measure.clique_counts` runs one `np.bincount` over all rows
per table. Here every table of a list of cliques is counted in a single pass
over the rows: each block of rows is turned into one flat index per (row,
clique) into the concatenation of all the tables, and one `np.bincount` per
block adds them up. Memory is bounded by the block (about `block_rows` x
cliques indices), so `codes` may be a `numpy.memmap` larger than memory;
only `codes[lo:hi]` is ever read.

The flat layout (`TableLayout`) is shared with the device-sharded version
(`jtwin.marginals.counting_sharded`).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

__all__ = ["TableLayout", "table_layout", "count_tables", "split_tables", "default_block_rows"]

# flat indices per block (rows x cliques): 2^19 int64 = 4 MiB, about a core's L2 cache
# (measured: blocks of 2^22 indices are 1.5-2x slower on 120 tables)
_BLOCK_ELEMENTS = 1 << 19


class TableLayout(NamedTuple):
  """Where each clique's table sits in the flat concatenation of all tables.

  Attributes:
    columns: int64 [Q, M] the cliques' columns, padded with column 0 (M = the
      longest clique's length).
    strides: int64 [Q, M] C-order strides of the columns in their table, 0
      for padding entries (so padding columns add nothing).
    offsets: int64 [Q + 1] start of each table in the flat vector; the last
      entry is the total number of cells.
  """
  columns: np.ndarray
  strides: np.ndarray
  offsets: np.ndarray

  @property
  def total(self) -> int:
    """Cells of all tables together."""
    return int(self.offsets[-1])


def table_layout(sizes: Sequence[int], cliques: Sequence[Sequence[int]]) -> TableLayout:
  """The flat layout of the cliques' tables (C order within each table).

  Args:
    sizes: number of cells of each column.
    cliques: Q tuples of column indices (any order is kept as given).

  Returns:
    a `TableLayout`.
  """
  width = max([len(c) for c in cliques] + [1])
  q = len(cliques)
  columns = np.zeros((q, width), np.int64)
  strides = np.zeros((q, width), np.int64)
  cells = np.zeros(q, np.int64)
  for i, clique in enumerate(cliques):
    dims = [int(sizes[c]) for c in clique]
    columns[i, :len(clique)] = clique
    strides[i, :len(clique)] = np.cumprod([1] + dims[::-1][:-1])[::-1] if dims else []
    cells[i] = int(np.prod(dims, dtype=np.int64))
  return TableLayout(columns, strides, np.concatenate([[0], np.cumsum(cells)]).astype(np.int64))


def default_block_rows(num_cliques: int) -> int:
  """Rows per block so that a block's flat indices stay near 4 MiB."""
  return int(max(256, _BLOCK_ELEMENTS // max(num_cliques, 1)))


def _groups(layout: TableLayout) -> list:
  """(clique rows, columns [q, m], strides [q, m, 1], offsets [q, 1]) per clique length m."""
  lengths = (layout.strides > 0).sum(1)     # real columns have strides >= 1, padding 0
  out = []
  for m in np.unique(lengths):
    rows = np.flatnonzero(lengths == m)
    out.append((layout.columns[rows, :m], layout.strides[rows, :m, None],
                layout.offsets[rows, None]))
  return out


def _scratch(groups, num_columns: int, block_rows: int) -> tuple:
  """Buffers reused by every block: fresh multi-MiB arrays per block cost a page
  fault per 4 KiB (measured: 2-4x slower on a VM than reusing them)."""
  widest = max(len(g[0]) for g in groups)
  return (np.empty(num_columns * block_rows, np.int64),
          np.empty(widest * block_rows, np.int64), np.empty(widest * block_rows, np.int64))


def _block_counts(block: np.ndarray, groups, total: int, scratch) -> np.ndarray:
  """int64 [total] counts of a block of codes [B, F] (one bincount per clique length)."""
  b, f = block.shape
  by_column = scratch[0][:f * b].reshape(f, b)
  by_column[...] = block.T                                                # [F, B]
  counts = np.zeros(total, np.int64)
  for columns, strides, offsets in groups:
    q = len(columns)
    flat, term = scratch[1][:q * b].reshape(q, b), scratch[2][:q * b].reshape(q, b)
    np.take(by_column, columns[:, 0], axis=0, out=flat)                   # [q, B]
    flat *= strides[:, 0]
    flat += offsets
    for k in range(1, columns.shape[1]):
      np.take(by_column, columns[:, k], axis=0, out=term)
      term *= strides[:, k]
      flat += term
    counts += np.bincount(flat.ravel(), minlength=total)
  return counts


def count_tables(codes, sizes: Sequence[int], cliques: Sequence[Sequence[int]], *,
                 block_rows: Optional[int] = None) -> list:
  """Exact counts of every clique's table, in one pass over the rows (PRIVATE).

  Args:
    codes: int [N, F] cell codes (an array or a `numpy.memmap`); code of row
      i in column c is in [0, sizes[c]).
    sizes: number of cells of each column (F entries, or more).
    cliques: Q tuples of column indices.
    block_rows: rows read per block (default `default_block_rows`).

  Returns:
    Q float64 arrays, the tables in C order over each clique's cells, equal
    to `clique_counts(codes, sizes, clique)` for each clique. Counts are
    accumulated in int64 (exact for any N).

  Raises:
    ValueError: a code outside [0, sizes[c]) in a counted column.
  """
  if not cliques:
    return []
  layout = table_layout(sizes, cliques)
  n = codes.shape[0]
  step = int(block_rows or default_block_rows(len(cliques)))
  groups = _groups(layout)
  scratch = _scratch(groups, codes.shape[1], min(step, max(n, 1)))
  total = np.zeros(layout.total, np.int64)
  used = np.unique(layout.columns[layout.strides > 0])
  limits = np.asarray([int(sizes[c]) for c in used])
  for lo in range(0, n, step):              # a loop over blocks, not rows
    block = np.asarray(codes[lo:lo + step])
    _check_codes(block[:, used], limits, lo)
    total += _block_counts(block, groups, layout.total, scratch)
  return split_tables(total.astype(np.float64), layout)


def _check_codes(block: np.ndarray, limits: np.ndarray, first_row: int) -> None:
  """Raises ValueError if a code of the block [B, C] is outside [0, limits)."""
  bad = (block.min(0) < 0) | (block.max(0) >= limits)
  if bad.any():
    j = int(np.flatnonzero(bad)[0])
    row = first_row + int(np.flatnonzero((block[:, j] < 0) | (block[:, j] >= limits[j]))[0])
    raise ValueError(f"row {row}: code {int(block[row - first_row, j])} outside "
                     f"[0, {int(limits[j])}) in a counted column")


def split_tables(flat: np.ndarray, layout: TableLayout) -> list:
  """The flat concatenation [total] cut back into the Q tables."""
  return [flat[a:b] for a, b in zip(layout.offsets[:-1], layout.offsets[1:])]
