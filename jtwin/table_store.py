"""Data larger than memory: a CSV encoded in a streaming pass into a memory-mapped table.

`stream_encode` reads the CSV in chunks of `chunk_rows` rows (pandas
`read_csv(chunksize=...)`) and writes the encoded table, exactly what
`jtwin.data.encode` gives for the whole file, to two `.npy` files in a
directory (a `TableStore`):

  values.npy    float32 [N, D], 0.0 where missing (finite everywhere)
  observed.npy  bool [N, D]
  table.json    the resolved `Domain` and N

Memory stays bounded by the chunk size, whatever N. What the domain needs from
the data also comes from a streaming pass: with something undeclared in the
model file, a first pass accumulates the exact histograms of the DP domain
step chunk by chunk (`jtwin.dp_domain.count_domain` / `merge_counts`), the
noise is added ONCE to the totals (`release`, e.g. `dp_domain.plan_release`,
the DP row count included), and a second pass encodes under the released
domain. With every domain declared there is one pass. Undeclared items read
off the data without noise (`--domain data`) are not supported here.

`jtwin.infer.fit` trains from a store without loading it whole: it gathers
each step's Poisson batch on the host from the memory map and hands the
device only those rows (`infer.fit(..., stream=True)`).

Bad input gives the same one-line `DataError`s as the in-memory path (file,
line, column), and nothing is left behind: the store is written in a
temporary directory next to its destination and renamed into place at the
end. The store holds the private data: it is created with mode 0700.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np
import pandas as pd

from jtwin import data as jdata
from jtwin.errors import DataError, JtwinInputError
from jtwin.spec import ModelSpec

__all__ = ["DEFAULT_CHUNK_ROWS", "StreamedTable", "TableStore", "count_chunks",
           "declared_domain", "iter_csv", "model_chunks", "open_store", "sample_rows",
           "stream_encode"]

DEFAULT_CHUNK_ROWS = 100_000
_VERSION = 1


class TableStore(NamedTuple):
  """An encoded table in a directory, memory-mapped read-only.

  Attributes:
    directory: where the files are.
    values: float32 memmap [N, D], 0.0 where missing.
    observed: bool memmap [N, D].
    domain: the `jtwin.data.Domain` the table was encoded with.
  """
  directory: str
  values: np.ndarray
  observed: np.ndarray
  domain: jdata.Domain

  @property
  def num_rows(self) -> int:
    return int(self.values.shape[0])

  @property
  def validated(self) -> bool:
    """Always True: values are finite and 0.0 where missing (checked when written)."""
    return True


class StreamedTable(NamedTuple):
  """What `stream_encode` returns.

  Attributes:
    store: the `TableStore`.
    public: the `jtwin.dp_domain.PublicPlan` returned by `release` (None without one).
    clipped: column name -> exact count of values outside its declared bounds
      (clipped on encoding; private, printed only with --verbose).
  """
  store: TableStore
  public: Optional[object]
  clipped: dict


def iter_csv(path, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
  """The rows of a CSV file in chunks (pandas defaults, as `jtwin.data.read_csv`).

  Row labels continue across chunks (0 .. N-1), so messages name the right
  line. Every column is parsed (pandas' `usecols` would let a line with too
  many fields pass, which `read_csv` refuses).

  Raises:
    DataError: as `jtwin.data.read_csv`, also for a bad line in a later chunk.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(f"{path}: data file not found; check the path")
  if os.path.isdir(path):
    raise DataError(f"{path}: is a directory, not a CSV file")
  if not (isinstance(chunk_rows, (int, np.integer)) and chunk_rows >= 1):
    raise JtwinInputError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
  with jdata.csv_read_errors(path):
    jdata.check_header(path)
    jdata.check_row_lengths(path)      # one fast pass: pandas reads short rows as missing
    reader = pd.read_csv(path, chunksize=int(chunk_rows))
  with reader:
    while True:
      with jdata.csv_read_errors(path):
        chunk = next(reader, None)
      if chunk is None:
        return
      yield chunk


