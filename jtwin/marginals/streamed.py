"""`jtwin napsumq` on data larger than memory: cell codes in memory-mapped files.

The marginal method reads the private rows only to count tables, and its
counter (`jtwin.marginals.counting.count_tables`) reads row blocks, so the
rows never need to be in memory at once. `encode_csv` turns a CSV into the
model's base-cell codes in two streaming passes:

  1. chunk by chunk, the exact histograms of the DP domain step
     (`jtwin.dp_domain.count_domain`, `merge_counts`); the noise is added
     ONCE to the totals (`plan`, i.e. `dp_domain.plan_release` with the
     run's key: the same release as for the whole file in memory);
  2. chunk by chunk, the released domain's row filter
     (`DomainRelease.apply`) and `cells.encode_cells`, appended to an int32
     `.npy` file, memory-mapped read-only afterwards.

`recode` then maps codes block by block (compression's groups, coarse views)
into further files. Memory is bounded by the chunk and block sizes.
Everything is written in a private (mode 0700) temporary directory that the
caller removes (`work_directory`). Bad data gives the same one-line
`DataError`s as the in-memory path, naming file, line and column.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Callable, NamedTuple, Optional

import numpy as np
import pandas as pd

from jtwin.errors import DataError, JtwinInputError

__all__ = ["CsvSource", "Encoded", "encode_csv", "recode", "work_directory"]

BLOCK_ROWS = 1 << 16          # rows per block when recoding
SAMPLE_ROWS = 50_000          # evenly spaced raw rows kept for the plots


class CsvSource(NamedTuple):
  """A CSV file that `jtwin.fit_marginals` reads in chunks instead of a DataFrame.

  Attributes:
    path: the CSV file (may be compressed, as for pandas).
    chunk_rows: rows read at a time (bounds the memory).
    drop_na: leave out rows with a missing value in a modelled column.
    workdir: where the private temporary directory of codes goes (default:
      the system's temporary directory; it is removed at the end). Give a
      disk with room for about 4 bytes x rows x (3 columns + views).
  """
  path: str
  chunk_rows: int = 100_000
  drop_na: bool = False
  workdir: Optional[str] = None


class Encoded(NamedTuple):
  """What `encode_csv` returns.

  Attributes:
    public: the `dp_domain.PublicPlan` (`plan`'s result); its `frame` is None.
    codes: int32 memmap [N, D] base-cell codes of the rows the fit sees
      (PRIVATE), the missing cell coded `num_cells`.
    sample: at most `SAMPLE_ROWS` evenly spaced raw rows of the modelled
      columns (PRIVATE; for the data holder's plots).
  """
  public: object
  codes: np.ndarray
  sample: pd.DataFrame


@contextlib.contextmanager
def work_directory(parent: Optional[str] = None):
  """A new private (mode 0700) temporary directory, removed on exit (errors included)."""
  path = tempfile.mkdtemp(prefix=".jtwin-codes-", dir=parent)
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def encode_csv(source: CsvSource, spec, directory: str, *, plan: Callable,
               cells_for: Callable, name: Optional[str] = None) -> Encoded:
  """Encodes `source` into `directory`/codes.npy in two streaming passes.

  Args:
    source: the `CsvSource`.
    spec: the model spec (`jtwin.spec.ModelSpec`).
    directory: an existing private directory (`work_directory`).
    plan: `(counts, spec) -> PublicPlan` (`dp_domain.plan_release` with its
      rng and budget bound), called once with the `DomainCounts` of all rows.
    cells_for: `(public) -> (cells, domain)`: the base cells and the resolved
      `jtwin.data.Domain` of the released spec (no data needed).
    name: the data's name in messages (default: the path).

  Returns:
    an `Encoded`.

  Raises:
    DataError: bad data, or no rows (one line naming file, line and column).
  """
  from jtwin import table_store
  from jtwin.marginals import cells as cl
  path = os.fspath(source.path)
  name = path if name is None else name
  names = list(spec.names)
  chunks = table_store.model_chunks(path, spec, chunk_rows=source.chunk_rows,
                                    drop_na=bool(source.drop_na), source=name)
  from jtwin.data import check_declared_missing

  def checked():
    for chunk in chunks():
      check_declared_missing(chunk, spec, name)
      yield chunk
  # pass 1: exact counts (PRIVATE); the noise is added once, by `plan`
  counts = table_store.count_chunks(checked(), spec, need_edges=True, source=name)
  table_store._check_rows(counts.rows, path, name, bool(source.drop_na))
  public = plan(counts, spec)
  cells, domain = cells_for(public)
  release = public.release
  keep = np.unique(np.linspace(0, counts.rows - 1, min(counts.rows, SAMPLE_ROWS))
                  .astype(np.int64))
  sample, seen, n = [], 0, 0
  out = os.path.join(directory, "codes.npy")
  with table_store._NpyWriter(out, np.int32, len(cells)) as writer:
    for chunk in chunks():                        # pass 2: codes of the released domain
      at = keep[np.searchsorted(keep, seen):np.searchsorted(keep, seen + len(chunk))]
      if len(at):
        sample.append(chunk.iloc[at - seen])
      seen += len(chunk)
      chunk = release.apply(chunk)
      if len(chunk) == 0:
        continue
      writer.append(cl.encode_cells(chunk, cells, domain, source=name))
      n += len(chunk)
  if n == 0:
    raise DataError(f"{name}: no rows are left after leaving out rows missing in columns "
                    "whose DP missing flag is 'no'; declare 'missing' for them")
  codes = np.load(out, mmap_mode="r")
  frame = (pd.concat(sample) if sample else pd.DataFrame(columns=names)).reset_index(drop=True)
  return Encoded(public, codes, frame)


def recode(codes: np.ndarray, fn: Callable, width: int, path: Optional[str] = None,
           block_rows: int = BLOCK_ROWS) -> np.ndarray:
  """`fn` applied to row blocks of `codes`, into int32 [N, width].

  Args:
    codes: int [N, F] array or memmap.
    fn: int [B, F] -> int [B, width], row by row.
    width: the output's columns.
    path: a `.npy` file to write (then a read-only memmap is returned);
      None: an array in memory.
    block_rows: rows per block.
  """
  n = int(codes.shape[0])
  if path is None:
    out = np.empty((n, width), np.int32)
    for lo in range(0, n, block_rows):
      out[lo:lo + block_rows] = fn(np.asarray(codes[lo:lo + block_rows]))
    return out
  from jtwin import table_store
  if os.path.exists(path):
    raise JtwinInputError(f"{path}: already exists")
  with table_store._NpyWriter(path, np.int32, width) as writer:
    for lo in range(0, n, block_rows):
      writer.append(fn(np.asarray(codes[lo:lo + block_rows])))
  return np.load(path, mmap_mode="r")
