"""Model files: twinify's `model.txt` grammar plus optional public domains.

A model file has one line per modelled column::

  # comment
  column name : Distribution ; option ; option = value ...

The part before `;` is exactly twinify's grammar (twinify.md §2.1): text after
the first `#` is a comment, lines are stripped, empty lines are skipped, the
column name is everything before the first `:` (spaces inside are kept) and
the distribution is one of Normal, Bernoulli, Categorical, Poisson in any
case. Every twinify model file therefore parses to the same columns, order and
families.

The optional `;`-separated options declare the column's *public* domain, so
that nothing about it has to be read off the private data:

  ============  =====================  =======================================
  option        families               meaning
  ============  =====================  =======================================
  categories    Categorical, Bernoulli `categories = a, b, "c, d"` (CSV syntax)
  bins          Categorical            `bins = 0, 1, 5000, 99999`: a numeric
                                       column modelled as the category of its
                                       bin (public edges); output is drawn
                                       uniformly within the bin
  points        Categorical with bins  `points = 0, 40`: each value gets a cell
                                       of its own (spikes are kept)
  bounds        Normal, Poisson,       `bounds = lo, hi`; values are clipped
                Categorical            (binned: a declared top-code; with
                                       `integer` and no bins: one cell per
                                       integer value)
  loc, scale    Normal                 public standardisation (x - loc)/scale
  integer       Normal, Poisson, bins  round to integers on output
  missing       all                    the column may be missing (yes/no)
  determined_by all                    `determined_by = education`: the column
                                       is a function of that column (public
                                       schema knowledge; `jtwin napsumq`
                                       derives it instead of modelling it)
  ============  =====================  =======================================

This module is pure Python (no pandas, no JAX) so that it imports instantly.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from typing import Optional

from jtwin.errors import ModelFileError

__all__ = [
    "FAMILIES",
    "FeatureSpec",
    "ModelSpec",
    "parse_model_file",
    "parse_model_text",
]

FAMILIES = ("normal", "bernoulli", "categorical", "poisson")

_DISPLAY = {
    "normal": "Normal",
    "bernoulli": "Bernoulli",
    "categorical": "Categorical",
    "poisson": "Poisson",
}

# Options each family accepts, in the order they are listed and written.
_OPTIONS = {
    "normal": ("bounds", "loc", "scale", "integer", "missing", "determined_by"),
    "poisson": ("bounds", "integer", "missing", "determined_by"),
    "categorical": ("categories", "bins", "points", "bounds", "integer", "missing",
                    "determined_by"),
    "bernoulli": ("categories", "missing", "determined_by"),
}
_ALL_OPTIONS = ("categories", "bins", "points", "bounds", "loc", "scale", "integer", "missing",
                "determined_by")
# an integer Categorical column declared by its range gets one cell per value,
# up to this many values (more: give bins)
MAX_VALUE_CELLS = 1000
_FLAGS = ("integer", "missing")
_YES = ("yes", "true")
_NO = ("no", "false")


QUERY_FILE_SPEC = "(every column of the data)"   # path of a spec made for a query file


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """One line of a model file.

  Attributes:
    name: column name (stripped).
    family: "normal", "bernoulli", "categorical" or "poisson".
    categories: declared category labels (strings, in code order) or None.
    bins: declared bin edges of a binned numeric Categorical column
      (strictly increasing, at least 3), or None.
    bounds: declared `(lo, hi)` with lo < hi, or None.
    loc: declared standardisation shift (Normal) or None.
    scale: declared standardisation scale > 0 (Normal) or None.
    integer: declared integer flag, or None when not declared.
    missing: declared missing flag, or None when not declared.
    determined_by: the name of the column this one is a function of
      (declared public knowledge, e.g. a code and its label), or None.
    line: 1-based line number in the model file (0 when not from a file);
      ignored by `==`.
  """
  name: str
  family: str
  categories: Optional[tuple[str, ...]] = None
  bins: Optional[tuple[float, ...]] = None
  bounds: Optional[tuple[float, float]] = None
  loc: Optional[float] = None
  scale: Optional[float] = None
  integer: Optional[bool] = None
  missing: Optional[bool] = None
  determined_by: Optional[str] = None
  line: int = dataclasses.field(default=0, compare=False)

  def to_text(self) -> str:
    """This feature as one model-file line (with all declared options)."""
    if not self.name or any(c in self.name for c in ":#\n\r"):
      raise ValueError(f"column name {self.name!r} cannot be written to a "
                       "model file (it is empty or contains ':', '#' or a "
                       "line break)")
    parts = [f"{self.name} : {_DISPLAY[self.family]}"]
    if self.categories is not None:
      parts.append("categories = " +
                   ", ".join(_quote_label(c) for c in self.categories))
    if self.bins is not None:
      parts.append("bins = " + ", ".join(_fmt(e) for e in self.bins))
    if self.bounds is not None:
      parts.append(f"bounds = {_fmt(self.bounds[0])}, {_fmt(self.bounds[1])}")
    if self.loc is not None:
      parts.append(f"loc = {_fmt(self.loc)}")
    if self.scale is not None:
      parts.append(f"scale = {_fmt(self.scale)}")
    for flag in _FLAGS:
      value = getattr(self, flag)
      if value is not None:
        parts.append(flag if value else f"{flag} = no")
    if self.determined_by is not None:
      parts.append(f"determined_by = {self.determined_by}")
    return " ; ".join(parts)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A parsed model file.

  Attributes:
    features: the modelled columns, in file order.
    path: the file it was read from (used in error messages), or None;
      ignored by `==`.
  """
  features: tuple[FeatureSpec, ...]
  path: Optional[str] = dataclasses.field(default=None, compare=False)

  @property
  def names(self) -> tuple[str, ...]:
    """Column names in model order."""
    return tuple(f.name for f in self.features)

  def where(self, feature: FeatureSpec) -> str:
    """`path:line` prefix for messages about `feature`.

    A spec made from the data for a query file (`jtwin.marginals.queries`,
    path QUERY_FILE_SPEC) has no file to point at: the messages then say to
    write a model file."""
    if self.path == QUERY_FILE_SPEC:
      return f"a model file line for '{feature.name}' (a query file cannot declare it)"
    return f"{self.path or 'model file'}:{feature.line}"

  def to_text(self) -> str:
    """The model file text; `parse_model_text(s.to_text())` equals `s`."""
    return "".join(f.to_text() + "\n" for f in self.features)