def declared_domain(spec: ModelSpec) -> jdata.Domain:
  """The `Domain` of a model file that declares every item (no data needed).

  Equal to `jtwin.data.resolve_domain(df, spec)` for any data `df` that fits
  the declaration.

  Raises:
    JtwinInputError: an item is undeclared (release it under DP first, or
      declare it).
    DataError: a categorical column declares a single category.
  """
  from jtwin.dp_domain import needs_release
  todo = needs_release(spec)
  if todo:
    raise JtwinInputError(
        "the streaming pass reads undeclared domain items only under DP (--domain dp); "
        f"declare them in the model file: {', '.join(todo[:4])}"
        + (", ..." if len(todo) > 4 else ""))
  cols = []
  for f in spec.features:
    fields = {}
    if f.bins is not None:
      fields.update(bins=f.bins, categories=jdata._bin_labels(f.bins), integer=f.integer,
                    bounds=(f.bins[0], f.bins[-1]))
      if f.bounds is not None:
        fields["bounds"] = (max(f.bins[0], f.bounds[0]), min(f.bins[-1], f.bounds[1]))
    elif f.family in jdata._CATEGORICAL:
      if len(f.categories) < 2:
        raise DataError(f"{spec.where(f)}: column '{f.name}' has the single category "
                        f"'{f.categories[0]}'; a constant column carries no information: "
                        "remove it from the model file or declare its other categories")
      fields["categories"] = f.categories
    elif f.family == "poisson":
      fields.update(integer=True, bounds=f.bounds)
    else:
      fields.update(jdata._resolve_normal(np.empty(0), f, []), bounds=f.bounds)
    cols.append(jdata.ColumnDomain(name=f.name, family=f.family, missing=bool(f.missing),
                                   **fields))
  return jdata.Domain(tuple(cols))


