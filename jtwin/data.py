"""CSV input and output, the public domain of each column, encoding, decoding.

The *domain* of a column is everything the model needs to know about it that
is not a learned parameter: its category labels and their order, whether it
may be missing, its standardisation, bounds and integer flag. jtwin takes the
domain from the model file (`jtwin.spec`) wherever it is declared, and only
infers the rest from the data. Inferred items are NOT covered by the DP
guarantee (twinify.md §6.1 item 7); `Domain.inferred_from_data` lists them so
that the command line can warn.

Flow::

  df = read_csv("data.csv")
  df = select_columns(df, spec, drop_na=False)
  domain = resolve_domain(df, spec, source="data.csv")
  values, observed = encode(df, domain)
  ...
  write_csv_atomic(decode(values, observed, domain), "synthetic.csv")
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from jtwin import _atomic
from jtwin._atomic import check_output_path
from jtwin.errors import DataError
from jtwin.models.interface import Feature
from jtwin.spec import FeatureSpec, ModelSpec

__all__ = [
    "ColumnDomain",
    "Domain",
    "EncodedData",
    "check_output_path",
    "decode",
    "encode",
    "out_of_bounds",
    "read_csv",
    "resolve_domain",
    "select_columns",
    "write_csv_atomic",
]

_CATEGORICAL = ("categorical", "bernoulli")
_DISPLAY = {"normal": "Normal", "bernoulli": "Bernoulli",
            "categorical": "Categorical", "poisson": "Poisson"}
_MAX_EXACT_INT = 2.0**53


@dataclasses.dataclass(frozen=True)
class ColumnDomain:
  """The resolved public description of one modelled column.

  Attributes:
    name: column name.
    family: "normal", "bernoulli", "categorical" or "poisson".
    categories: labels in code order, as they are written out (strings), for
      categorical and bernoulli columns; None otherwise.
    missing: whether the model has a missingness probability for the column.
    shift: Normal standardisation, encoded = (x - shift) / scale.
    scale: see `shift`; > 0.
    bounds: (lo, hi): values are clipped to it on input and output; or None.
    integer: output is rounded to integers (Normal and binned columns;
      always True for Poisson).
    bins: bin edges of a binned numeric column (family "categorical", one
      category per bin), or None.
    from_data: which items were inferred from the private data, e.g.
      ("categories (sorted)", "missing flag").
  """
  name: str
  family: str
  categories: Optional[tuple[str, ...]] = None
  missing: bool = False
  shift: float = 0.0
  scale: float = 1.0
  bounds: Optional[tuple[float, float]] = None
  integer: bool = False
  from_data: tuple[str, ...] = ()
  bins: Optional[tuple[float, ...]] = None

  def __post_init__(self):
    if self.family not in _DISPLAY:
      raise ValueError(f"column {self.name!r}: unknown family {self.family!r}")
    if (self.categories is None) == (self.family in _CATEGORICAL):
      raise ValueError(f"column {self.name!r}: categories are required for "
                       "categorical and bernoulli columns only")
    if self.family == "bernoulli" and len(self.categories) != 2:
      raise ValueError(f"column {self.name!r}: bernoulli needs 2 categories")
    if not self.scale > 0:
      raise ValueError(f"column {self.name!r}: scale must be > 0")

  def to_dict(self) -> dict:
    """A JSON-serialisable dict (tuples become lists)."""
    d = dataclasses.asdict(self)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

  @classmethod
  def from_dict(cls, d: dict) -> "ColumnDomain":
    """Inverse of `to_dict`."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return cls(**d)


class _ItemList(list):
  """A list that can also be called (returning a plain copy of itself), so that
  code written for the former method `Domain.inferred_from_data()` works."""

  def __call__(self) -> list:
    return list(self)


@dataclasses.dataclass(frozen=True)
class Domain:
  """The resolved domains of all modelled columns, in model order."""
  columns: tuple[ColumnDomain, ...]

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(c.name for c in self.columns)

  def features(self) -> tuple[Feature, ...]:
    """The columns as `jtwin.models.Feature`s (what the model sees)."""
    return tuple(
        Feature(c.name, c.family,
                len(c.categories) if c.categories is not None else 0,
                c.missing) for c in self.columns)

  @property
  def inferred_from_data(self) -> "_ItemList":
    """Items taken from the private data, e.g. ["sex: missing flag"] (a list;
    calling it, `inferred_from_data()`, also works, as in jtwin <= 0.1)."""
    return _ItemList(f"{c.name}: {', '.join(c.from_data)}"
                     for c in self.columns if c.from_data)

  def to_dict(self) -> dict:
    return {"columns": [c.to_dict() for c in self.columns]}

  @classmethod
  def from_dict(cls, d: dict) -> "Domain":
    return cls(tuple(ColumnDomain.from_dict(c) for c in d["columns"]))