def parse_model_text(text: str, path: str = "<string>") -> ModelSpec:
  """Parses the text of a model file.

  Args:
    text: the file contents.
    path: file name used in error messages and stored in the result.

  Returns:
    The `ModelSpec`, features in file order.

  Raises:
    ModelFileError: one line `path:line: problem (what to do)`.

  Examples:
    >>> spec = parse_model_text("Height (cm) : normal  # comment\\n"
    ...                         "sex : Bernoulli ; categories = F, M\\n")
    >>> [(f.name, f.family, f.categories) for f in spec.features]
    [('Height (cm)', 'normal', None), ('sex', 'bernoulli', ('F', 'M'))]
  """
  features = []
  first_line = {}
  # `splitlines` and `split("#")` exactly as twinify's `parse_model`.
  for number, raw in enumerate(text.splitlines(), start=1):
    line = raw.split("#")[0].strip()
    if not line:
      continue
    where = f"{path}:{number}"
    if ":" not in line:
      raise ModelFileError(f"{where}: expected 'column name : Distribution', "
                           f"got {line!r}")
    name, rest = line.split(":", 1)
    name = name.strip()
    if not name:
      raise ModelFileError(f"{where}: empty column name before ':'")
    if name in first_line:
      raise ModelFileError(f"{where}: column '{name}' is already modelled on "
                           f"line {first_line[name]}; list each column once")
    segments = _split_options(rest, where)
    token = segments[0].strip()
    family = token.lower()
    if family not in _OPTIONS:
      raise ModelFileError(
          f"{where}: unknown distribution '{token}' for column '{name}' "
          "(use Normal, Bernoulli, Categorical or Poisson)")
    options = _parse_options(segments[1:], name, family, where)
    first_line[name] = number
    features.append(FeatureSpec(name=name, family=family, line=number,
                                **options))
  if not features:
    raise ModelFileError(f"{path}: the model file lists no columns; add lines "
                         "like 'age : Normal'")
  _check_determined_by(features, path)
  return ModelSpec(features=tuple(features), path=path)