def stream_encode(path, spec: ModelSpec, directory, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  drop_na: bool = False, release: Optional[Callable] = None,
                  source: Optional[str] = None) -> StreamedTable:
  """Encodes the CSV at `path` into a new `TableStore` at `directory`, in chunks.

  Args:
    path: the CSV file (may be compressed, as for pandas).
    spec: the model file.
    directory: the store to create; it must not exist yet.
    chunk_rows: rows per chunk (bounds the memory: about chunk_rows x the
      CSV's columns of pandas data at a time).
    drop_na: leave out rows with a missing value in a modelled column.
    release: `(counts, spec) -> PublicPlan` (e.g. `dp_domain.plan_release`
      with its rng bound; `counts` is a `dp_domain.DomainCounts` of all
      rows): the DP row count and domain, whose noise is added once to the
      totals. None: no release, and every item must be declared.
    source: the file's name in messages (default `path`).

  Returns:
    a `StreamedTable`.

  Raises:
    DataError: bad data (one line naming file, line and column); nothing is
      written then.
    JtwinInputError: something undeclared and no `release`, or `directory`
      exists.
  """
  from jtwin import dp_domain
  path = os.fspath(path)
  source = path if source is None else source
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory):
    raise JtwinInputError(f"{directory}: already exists; the table store needs a new directory")
  parent = os.path.dirname(directory)
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise DataError(f"{directory}: its parent directory does not exist or is not writable")
  chunks = model_chunks(path, spec, chunk_rows=chunk_rows, drop_na=drop_na, source=source)
  undeclared = bool(dp_domain.needs_release(spec))

  public, domain_release = None, None
  if release is not None and undeclared:      # pass 1: exact counts, noise once on the totals
    counts = count_chunks(chunks(), spec, source=source)
    _check_rows(counts.rows, path, source, drop_na)
    public = release(counts, spec)
    spec, domain_release = public.spec, public.release
  domain = declared_domain(spec)
  tmp = os.path.join(parent, f".{os.path.basename(directory)}.{secrets.token_hex(6)}.tmp")
  os.mkdir(tmp, 0o700)
  try:
    n, clipped = _write_pass(chunks(), domain, domain_release, tmp, source)
    if public is None:
      _check_rows(n, path, source, drop_na)
      if release is not None:                   # the DP row count only (nothing undeclared)
        public = release(dp_domain.DomainCounts(n, {}), spec)
    if n == 0:
      raise DataError(f"{source}: no rows are left after leaving out rows missing in columns "
                      "whose DP missing flag is 'no'; declare 'missing' for them")
    with open(os.path.join(tmp, "table.json"), "w", encoding="utf-8") as f:
      json.dump({"version": _VERSION, "rows": n, "domain": domain.to_dict()}, f)
    os.rename(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return StreamedTable(open_store(directory), public, clipped)


def model_chunks(path, spec: ModelSpec, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 drop_na: bool = False, source: Optional[str] = None) -> Callable:
  """Checks the CSV's header against `spec`; returns a function that yields its
  modelled columns chunk by chunk (without rows missing a modelled value when
  `drop_na`), each call a new pass over the file.

  Raises:
    DataError: no data rows, or a modelled column missing from the header.
  """
  path = os.fspath(path)
  source = path if source is None else source
  with contextlib.closing(iter_csv(path, 1)) as rows:
    header = next(rows, None)
  if header is None or len(header) == 0:
    raise DataError(f"{path}: the file has a header but no data rows")
  jdata._check_columns(header, spec, source)
  names = list(spec.names)

  def chunks():
    for chunk in iter_csv(path, chunk_rows):
      chunk = chunk.loc[:, names]
      yield chunk.dropna() if drop_na else chunk

  return chunks


def count_chunks(chunks, spec: ModelSpec, *, need_edges: bool = False,
                 source: str = "data"):
  """The `dp_domain.DomainCounts` of all the chunks (exact, PRIVATE), added up."""
  from jtwin import dp_domain
  counts = dp_domain.DomainCounts(0, {})
  for i, chunk in enumerate(chunks):
    c = dp_domain.count_domain(chunk, spec, need_edges=need_edges, source=source)
    counts = c if i == 0 else dp_domain.merge_counts(counts, c)
  return counts


def _check_rows(n: int, path: str, source: str, drop_na: bool) -> None:
  if n > 0:
    return
  if drop_na:
    raise DataError(f"{source}: every row has a missing value in some modelled column, so "
                    "dropping them leaves no data; declare 'missing' for those columns "
                    "instead")
  raise DataError(f"{path}: the file has a header but no data rows")


def _write_pass(chunks, domain: jdata.Domain, release, tmp: str,
                source: str) -> tuple[int, dict]:
  """Encodes every chunk and appends it to values.npy / observed.npy in `tmp`."""
  d = len(domain.columns)
  n, observed_count, clipped = 0, np.zeros(d, np.int64), {}
  with _NpyWriter(os.path.join(tmp, "values.npy"), np.float32, d) as wv, \
       _NpyWriter(os.path.join(tmp, "observed.npy"), np.bool_, d) as wo:
    for chunk in chunks:
      if release is not None:
        chunk = release.apply(chunk)
      if len(chunk) == 0:
        continue
      enc = jdata.encode(chunk, domain, source=source)
      for name, count in jdata.out_of_bounds(chunk, domain).items():
        clipped[name] = clipped.get(name, 0) + count
      wv.append(enc.values)
      wo.append(enc.observed)
      observed_count += enc.observed.sum(0)
      n += len(chunk)
  if n:
    for c, k in zip(domain.columns, observed_count):
      if k == 0:
        raise DataError(f"{source}: column '{c.name}' has no values (every cell is missing); "
                        "remove it from the model file or fill it in")
  return n, {c.name: clipped[c.name] for c in domain.columns if c.name in clipped}


class _NpyWriter:
  """Appends rows to a `.npy` file whose header (shape) is written when it is closed."""

  def __init__(self, path: str, dtype, width: int):
    self.path, self.dtype, self.width, self.rows = path, np.dtype(dtype), width, 0

  def __enter__(self):
    self.file = open(self.path, "wb")
    self._header()
    self.offset = self.file.tell()
    return self

  def _header(self):
    np.lib.format.write_array_header_1_0(self.file, {
        "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
        "shape": (self.rows, self.width)})

  def append(self, rows: np.ndarray) -> None:
    self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
    self.rows += len(rows)

  def __exit__(self, kind, *_):
    with self.file:
      if kind is None:
        self.file.seek(0)
        self._header()             # the header's padding leaves room for any row count
        if self.file.tell() != self.offset:
          raise RuntimeError(f"{self.path}: the .npy header changed size")
        self.file.flush()
        os.fsync(self.file.fileno())
    return False


def open_store(directory) -> TableStore:
  """Opens a `TableStore` written by `stream_encode` (memory-mapped, read-only)."""
  directory = os.fspath(directory)
  try:
    with open(os.path.join(directory, "table.json"), encoding="utf-8") as f:
      meta = json.load(f)
    values = np.load(os.path.join(directory, "values.npy"), mmap_mode="r")
    observed = np.load(os.path.join(directory, "observed.npy"), mmap_mode="r")
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{directory}: not a complete jtwin table store ({e})") from None
  domain = jdata.Domain.from_dict(meta["domain"])
  if values.shape != observed.shape or values.shape != (meta["rows"], len(domain.columns)):
    raise DataError(f"{directory}: the table store's files do not match (shapes "
                    f"{values.shape}, {observed.shape}, rows {meta['rows']})")
  return TableStore(directory, values, observed, domain)


def sample_rows(store: TableStore, max_rows: int = 50_000) -> np.ndarray:
  """Evenly spaced row indices (at most `max_rows`), e.g. to plot the real data."""
  n = store.num_rows
  return np.unique(np.linspace(0, n - 1, min(n, max_rows)).astype(np.int64))