class EncodedData(NamedTuple):
  """Model-ready data. values: f32[N, D] (0.0 where missing); observed: bool[N, D]."""
  values: np.ndarray
  observed: np.ndarray


@contextlib.contextmanager
def csv_read_errors(path):
  """Turns pandas' and the OS's errors while reading `path` into one-line `DataError`s."""
  try:
    yield
  except pd.errors.EmptyDataError:
    raise DataError(f"{path}: the data file is empty; it needs a header line "
                    "and at least one data row") from None
  except pd.errors.ParserError as e:
    msg = " ".join(str(e).split())
    raise DataError(f"{path}: malformed CSV ({msg}); every row needs as many "
                    "fields as the header") from None
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({_bad_utf8_place(path) or e.reason}); "
                    "save the data as UTF-8 CSV") from None
  except OSError as e:
    raise DataError(f"{path}: cannot read the data file ({e.strerror or e})") from None


def _bad_utf8_place(path) -> str:
  """'REASON at line L (byte B)' for the first invalid UTF-8 byte of `path` ('' if none).

  pandas reports the position within its own read buffer, not the file, so
  the file is scanned again (only after the error) in blocks.
  """
  import codecs
  decoder = codecs.getincrementaldecoder("utf-8")()
  offset, lines = 0, 1
  try:
    with open(path, "rb") as f:
      while block := f.read(1 << 20):
        try:
          decoder.decode(block)
        except UnicodeDecodeError as e:
          at = max(e.start - len(decoder.getstate()[0]), 0)
          line = lines + block[:at].count(b"\n")
          return f"{e.reason} at line {line} (byte {offset + at + 1})"
        offset, lines = offset + len(block), lines + block.count(b"\n")
  except OSError:
    pass
  return ""


def check_header(path) -> None:
  """Refuses header problems of the CSV at `path` that pandas would hide.

  Raises:
    DataError: a column name that appears twice (pandas would rename the
      second 'x.1'), or one column whose name holds ';' or a tab (a file
      separated by something other than commas).
  """
  names = [str(n) for n in _raw_header(path)]
  seen = {}
  for i, name in enumerate(names, start=1):
    if name in seen and name.strip():
      raise DataError(f"{path}: column '{name}' appears twice in the header (columns "
                      f"{seen[name]} and {i}); rename one of them")
    seen.setdefault(name, i)
  if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
    sep = "semicolons" if ";" in names[0] else "tabs"
    raise DataError(f"{path}: the header is one column ({names[0][:60]!r}): the file "
                    f"seems separated by {sep}; jtwin reads comma-separated CSV, so save "
                    "it with commas")


SCAN_BLOCK = 1 << 23            # bytes per block of `short_row`'s scan
QUOTED_SCAN_LIMIT = 1 << 25     # a file with quotes is scanned with the csv module up to this size


def short_row(path) -> Optional[tuple]:
  """(line, fields, header fields) of the first data row with fewer fields than
  the header, or None. pandas reads such a row (a file cut off mid-line, a
  lost separator) as missing values without a word; a row with more fields
  it refuses itself.

  Files without a double quote are scanned in blocks by counting commas per
  line (numpy, about as fast as reading); a file with quotes (a field may hold
  a comma or a line break) with the csv module, up to `QUOTED_SCAN_LIMIT`
  bytes (beyond that it is not checked). Blank lines are skipped, as pandas
  skips them. Compressed files are read as pandas reads them.
  """
  from pandas.io.common import get_handle
  with get_handle(os.fspath(path), "rb", compression="infer", is_text=False) as handle:
    f = handle.handle
    header = f.readline()
    if b'"' in header:
      return _short_row_quoted(path)
    want = header.count(b",")
    line, rest = 1, b""
    while True:
      block = f.read(SCAN_BLOCK)
      final = not block
      text = rest + block
      if b'"' in text:
        return _short_row_quoted(path)
      cut = len(text) if final else text.rfind(b"\n") + 1
      body, rest = text[:cut], text[cut:]
      if body:
        data = np.frombuffer(body, np.uint8)
        stops = np.flatnonzero(data == 10)
        if data[-1] != 10:                      # the last line, without a line break
          stops = np.append(stops, len(data))
        starts = np.concatenate([[0], stops[:-1] + 1])
        before = np.searchsorted(np.flatnonzero(data == 44), stops)   # commas before each end
        per_line = np.diff(np.concatenate([[0], before]))
        length = stops - starts
        first = data[np.minimum(starts, len(data) - 1)]
        blank = (length == 0) | ((length == 1) & (first == 13))     # "" or "\r"
        bad = np.flatnonzero((per_line < want) & ~blank)
        if len(bad):
          k = int(bad[0])
          return line + k + 1, int(per_line[k]) + 1, want + 1
        line += len(stops)
      if final:
        return None