def _check_determined_by(features, path) -> None:
  """`determined_by` names another modelled column that is not itself determined."""
  by_name = {f.name: f for f in features}
  for f in features:
    if f.determined_by is None:
      continue
    where = f"{path}:{f.line}"
    parent = by_name.get(f.determined_by)
    if parent is None:
      raise ModelFileError(f"{where}: 'determined_by = {f.determined_by}' for '{f.name}': "
                           "no such column in this model file; name a modelled column")
    if parent is f:
      raise ModelFileError(f"{where}: '{f.name}' cannot be determined by itself")
    if parent.determined_by is not None:
      raise ModelFileError(f"{where}: '{f.name}' is determined by '{parent.name}', which is "
                           f"itself determined by '{parent.determined_by}'; name "
                           f"'{parent.determined_by}' instead")


def parse_model_file(path: str) -> ModelSpec:
  """Reads and parses a model file (UTF-8, a byte-order mark is ignored).

  Raises:
    ModelFileError: the file cannot be read, or does not parse.
  """
  try:
    with open(path, encoding="utf-8-sig") as f:
      text = f.read()
  except FileNotFoundError:
    raise ModelFileError(f"{path}: model file not found; check the path") \
        from None
  except IsADirectoryError:
    raise ModelFileError(f"{path}: is a directory, not a model file") from None
  except UnicodeDecodeError as e:
    raise ModelFileError(f"{path}: not UTF-8 text ({e.reason} at byte "
                         f"{e.start}); save the model file as UTF-8") from None
  except OSError as e:
    raise ModelFileError(f"{path}: cannot read the model file "
                         f"({e.strerror or e})") from None
  return parse_model_text(text, path=str(path))


def _split_options(rest: str, where: str) -> list[str]:
  """Splits on `;` outside double quotes."""
  segments, current, quoted = [], [], False
  for char in rest:
    if char == '"':
      quoted = not quoted
    if char == ";" and not quoted:
      segments.append("".join(current))
      current = []
    else:
      current.append(char)
  if quoted:
    raise ModelFileError(f"{where}: unterminated '\"' quote; close it or "
                         "remove it")
  segments.append("".join(current))
  return segments


def _parse_options(segments, name, family, where) -> dict:
  """Parses `key` / `key = value` segments into FeatureSpec keyword args."""
  allowed = _OPTIONS[family]
  display = _DISPLAY[family]
  out = {}
  for segment in segments:
    segment = segment.strip()
    if not segment:
      continue
    key, has_value, value = segment.partition("=")
    key, value = key.strip().lower(), value.strip()
    if key not in allowed:
      what = (f"unknown option '{key}' for '{name}'" if key not in _ALL_OPTIONS
              else f"option '{key}' does not apply to {display} column "
              f"'{name}'")
      raise ModelFileError(f"{where}: {what} (expected one of: "
                           f"{', '.join(allowed)})")
    if key in out:
      raise ModelFileError(f"{where}: option '{key}' given twice for "
                           f"'{name}'; keep one")
    if key in _FLAGS:
      out[key] = _parse_flag(key, value if has_value else "yes", name, where)
      continue
    if not value:
      raise ModelFileError(f"{where}: option '{key}' for '{name}' needs a "
                           f"value, e.g. '{_EXAMPLES[key]}'")
    out[key] = _PARSERS[key](value, name, family, where)
  if family == "categorical":
    _numeric_cells(out, name, where)
  if family == "poisson" and out.get("integer") is False:
    raise ModelFileError(f"{where}: Poisson column '{name}' is always integer; "
                         "remove 'integer = no'")
  return out


_EXAMPLES = {
    "categories": "categories = a, b, c",
    "bins": "bins = 0, 10, 20, 100",
    "points": "points = 0, 40",
    "bounds": "bounds = 0, 100",
    "loc": "loc = 0",
    "scale": "scale = 1",
    "determined_by": "determined_by = education",
}


