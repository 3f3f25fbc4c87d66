"""twinify NAPSU-MQ query files, and the model spec used with one.

A query file lists one clique (marginal query) per line, column names
separated by commas. jtwin strips whitespace around every name (twinify 2.0
forgets to, so `Age, Height` fails there), skips blank lines and `#`
comments, and checks every name against the data.

With a query file as MODEL there is no model file, so (as in twinify, which
models every column of the data as categorical) every column of the data is
modelled: numeric columns with many distinct values as binned numeric
columns, the rest as categorical. Everything such a spec needs is read off
the data and listed in the inferred-from-data warning.
"""
from __future__ import annotations

import os

import pandas as pd

from jtwin.errors import ModelFileError

__all__ = ["MAX_CATEGORIES", "is_query_file", "parse_query_file", "spec_from_data"]


def _lines(path: str, what: str = "model file") -> list:
  if os.path.isdir(path):
    raise ModelFileError(f"{path}: is a directory, not a {what}")
  try:
    with open(path, encoding="utf-8-sig") as f:
      return f.read().splitlines()
  except FileNotFoundError:
    raise ModelFileError(f"{path}: {what} not found; check the path") from None
  except UnicodeDecodeError:
    from jtwin.data import _bad_utf8_place
    place = _bad_utf8_place(path)
    raise ModelFileError(f"{path}: not UTF-8 text{f' ({place})' if place else ''}; save "
                         f"the {what} as UTF-8") from None
  except OSError as e:
    raise ModelFileError(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def is_query_file(path: str) -> bool:
  """True if no non-comment line has a ':' (a model file line always has one).

  Raises:
    ModelFileError: the file is missing, unreadable, a directory or empty.
  """
  body = [ln.split("#")[0].strip() for ln in _lines(path, "model or query file")]
  body = [ln for ln in body if ln]
  if not body:
    raise ModelFileError(f"{path}: the file has no queries or columns; write a model file "
                         "('column : Distribution' per line) or a query file (one clique "
                         "per line, column names separated by commas)")
  return not any(":" in ln for ln in body)


MAX_CLIQUE = 3   # the mixture's closed-form marginals go up to 3-way tables


def parse_query_file(path: str, columns=None, *, what: str = "query file",
                     columns_of: str = "the data") -> list:
  """Cliques of a query file: a list of lists of column names.

  Args:
    path: the file.
    columns: if given, every name must be one of these.
    what: the file's role in messages ("query file", "query file (--queries)").
    columns_of: where `columns` come from, in messages ("the data", "the model file").

  Raises:
    ModelFileError: empty file, an empty name, an unknown column or a clique
      of more than 3 columns (one line naming `path:line`).
  """
  cliques = []
  for number, raw in enumerate(_lines(path, what), start=1):
    line = raw.split("#")[0].strip()
    if not line:
      continue
    names = [x.strip() for x in line.split(",")]
    if any(not x for x in names):
      raise ModelFileError(f"{path}:{number}: empty column name in {line!r}; separate "
                           "column names by single commas")
    if columns is not None:
      for x in names:
        if x not in columns:
          raise ModelFileError(f"{path}:{number}: column '{x}' is not in {columns_of}; "
                               "check the spelling")
    distinct = list(dict.fromkeys(names))
    if len(distinct) < len(names):
      import warnings
      twice = next(x for x in distinct if names.count(x) > 1)
      warnings.warn(f"{path}:{number}: column '{twice}' appears more than once in the clique; "
                    f"it is the clique ({', '.join(distinct)})" + (
                        ", a 1-way table, which is measured anyway" if len(distinct) == 1
                        else ""))
    if len(distinct) > MAX_CLIQUE:
      raise ModelFileError(f"{path}:{number}: the clique has {len(distinct)} columns; jtwin "
                           f"measures cliques of at most {MAX_CLIQUE} columns: split it into "
                           f"cliques of {MAX_CLIQUE} or fewer")
    cliques.append(distinct)
  if not cliques:
    raise ModelFileError(f"{path}: the query file has no queries; write one clique per "
                         "line, column names separated by commas")
  return cliques


MAX_CATEGORIES = 32


def spec_from_data(df: pd.DataFrame, max_categories: int = MAX_CATEGORIES, *,
                   source: str = "the data"):
  """A model spec of every column of `df` (domains inferred, so listed).

  Raises:
    ModelFileError: a column without a name in the header (pandas calls it
      'Unnamed: k'), or a name a model file cannot hold; `source` names the
      data file in the message.
  """
  import re
  from jtwin.spec import parse_model_text
  lines = []
  for k, name in enumerate(df.columns, start=1):
    col = df[name]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    family = "Normal" if numeric and col.nunique(dropna=True) > max_categories else "Categorical"
    if re.fullmatch(r"Unnamed: \d+", str(name)):
      raise ModelFileError(f"{source}: column {k} has no name in the header; name it (a "
                           "query file models every column), or write a model file without it")
    if any(ch in str(name) for ch in ":#\n\r") or not str(name).strip():
      raise ModelFileError(f"{source}: column name {name!r} cannot be used with a query file; "
                           "write a model file instead")
    lines.append(f"{name} : {family}")
  from jtwin.spec import QUERY_FILE_SPEC
  return parse_model_text("\n".join(lines) + "\n", path=QUERY_FILE_SPEC)