def _short_row_quoted(path) -> Optional[tuple]:
  import csv
  from pandas.io.common import get_handle
  if os.path.getsize(path) > QUOTED_SCAN_LIMIT:
    return None
  with get_handle(os.fspath(path), "r", compression="infer", encoding="utf-8-sig",
                  errors="replace") as handle:
    reader = csv.reader(handle.handle)
    header = next(reader, [])
    for row in reader:
      if row and row != [""] and len(row) < len(header):
        return reader.line_num, len(row), len(header)
  return None


def check_row_lengths(path) -> None:
  """Refuses a data row with fewer fields than the header (see `short_row`).

  Raises:
    DataError: naming the file line and the two field counts.
  """
  found = short_row(path)
  if found is not None:
    line, got, want = found
    raise DataError(f"{path}:{line}: the row has {got} field(s), the header {want}; every "
                    "row needs as many fields as the header (a file cut off mid-line, or a "
                    "lost comma?)")


def _raw_header(path) -> list:
  """The first line's fields as written (duplicates kept, blanks as '')."""
  head = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
  return list(head.iloc[0]) if len(head) else []


def read_csv(path) -> pd.DataFrame:
  """Reads a CSV file like twinify (`pd.read_csv` defaults).

  Empty cells and pandas' default NA tokens ("NA", "nan", "NULL", ...) are
  missing. Column types are pandas' inferred types.

  Raises:
    DataError: the file is missing, a directory, unreadable, empty, has no
      data rows, is not valid CSV or has a row with fewer fields than the
      header (`check_row_lengths`).
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise DataError(f"{path}: data file not found; check the path")
  if os.path.isdir(path):
    raise DataError(f"{path}: is a directory, not a CSV file")
  with csv_read_errors(path):
    df = pd.read_csv(path)
    check_header(path)
    check_row_lengths(path)
  if len(df) == 0:
    raise DataError(f"{path}: the file has a header but no data rows")
  return df


def select_columns(df: pd.DataFrame, spec: ModelSpec, drop_na: bool = False,
                   *, source: str = "data.csv") -> pd.DataFrame:
  """The model's columns in model order; with `drop_na`, only complete rows.

  The row index is kept so that error messages can name data lines.

  Raises:
    DataError: a model column is not in the data, or no row is left.
  """
  _check_columns(df, spec, source)
  out = df.loc[:, list(spec.names)]
  if drop_na:
    out = out.dropna()
    if len(out) == 0:
      raise DataError(f"{source}: every row has a missing value in some "
                      "modelled column, so dropping them leaves no data; "
                      "declare 'missing' for those columns instead")
  return out


def resolve_domain(df: pd.DataFrame, spec: ModelSpec, *,
                   source: str = "data.csv", warn: bool = True) -> Domain:
  """Checks the data against the model file and resolves each column's domain.

  Declared options are used as given; undeclared items are inferred from
  `df` and listed in `ColumnDomain.from_data`. Inferred categories are sorted
  (numerically when all are numbers), never in order of appearance, so the
  code order reveals nothing about row order.

  Privacy:
    Items inferred from `df` depend on the private data and are not covered
    by the DP guarantee; with `warn` (default) a warning lists them, as the
    command line does. With a fully declared model file (as
    `jtwin/examples/adult_model.txt`) nothing is inferred, and the data are
    only checked against the declaration.

  Raises:
    DataError: one line naming the model line or data line, the column and
      what to do.
  """
  _check_columns(df, spec, source)
  domain = Domain(tuple(_resolve_column(df[f.name], f, spec, source)
                        for f in spec.features))
  if warn and domain.inferred_from_data:
    import warnings
    warnings.warn(inferred_warning(domain.inferred_from_data), stacklevel=2)
  return domain


FLOAT32_MAX = float(np.finfo(np.float32).max)

INFERRED_ADVICE = "declare them in the model file, or let jtwin release them under DP: --domain dp"


def inferred_warning(items, advice: str = INFERRED_ADVICE) -> str:
  """The warning for domain items read off the private data (CLI and library alike)."""
  return (f"taken from the private data, NOT covered by the epsilon guarantee ({advice}):\n"
          + "\n".join(f"    {item}" for item in items))


def out_of_bounds(df: pd.DataFrame, domain: Domain) -> dict[str, int]:
  """Number of observed values outside declared bounds, per column (nonzero).

  `encode` and `decode` clip these values; the command line warns about them.
  Private: the counts are statistics of the data.
  """
  counts = {}
  for c in domain.columns:
    if c.bounds is None or c.name not in df.columns:
      continue
    x = pd.to_numeric(df[c.name], errors="coerce").to_numpy(float,
                                                            na_value=np.nan)
    n = int(np.sum((x < c.bounds[0]) | (x > c.bounds[1])))
    if n:
      counts[c.name] = n
  return counts


def encode(df: pd.DataFrame, domain: Domain, *,
           source: str = "data") -> EncodedData:
  """Encodes `df` for the model, columns in domain order.

  Categorical and Bernoulli: the category code; Normal: clipped to bounds and
  standardised; Poisson: the count, clipped to bounds. Missing cells are 0.0
  with `observed` False.

  Raises:
    DataError: a column is absent, or a value does not fit its domain.
  """
  absent = [c.name for c in domain.columns if c.name not in df.columns]
  if absent:
    raise DataError(f"{source}: missing column(s) {', '.join(absent)}")
  n, d = len(df), len(domain.columns)
  values = np.zeros((n, d), np.float32)
  observed = np.ones((n, d), bool)
  for j, c in enumerate(domain.columns):
    col = df[c.name]
    isna = col.isna().to_numpy()
    if isna.any() and not c.missing:
      raise DataError(f"{_row(col.index, isna, source)}: column '{c.name}' is "
                      "missing but its domain has no missing values; declare "
                      "'missing' or drop incomplete rows")
    if c.bins is not None:
      x = _numeric(col, c.name, c.family, source)
      x = _bin_codes(np.where(isna, c.bins[0], x), c.bins)
      x[isna] = 0.0
    elif c.family in _CATEGORICAL:
      x = np.zeros(n)
      x[~isna] = _checked_codes(col[~isna], c.categories, c.name, source)
    else:
      x = _numeric(col, c.name, c.family, source)
      if c.family == "poisson":
        _check_counts(col, x, c.name, source)
      if c.bounds is not None:
        x = np.clip(x, *c.bounds)
      raw, x = x, (x - c.shift) / c.scale
      x[isna] = 0.0
      bad = np.abs(x) > FLOAT32_MAX
      if bad.any():
        raise DataError(f"{_row(col.index, bad, source)}: column '{c.name}' has the value "
                        f"{raw[np.argmax(bad)]:.3g}, beyond the range of 32-bit floats once "
                        f"standardised, (x - {c.shift:.3g}) / {c.scale:.3g}; fix the data, or "
                        "declare 'bounds = lo, hi' to clip it")
    values[:, j] = x
    observed[:, j] = ~isna
  return EncodedData(values, observed)


def _bin_codes(x: np.ndarray, edges) -> np.ndarray:
  """Bin index of each value; values outside the edges go to the end bins."""
  edges = np.asarray(edges, np.float64)
  return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2).astype(np.float64)


def _bin_labels(edges) -> tuple[str, ...]:
  f = lambda e: str(int(e)) if float(e).is_integer() else repr(float(e))
  last = len(edges) - 2
  return tuple(f"[{f(a)}, {f(b)}{']' if i == last else ')'}"
               for i, (a, b) in enumerate(zip(edges, edges[1:])))


def _draw_in_bins(codes: np.ndarray, edges, integer: bool, rng) -> np.ndarray:
  """A value drawn uniformly within each code's bin (integers if `integer`)."""
  edges = np.asarray(edges, np.float64)
  lo, hi = edges[codes], edges[codes + 1]
  if integer:
    last = codes == len(edges) - 2
    first = np.ceil(lo)
    stop = np.where(last, np.floor(hi) + 1, np.ceil(hi))     # exclusive
    stop = np.maximum(stop, first + 1)
    return np.floor(first + rng.random(len(codes)) * (stop - first))
  # a point cell [p, nextafter(p)) (model-file `points` of a non-integer
  # column) is exactly p
  return np.where(hi <= np.nextafter(lo, np.inf), lo, lo + rng.random(len(codes)) * (hi - lo))