def _numeric_cells(out: dict, name: str, where: str) -> None:
  """Checks and expands the numeric-cell options of a Categorical column.

  * `bounds = lo, hi ; integer` without bins: one cell per integer value in
    [lo, hi] (bins lo, lo+1, ..., hi+1; output clipped to hi);
  * `bins = ... ; bounds = lo, hi`: the bounds are a declared top- (or
    bottom-) code: synthetic values are clipped to them;
  * `points = p1, p2, ...` (with bins and a declared integer flag): each p gets
    a cell of its own, [p, p+1) for integer columns, exactly p otherwise; so a
    spike (40 hours, a capital gain of 0) is reproduced rather than spread
    uniformly over its bin.

  The result is plain `bins` (and `bounds`), so the rest of jtwin sees
  ordinary binned columns and `to_text` writes the expanded edges.
  """
  if "categories" in out and ({"bins", "points", "bounds"} & set(out)):
    extra = sorted({"bins", "points", "bounds"} & set(out))[0]
    raise ModelFileError(f"{where}: give either 'categories' or '{extra}' for "
                         f"'{name}', not both")
  if "bounds" in out and "bins" not in out:
    if out.get("integer") is not True:
      raise ModelFileError(f"{where}: 'bounds' on Categorical column '{name}' needs "
                           "'bins = ...' or 'integer' (one cell per integer value)")
    lo, hi = math.ceil(out["bounds"][0]), math.floor(out["bounds"][1])
    if hi < lo + 1:
      raise ModelFileError(f"{where}: bounds for '{name}' contain fewer than 2 integers")
    if hi - lo + 1 > MAX_VALUE_CELLS:
      raise ModelFileError(f"{where}: '{name}' has {hi - lo + 1} integer values in its "
                           f"bounds, more than {MAX_VALUE_CELLS} cells; give 'bins = ...'")
    out["bins"] = tuple(float(v) for v in range(lo, hi + 2))
    out["bounds"] = (float(lo), float(hi))
  if "integer" in out and "bins" not in out:
    raise ModelFileError(f"{where}: option 'integer' applies to a binned "
                         f"Categorical column; add 'bins = ...' (or 'bounds = lo, hi' "
                         f"for one cell per value) for '{name}' or remove 'integer'")
  if "bins" in out and "bounds" in out:
    lo, hi = out["bounds"]
    if not (lo < out["bins"][-1] and hi > out["bins"][0]):
      raise ModelFileError(f"{where}: bounds for '{name}' lie outside its bins")
  if "points" in out:
    if "bins" not in out:
      raise ModelFileError(f"{where}: 'points' for '{name}' need 'bins = ...'")
    if "integer" not in out:
      raise ModelFileError(f"{where}: 'points' for '{name}' need 'integer' or "
                           "'integer = no' declared (a point cell is [p, p+1) for integer "
                           "columns, exactly p otherwise)")
    edges, top = set(out["bins"]), out["bins"][-1]
    for p in out.pop("points"):
      if not out["bins"][0] <= p <= top:
        raise ModelFileError(f"{where}: point {_fmt(p)} for '{name}' is outside its bins "
                             f"[{_fmt(out['bins'][0])}, {_fmt(top)}]")
      if out["integer"] and p != int(p):
        raise ModelFileError(f"{where}: point {_fmt(p)} for integer column '{name}' is "
                             "not an integer")
      edges |= {p, p + 1.0 if out["integer"] else math.nextafter(p, math.inf)}
    if max(edges) > top:     # a point at the top edge: keep the top as a bound
      lo, hi = out.get("bounds", (out["bins"][0], top))
      out["bounds"] = (lo, min(hi, top))
    out["bins"] = tuple(sorted(edges))


def _parse_points(value, name, family, where) -> tuple[float, ...]:
  del family
  points = tuple(_parse_number(p.strip(), "points", name, where) for p in value.split(","))
  if len(set(points)) != len(points):
    raise ModelFileError(f"{where}: points for '{name}' repeat a value, got '{value}'")
  return points