def decode(values, observed, domain: Domain, rng=None) -> pd.DataFrame:
  """Inverse of `encode`: a DataFrame with the original names and labels.

  Category labels that are all integers ("13") come out as integers; Normal
  values are un-standardised, clipped to bounds and rounded to integers if
  `integer`, else to 7 significant digits (the precision of float32 values);
  Poisson values are non-negative integers; binned columns get a value drawn
  uniformly within their bin from `rng` (a numpy Generator; default: seeded
  with 0; the draw is data-independent). Unobserved or non-finite cells
  are NA. Integer columns with NA use pandas' nullable Int64 dtype so that a
  CSV shows `37`, not `37.0`. A category code that is not a whole number in
  range is refused (ValueError naming the column).
  """
  values = np.asarray(values, dtype=np.float64)
  observed = np.asarray(observed, dtype=bool)
  d = len(domain.columns)
  if values.ndim != 2 or values.shape[1] != d or observed.shape != values.shape:
    raise ValueError(f"decode expects values and observed of shape [N, {d}], "
                     f"got {values.shape} and {observed.shape}")
  from jtwin._validate import check_codes
  check_codes(values, observed & np.isfinite(values), domain.names,
              [len(c.categories) if c.family in _CATEGORICAL else None
               for c in domain.columns], what="decode")
  out = {}
  for j, c in enumerate(domain.columns):
    v = values[:, j]
    obs = observed[:, j] & np.isfinite(v)
    v = np.where(obs, v, 0.0)
    if c.family in _CATEGORICAL:
      codes = np.clip(np.rint(v), 0, len(c.categories) - 1).astype(np.int64)
      if c.bins is not None:
        rng = np.random.default_rng(0) if rng is None else rng
        x = _draw_in_bins(codes, c.bins, c.integer, rng)
        if c.bounds is not None:   # declared top-codes: never beyond them
          lo, hi = c.bounds
          if c.integer and math.ceil(lo) <= hi:
            lo, hi = math.ceil(lo), math.floor(hi)
          x = np.clip(x, lo, hi)
        out[c.name] = (_int_series(x, obs) if c.integer
                       else pd.Series(np.where(obs, _significant(x, 7), np.nan)))
        continue
      out[c.name] = _labels_series(c.categories, codes, obs)
      continue
    x = v * c.scale + c.shift
    if c.family == "poisson":
      x = np.maximum(x, 0.0)
    if c.bounds is not None:
      x = np.clip(x, *c.bounds)
    if c.integer:
      x = np.rint(x)
      if c.bounds is not None and math.ceil(c.bounds[0]) <= c.bounds[1]:
        x = np.clip(x, math.ceil(c.bounds[0]), math.floor(c.bounds[1]))
      out[c.name] = _int_series(x, obs)
    else:
      out[c.name] = pd.Series(np.where(obs, _significant(x, 7), np.nan))
  return pd.DataFrame(out, columns=list(domain.names))


def write_csv_atomic(df: pd.DataFrame, path) -> None:
  """Writes `df` as CSV (no index, NA as empty cells) atomically to `path`,
  compressed when its name ends in .gz, .bz2, .xz, .zst or .zip (as pandas
  infers it; the archive member of a .zip is named after the file)."""
  from pandas.io.common import infer_compression
  compression = infer_compression(os.fspath(path), "infer")
  if compression is None:
    with _atomic.atomic_write(path, "w", newline="") as f:
      df.to_csv(f, index=False)
    return
  options = {"method": compression}
  if compression == "zip":
    options["archive_name"] = os.path.basename(os.fspath(path))[:-len(".zip")]
  with _atomic.atomic_write(path, "wb") as f:
    df.to_csv(f, index=False, compression=options)


# ----------------------------------------------------------------- resolving


def _check_columns(df: pd.DataFrame, spec: ModelSpec, source: str) -> None:
  repeated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
  if repeated:
    raise DataError(f"{source}: the column name(s) {', '.join(repeated)} appear more than "
                    "once; give every column its own name")
  columns = [str(c) for c in df.columns]
  for f in spec.features:
    if f.name in df.columns:
      continue
    close = [c for c in columns if c.lower() == f.name.lower()]
    close += [c for c in difflib.get_close_matches(f.name, columns, n=3)
              if c not in close]
    if close:
      hint = "did you mean " + " or ".join(f"'{c}'" for c in close[:3]) + "?"
    else:
      shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
      hint = f"its columns are: {shown}"
    raise DataError(f"{spec.where(f)}: column '{f.name}' is not in {source} "
                    f"({hint})")