def _parse_flag(key, value, name, where) -> bool:
  if value.lower() in _YES:
    return True
  if value.lower() in _NO:
    return False
  raise ModelFileError(f"{where}: option '{key}' for '{name}' must be yes or "
                       f"no, not '{value}'")


def _parse_categories(value, name, family, where) -> tuple[str, ...]:
  try:
    rows = list(csv.reader([value], skipinitialspace=True))
  except csv.Error as e:
    raise ModelFileError(f"{where}: cannot read the categories of '{name}' "
                         f"({e}); quote labels like \"a, b\"") from None
  labels = tuple(label.strip() for label in rows[0]) if rows else ()
  if any(not label for label in labels):
    raise ModelFileError(f"{where}: empty category label for '{name}'; "
                         "remove the extra ','")
  seen = set()
  for label in labels:
    if label in seen:
      raise ModelFileError(f"{where}: category '{label}' listed twice for "
                           f"'{name}'")
    seen.add(label)
  if family == "bernoulli" and len(labels) != 2:
    raise ModelFileError(f"{where}: Bernoulli column '{name}' needs exactly 2 "
                         f"categories, got {len(labels)}; use Categorical for "
                         "more")
  return labels


def _parse_number(text, key, name, where) -> float:
  try:
    number = float(text)
  except ValueError:
    number = math.nan
  if not math.isfinite(number):
    raise ModelFileError(f"{where}: {key} for '{name}' must be a finite "
                         f"number, got '{text}'")
  return number


def _parse_bounds(value, name, family, where) -> tuple[float, float]:
  parts = [p.strip() for p in value.split(",")]
  if len(parts) != 2:
    raise ModelFileError(f"{where}: bounds for '{name}' must be two numbers "
                         f"'lo, hi', got '{value}'")
  lo, hi = (_parse_number(p, "bounds", name, where) for p in parts)
  if not lo < hi:
    raise ModelFileError(f"{where}: bounds for '{name}' need lo < hi, got "
                         f"'{value}'")
  if family == "poisson" and (lo < 0 or lo != int(lo) or hi != int(hi)):
    raise ModelFileError(f"{where}: bounds for Poisson column '{name}' must be "
                         f"non-negative integers, got '{value}'")
  return lo, hi


def _parse_bins(value, name, family, where) -> tuple[float, ...]:
  del family
  edges = tuple(_parse_number(p.strip(), "bins", name, where) for p in value.split(","))
  if len(edges) < 3:
    raise ModelFileError(f"{where}: bins for '{name}' need at least 3 edges "
                         f"(2 bins), got '{value}'")
  if any(not a < b for a, b in zip(edges, edges[1:])):
    raise ModelFileError(f"{where}: bin edges for '{name}' must increase "
                         f"strictly, got '{value}'")
  return edges


def _parse_loc(value, name, family, where) -> float:
  del family
  return _parse_number(value, "loc", name, where)


def _parse_scale(value, name, family, where) -> float:
  del family
  scale = _parse_number(value, "scale", name, where)
  if scale <= 0:
    raise ModelFileError(f"{where}: scale for '{name}' must be > 0, got "
                         f"'{value}'")
  return scale


def _parse_determined_by(value, name, family, where) -> str:
  del name, family, where
  return value


_PARSERS = {
    "determined_by": _parse_determined_by,
    "categories": _parse_categories,
    "bins": _parse_bins,
    "points": _parse_points,
    "bounds": _parse_bounds,
    "loc": _parse_loc,
    "scale": _parse_scale,
}


def _fmt(number: float) -> str:
  """Shortest text that parses back to `number` (integers without '.0')."""
  if number == int(number) and abs(number) < 1e15:
    return str(int(number))
  return repr(float(number))


def _quote_label(label: str) -> str:
  """A category label in model-file CSV syntax, quoted when needed."""
  if any(c in label for c in "#\n\r") or label != label.strip() or not label:
    raise ValueError(f"category label {label!r} cannot be written to a model "
                     "file (empty, surrounding spaces, '#' or a line break)")
  if any(c in label for c in ',";'):
    return '"' + label.replace('"', '""') + '"'
  return label