def _resolve_column(col: pd.Series, f: FeatureSpec, spec: ModelSpec,
                    source: str) -> ColumnDomain:
  where = spec.where(f)
  isna = col.isna().to_numpy()
  if isna.all():
    raise DataError(f"{source}: column '{f.name}' has no values (every cell is "
                    f"missing); remove it from the model file ({where}) or "
                    "fill it in")
  from_data = []
  fields = {}
  if f.bins is not None:
    x = _numeric(col, f.name, f.family, source)
    fields["bins"] = f.bins
    fields["categories"] = _bin_labels(f.bins)
    fields["bounds"] = (f.bins[0], f.bins[-1])
    if f.bounds is not None:      # a declared top- or bottom-code within the bins
      fields["bounds"] = (max(f.bins[0], f.bounds[0]), min(f.bins[-1], f.bounds[1]))
    if f.integer is None:
      fields["integer"] = bool(np.all(np.mod(x[~isna], 1) == 0))
      from_data.append("integer flag")
    else:
      fields["integer"] = f.integer
  elif f.family in _CATEGORICAL:
    fields["categories"] = _resolve_categories(col[~isna], f, where, source,
                                               from_data)
    if len(fields["categories"]) < 2:
      raise DataError(f"{where}: column '{f.name}' has the single category "
                      f"'{fields['categories'][0]}' in {source}; a constant "
                      "column carries no information: remove it from the "
                      "model file or declare its other categories with "
                      "'categories = ...'")
  else:
    x = _numeric(col, f.name, f.family, source)
    if f.family == "poisson":
      _check_counts(col, x, f.name, source)
      fields["integer"] = True
    else:
      fields.update(_resolve_normal(x[~isna], f, from_data))
    fields["bounds"] = f.bounds
  if f.missing is None:
    missing = bool(isna.any())
    from_data.append("missing flag")
  elif not f.missing and isna.any():
    raise DataError(f"{_row(col.index, isna, source)}: column '{f.name}' is "
                    f"missing but {where} declares 'missing = no'; declare "
                    "'missing' or drop incomplete rows (--drop_na)")
  else:
    missing = f.missing
  return ColumnDomain(name=f.name, family=f.family, missing=missing,
                      from_data=tuple(from_data), **fields)


def _resolve_categories(obs: pd.Series, f: FeatureSpec, where: str,
                        source: str, from_data: list) -> tuple[str, ...]:
  # labels of the distinct raw values only (converting every row to a string
  # costs seconds per million rows)
  raw = pd.Series(pd.unique(obs.to_numpy()), dtype=obs.dtype)
  distinct = pd.unique(_labels(raw))
  if f.family == "bernoulli" and len(distinct) > 2:
    shown = ", ".join(f"'{v}'" for v in sorted(distinct)[:3])
    shown += ", ..." if len(distinct) > 3 else ""
    raise DataError(f"{source}: column '{f.name}' has {len(distinct)} distinct "
                    f"values ({shown}) but {where} models it as "
                    "Bernoulli; use Categorical")
  if f.categories is not None:
    _checked_codes(obs, f.categories, f.name, source, where)
    return f.categories
  if f.family == "bernoulli" and len(distinct) < 2:
    raise DataError(f"{where}: Bernoulli column '{f.name}' has only the value "
                    f"'{distinct[0]}' in {source}; declare both labels with "
                    f"'categories = {distinct[0]}, <other label>'")
  from_data.append("categories (sorted)")
  return _sorted_labels(distinct)


def _resolve_normal(x: np.ndarray, f: FeatureSpec, from_data: list) -> dict:
  """Standardisation and integer flag of a Normal column (observed `x`)."""
  integer = f.integer
  if integer is None:
    integer = bool(np.all(x == np.rint(x)))
    from_data.append("integer flag")
  lo_hi = f.bounds
  if lo_hi is not None:
    x = np.clip(x, *lo_hi)
  inferred = []
  if f.loc is not None:
    shift = f.loc
  elif lo_hi is not None:
    shift = (lo_hi[0] + lo_hi[1]) / 2
  else:
    shift = float(np.mean(x))
    inferred.append("mean")
  if f.scale is not None:
    scale = f.scale
  elif lo_hi is not None:
    scale = (lo_hi[1] - lo_hi[0]) / 4  # the bounded interval maps to [-2, 2]
  else:
    scale = float(np.std(x)) or 1.0
    inferred.append("std")
  if inferred:
    from_data.append(f"standardisation ({'/'.join(inferred)})")
  return {"shift": float(shift), "scale": float(scale), "integer": integer}


# ------------------------------------------------------------ value helpers


def check_declared_missing(frame: pd.DataFrame, spec: ModelSpec, source: str) -> None:
  """Refuses a missing value in a column the model file declares 'missing = no'
  (the same message as `resolve_domain`; for data read in chunks).

  Raises:
    DataError: naming the file line, the column and the model file's line.
  """
  for f in spec.features:
    if f.missing is False and f.name in frame.columns:
      isna = frame[f.name].isna().to_numpy()
      if isna.any():
        raise DataError(f"{_row(frame.index, isna, source)}: column '{f.name}' is "
                        f"missing but {spec.where(f)} declares 'missing = no'; declare "
                        "'missing' or drop incomplete rows (--drop_na)")


def _row(index: pd.Index, bad: np.ndarray, source: str) -> str:
  """`source:line` of the first True in `bad` (header = line 1)."""
  label = index[int(np.argmax(bad))]
  if isinstance(label, (int, np.integer)):
    return f"{source}:{int(label) + 2}"
  return f"{source} (row {label!r})"


def _is_number_dtype(col: pd.Series) -> bool:
  return (pd.api.types.is_numeric_dtype(col)
          and not pd.api.types.is_bool_dtype(col))


def _numeric(col: pd.Series, name: str, family: str,
             source: str) -> np.ndarray:
  """float64 values of a Normal/Poisson column, NaN where missing."""
  if _is_number_dtype(col) or pd.api.types.is_bool_dtype(col):
    x = col.to_numpy(dtype=np.float64, na_value=np.nan)
  else:
    conv = pd.to_numeric(col, errors="coerce")
    bad = (conv.isna() & col.notna()).to_numpy()
    if bad.any():
      value = col.iloc[int(np.argmax(bad))]
      if family in _CATEGORICAL:   # only binned categorical columns are read as numbers
        raise DataError(f"{_row(col.index, bad, source)}: column '{name}' has the "
                        f"non-numeric value '{value}', but the model file declares it "
                        "binned ('bins = ...': a numeric column); fix the value, or remove "
                        "'bins' to model its values as categories")
      raise DataError(f"{_row(col.index, bad, source)}: column '{name}' has "
                      f"the non-numeric value '{value}', but it is modelled as "
                      f"{_DISPLAY[family]}; fix the value or model the column "
                      "as Categorical")
    x = conv.to_numpy(dtype=np.float64, na_value=np.nan)
  bad = np.isinf(x)
  if bad.any():
    raise DataError(f"{_row(col.index, bad, source)}: column '{name}' has an "
                    "infinite value; fix the data")
  bad = np.abs(np.nan_to_num(x)) > FLOAT32_MAX
  if bad.any():
    raise DataError(f"{_row(col.index, bad, source)}: column '{name}' has the "
                    f"value {x[np.argmax(bad)]:.3g}, beyond the range of the 32-bit "
                    f"floats jtwin computes in (magnitude at most {FLOAT32_MAX:.3g}); "
                    "fix the data")
  return x


def _check_counts(col: pd.Series, x: np.ndarray, name: str,
                  source: str) -> None:
  """Poisson values must be non-negative integers (NaN = missing is fine)."""
  for bad, what in ((x < 0, "a negative"), (x != np.rint(x), "a non-integer")):
    bad &= ~np.isnan(x)
    if bad.any():
      raise DataError(f"{_row(col.index, bad, source)}: column '{name}' has "
                      f"{what} value {col.iloc[int(np.argmax(bad))]}, but "
                      "Poisson counts are integers >= 0; model it as Normal")


def _labels(obs: pd.Series) -> pd.Series:
  """String form of observed values: 13 and 13.0 -> "13", " a " -> "a"."""
  if pd.api.types.is_integer_dtype(obs):
    return obs.astype(str)
  if _is_number_dtype(obs):
    x = obs.to_numpy(dtype=np.float64)
    integral = (x == np.rint(x)) & (np.abs(x) < _MAX_EXACT_INT)
    as_int = np.where(integral, x, 0).astype(np.int64).astype(str)
    return pd.Series(np.where(integral, as_int, x.astype(str)),
                     index=obs.index)
  return obs.astype(str).str.strip()


def _codes(obs: pd.Series, categories: tuple[str, ...]) -> np.ndarray:
  """Category code of each observed value, -1 where it is not a category."""
  if _is_number_dtype(obs):
    numbers = [_to_float(c) for c in categories]
    if None not in numbers and len(set(numbers)) == len(numbers):
      return pd.Index(numbers, dtype=np.float64).get_indexer(
          obs.to_numpy(dtype=np.float64))
  return pd.Index(list(categories), dtype=object).get_indexer(
      _labels(obs).to_numpy(dtype=object))


def _checked_codes(obs, categories, name, source, where=None) -> np.ndarray:
  codes = _codes(obs, categories)
  bad = codes < 0
  if bad.any():
    value = _labels(obs).iloc[int(np.argmax(bad))]
    declared = f"declared at {where}" if where else "of its domain"
    raise DataError(f"{_row(obs.index, bad, source)}: column '{name}' has the "
                    f"value '{value}', which is not among the categories "
                    f"{declared}; add it to 'categories =' or fix the data")
  return codes


def _to_float(text: str) -> Optional[float]:
  try:
    x = float(text)
  except ValueError:
    return None
  return x if math.isfinite(x) else None


def _sorted_labels(distinct) -> tuple[str, ...]:
  """Data-independent order: numerically if all are numbers, else as strings."""
  labels = [str(v) for v in distinct]
  numbers = [_to_float(v) for v in labels]
  if None not in numbers:
    return tuple(v for _, v in sorted(zip(numbers, labels)))
  return tuple(sorted(labels))


def _int_series(x: np.ndarray, obs: np.ndarray) -> pd.Series:
  ints = np.clip(np.where(obs, x, 0), -_MAX_EXACT_INT,
                 _MAX_EXACT_INT).astype(np.int64)
  if obs.all():
    return pd.Series(ints)
  return pd.Series(pd.arrays.IntegerArray(ints, ~obs))


def _significant(x: np.ndarray, digits: int) -> np.ndarray:
  """Rounds to `digits` significant digits (float32 data carry about 7), so
  that the CSV shows 1.62 rather than 1.6199999993671412."""
  with np.errstate(divide="ignore"):
    magnitude = np.floor(np.log10(np.abs(x)))
  shift = digits - 1 - np.where(np.isfinite(magnitude), magnitude, 0)
  power = 10.0**np.abs(shift)
  return np.where(shift >= 0, np.rint(x * power) / power,
                  np.rint(x / power) * power)


def _labels_series(categories, codes: np.ndarray, obs: np.ndarray):
  """Labels as ints or floats when they all are (canonically), else strings."""
  ints = [_to_int(c) for c in categories]
  if None not in ints:
    return _int_series(np.array(ints, dtype=np.float64)[codes], obs)
  numbers = [_to_float(c) for c in categories]
  if None not in numbers and all(str(n) == c
                                 for n, c in zip(numbers, categories)):
    return pd.Series(np.where(obs, np.array(numbers)[codes], np.nan))
  labels = np.array(categories, dtype=object)[codes]
  labels[~obs] = None
  return pd.Series(labels)


def _to_int(text: str) -> Optional[int]:
  """int(text) if `text` is exactly how that int is written, else None."""
  try:
    n = int(text)
  except ValueError:
    return None
  return n if str(n) == text and abs(n) < _MAX_EXACT_INT else None
