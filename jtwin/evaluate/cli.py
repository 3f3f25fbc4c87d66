"""Command-line glue for `jtwin evaluate` (wired into `jtwin.cli`)."""
from __future__ import annotations

import argparse
import os
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from jtwin.errors import DataError, ModelFileError

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
How good is a synthetic twin? Compares SYNTHETIC.csv with REAL.csv:
total variation distance of 1-, 2- and 3-way marginals (numeric columns with
more than 20 distinct values cut into --bins equal-width bins between the
real minimum and maximum, or on a model file's bins; other columns keep
their --max_levels most frequent values plus "(other)"; missing is its own
category), missing-rate errors, Cramér's V and Pearson differences, the
propensity-score MSE (pMSE) of logistic regressions telling real from
synthetic, Wasserstein-1 ratios of numeric columns and, with --target,
train-on-synthetic/test-on-real accuracy and AUROC of six classifiers
(scikit-learn's when installed: pip install 'jtwin[evaluate]') and their
synthetic ranking agreement.

This reads the real data: the summary and report are for the data holder,
not for release."""


def add_parser(subparsers) -> argparse.ArgumentParser:
  """Registers the `evaluate` sub-command on an argparse `subparsers`."""
  from jtwin._flags import _non_negative_int, _positive_int
  p = subparsers.add_parser(
      "evaluate", help="compare a synthetic twin with the real data",
      description=_DESCRIPTION,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("real", metavar="REAL.csv",
                 help="the real data the twin was made from")
  p.add_argument("synthetic", metavar="SYNTHETIC.csv",
                 help="the synthetic twin")
  p.add_argument("--test", metavar="REAL_TEST.csv", default=None,
                 help="real rows the generator never saw, for the utility "
                 "metrics (default: hold out a seeded 30%% of REAL.csv, "
                 "which flatters a twin trained on all of it)")
  p.add_argument("--target", metavar="COLUMN", default=None,
                 help="categorical column to predict for the utility "
                 "metrics (default: none; utility is skipped)")
  p.add_argument("--model", metavar="MODEL", default=None,
                 help="model file: evaluate only its columns, bin its "
                 "binned columns on their declared bins and Normal/Poisson "
                 "columns with public bounds on those bounds, treat its other "
                 "Categorical and Bernoulli columns as categorical (default: "
                 "all columns common to both CSV files)")
  p.add_argument("--result", metavar="RESULT.jtwin.npz", default=None,
                 help="the fit's result file, for the report header's "
                 "epsilon and delta (default: SYNTHETIC.jtwin.npz beside "
                 "SYNTHETIC.csv, if it exists)")
  p.add_argument("-o", "--output", metavar="REPORT_PREFIX", default=None,
                 help="write REPORT_PREFIX.json and REPORT_PREFIX.html "
                 "(default: only print the summary)")
  p.add_argument("--bins", type=_positive_int("--bins"), default=20, metavar="N",
                 help="equal-width bins for numeric columns with more than "
                 "20 distinct values (default: 20)")
  p.add_argument("--max_levels", type=_positive_int("--max_levels"), default=100, metavar="K",
                 help="categorical columns with more distinct values keep "
                 "the K most frequent real ones, the rest pooled as "
                 "'(other)' (default: 100)")
  p.add_argument("--max_model_rows", type=_non_negative_int("--max_model_rows"),
                 default=100_000, metavar="N",
                 help="rows of each table used to fit the pMSE and utility "
                 "models, a seeded sample of larger tables; 0 = all "
                 "(default: 100000)")
  p.add_argument("--classifiers", choices=("auto", "sklearn", "numpy"),
                 default="auto",
                 help="utility models: scikit-learn's if installed (auto), "
                 "always scikit-learn's, or jtwin's own NumPy ones "
                 "(default: auto)")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the sampled 3-way marginals and column pairs, "
                 "the real halves of the W1 baseline and the 30%% hold-out "
                 "(default: 0)")
  return p


def _read_csv(path: str, what: str) -> pd.DataFrame:
  from jtwin.data import check_header, check_row_lengths
  try:
    frame = pd.read_csv(path)
    check_header(path)
    check_row_lengths(path)
  except FileNotFoundError:
    raise DataError(f"{path}: {what} file not found; check the path") \
        from None
  except IsADirectoryError:
    raise DataError(f"{path}: is a directory, not a CSV file") from None
  except (pd.errors.ParserError, pd.errors.EmptyDataError,
          UnicodeDecodeError) as e:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataError(f"{path}: cannot read the {what} as CSV ({first})") \
        from None
  if len(frame) == 0:
    raise DataError(f"{path}: the {what} file has a header but no rows")
  from jtwin.evaluate.core import first_infinite
  found = first_infinite(frame)
  if found is not None:
    column, count, row = found
    raise DataError(f"{path}: column '{column}' has an infinite value on line {row + 2} "
                    f"({count} in all); give finite numbers, or empty cells for missing "
                    "values")
  return frame


def _parse_model_minimal(path: str) -> list[tuple[str, str, None, None]]:
  """Reads `name : dist` lines ('#' starts a comment) without jtwin.spec."""
  try:
    with open(path, encoding="utf-8-sig") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise ModelFileError(f"{path}: cannot read the model file "
                         f"({e.strerror or e})") from None
  out = []
  for number, line in enumerate(lines, 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    if ":" not in line:
      raise ModelFileError(f"{path}:{number}: expected 'column : "
                           f"distribution', got {line!r}")
    name, dist = line.split(":", 1)
    out.append((name.strip(), dist.split(";", 1)[0].strip().lower(), None,
                None))
  return out


def _model_features(path: str
                    ) -> list[tuple[str, str, Optional[tuple], Optional[tuple]]]:
  """(name, family, public bounds, declared bins) of each model feature."""
  try:
    import jtwin.spec as spec
  except ImportError:
    return _parse_model_minimal(path)
  return [(f.name, f.family.lower(), getattr(f, "bounds", None),
           getattr(f, "bins", None))
          for f in spec.parse_model_file(path).features]


def _check_declarations(args, tables) -> None:
  """Holds each file to the model file's declarations: a non-numeric value in a
  column declared numeric (Normal, Poisson, binned) is refused with its line;
  labels outside a column's declared categories are warned about (they are
  scored as they are, but the model file does not describe the data)."""
  import warnings
  from jtwin.data import _labels, _row
  from jtwin.spec import parse_model_file
  for f in parse_model_file(args.model).features:
    numeric = f.bins is not None or f.family.lower() in ("normal", "poisson")
    for frame, path in tables:
      col = frame[f.name]
      obs = col.notna().to_numpy()
      if numeric:
        bad = (pd.to_numeric(col, errors="coerce").isna().to_numpy() & obs)
        if bad.any():
          raise DataError(f"{_row(col.index, bad, path)}: column '{f.name}' has the "
                          f"non-numeric value '{col.iloc[int(np.argmax(bad))]}', but "
                          f"{args.model} declares it numeric; fix the file or the model file")
      elif f.categories is not None:
        labels = _labels(col[obs])
        extra = sorted(set(labels) - set(f.categories))
        if extra:
          shown = ", ".join(repr(x) for x in extra[:3]) + (", ..." if len(extra) > 3 else "")
          warnings.warn(f"{path}: column '{f.name}' has {len(extra)} label(s) ({shown}) that "
                        f"{args.model} does not declare (categories = "
                        f"{', '.join(f.categories[:4])}{', ...' if len(f.categories) > 4 else ''}"
                        "): the model file does not describe this file", stacklevel=2)


class _Columns(NamedTuple):
  """What the model file (or the CSV headers) say about the columns."""
  columns: list
  categorical: list
  numeric: list  # declared numeric: Normal, Poisson, binned Categorical
  bins: dict  # explicit edges: declared bins, or bins on public bounds


def _columns(args, real, synth) -> _Columns:
  """The evaluated columns, the categorical and numeric ones, explicit bins.

  With a model file: a Categorical column with `bins` is numeric and binned
  on exactly those (public) edges; Normal and Poisson columns are numeric,
  binned on `--bins` equal-width bins between their public bounds when they
  have bounds; other Categorical and Bernoulli columns are categorical.
  """
  if args.model is None:
    columns = [c for c in real.columns if c in synth.columns]
    if not columns:
      raise DataError(f"{args.synthetic}: no column in common with "
                      f"{args.real}")
    absent = [c for c in real.columns if c not in synth.columns]
    if absent:
      import warnings
      warnings.warn(f"{args.synthetic} lacks column(s) {absent} of {args.real}: they are "
                    "NOT scored, so the scores cover only the shared columns (pass --model "
                    "to score exactly the modelled columns)", stacklevel=2)
    return _Columns(columns, [], [], {})
  features = _model_features(args.model)
  for table, path in ((real, args.real), (synth, args.synthetic)):
    absent = [f[0] for f in features if f[0] not in table.columns]
    if absent:
      raise DataError(f"{path}: lacks column(s) {absent} named in model "
                      f"file {args.model}")
  _check_declarations(args, ((real, args.real), (synth, args.synthetic)))
  columns = [f[0] for f in features]
  bins, categorical, numeric = {}, [], []
  for name, family, bounds, edges in features:
    if edges is not None:
      bins[name] = np.asarray(edges, dtype=float)
      numeric.append(name)
    elif family in ("categorical", "bernoulli"):
      categorical.append(name)
    else:
      numeric.append(name)
      if bounds is not None and bounds[1] > bounds[0]:
        bins[name] = np.linspace(bounds[0], bounds[1], args.bins + 1)
  return _Columns(columns, categorical, numeric, bins)


def _mismatch_warnings(real: pd.DataFrame, synth: pd.DataFrame, columns, paths) -> None:
  """Warns of scored columns whose synthetic values cannot match the real ones.

  A column numeric in one file and text in the other, or text columns
  without a single label in common, score the worst possible TVD (1) for
  reasons of format, not of quality: usually a twin written by another tool
  or read with other types.
  """
  import warnings
  for c in columns:
    r, s_ = real[c].dropna(), synth[c].dropna()
    if len(r) == 0 or len(s_) == 0:
      continue
    kind = lambda x: ("numbers" if pd.api.types.is_numeric_dtype(x)
                      and not pd.api.types.is_bool_dtype(x) else "labels")
    if kind(r) != kind(s_):
      warnings.warn(f"column '{c}' holds {kind(r)} in {paths[0]} but {kind(s_)} in "
                    f"{paths[1]}: its scores compare values that cannot match; check "
                    "how the synthetic file was written", stacklevel=2)
    elif kind(r) == "labels" and not set(map(str, r.unique())) & set(map(str, s_.unique())):
      warnings.warn(f"column '{c}': no label of {paths[1]} occurs in {paths[0]} (e.g. "
                    f"{str(s_.iloc[0])!r} against {str(r.iloc[0])!r}): its scores compare "
                    "values that cannot match; check how the synthetic file was written",
                    stacklevel=2)


def _privacy(args) -> Optional[dict]:
  """epsilon, delta and mode from the result file, or None if there is none.

  The file is read with numpy alone (no pickle, no JAX): only its
  `meta.json` entry is used.

  Raises:
    DataError: `--result` was given and is missing or not a result file.
  """
  path = args.result
  if path is None:
    stem = args.synthetic[:-4] if args.synthetic.endswith(".csv") else None
    path = f"{stem}.jtwin.npz" if stem else None
    if path is None or not os.path.isfile(path):
      return None
  import json

  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(z["meta.json"].tobytes().decode("utf-8"))
    privacy = meta.get("privacy") or {}
  except FileNotFoundError:
    raise DataError(f"{path}: result file not found; check --result") \
        from None
  except Exception as e:  # not an npz, no meta.json, bad JSON
    if args.result is None:
      return None
    raise DataError(f"{path}: not a readable jtwin result file "
                    f"({type(e).__name__})") from None
  columns = _result_columns(meta)
  if columns is not None and set(columns) != set(_header_of(args.synthetic)):
    if args.result is None:       # found beside SYNTHETIC by its name: not this twin's
      return None
    raise DataError(f"{path}: this result was fitted on the columns "
                    f"{', '.join(columns[:6])}{', ...' if len(columns) > 6 else ''}, not "
                    f"those of {args.synthetic}; pass the result file of this twin with "
                    "--result")
  return {"path": path, "epsilon": privacy.get("epsilon"),
          "delta": privacy.get("delta"), "mode": privacy.get("mode")}


def _result_columns(meta: dict) -> Optional[list]:
  """The columns a result's twin has (None when unknown, e.g. a custom model's,
  whose postprocess() may change them)."""
  model = meta.get("model") or {}
  if model.get("kind") == "custom":
    return None
  if model.get("cells"):
    names = [c.get("name") for c in model["cells"]]
    for d in sorted(model.get("derived") or (), key=lambda d: d.get("position", 0)):
      names.insert(int(d.get("position", len(names))), d.get("name"))
    return names
  domain = (meta.get("domain") or {}).get("columns")
  return [c.get("name") for c in domain] if domain else None


def _header_of(path: str) -> list:
  return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def run(args: argparse.Namespace) -> int:
  """Runs `jtwin evaluate`: prints the summary, writes the report if -o.

  Returns:
    0 on success.

  Raises:
    DataError: a CSV file is missing or unreadable, columns do not match,
      the target is unusable or the output directory does not exist.
    ModelFileError: the model file is unreadable or malformed.
  """
  from jtwin.evaluate.core import evaluate
  from jtwin.evaluate.encoding import is_numeric_column
  from jtwin.evaluate.report import format_summary, write_report

  if args.output is not None:
    from jtwin._atomic import check_output_path, check_output_prefix
    check_output_prefix(args.output)     # a folder ("DIR/") would give hidden ".json"
    for suffix in (".json", ".html"):
      check_output_path(args.output + suffix, inputs=[args.real, args.synthetic, args.test,
                                                      args.model, args.result])
  real = _read_csv(args.real, "real data")
  synth = _read_csv(args.synthetic, "synthetic data")
  test = _read_csv(args.test, "test data") if args.test else None
  columns, categorical, declared_numeric, bins = _columns(args, real, synth)
  _mismatch_warnings(real, synth, columns, (args.real, args.synthetic))
  privacy = _privacy(args)
  if args.target is not None and args.target not in columns:
    raise DataError(f"--target {args.target!r}: not a column of both "
                    f"{args.real} and {args.synthetic}"
                    + (" within the model file" if args.model else ""))
  if test is not None:
    absent = [c for c in columns if c not in test.columns]
    if absent:
      raise DataError(f"{args.test}: the --test file lacks column(s) {absent} of "
                      f"{args.real} and {args.synthetic}; give it the same columns")
    test = test[columns]
  numeric = [c for c in columns if c not in categorical
             and is_numeric_column(real[c])]
  bins_arg = {**{c: args.bins for c in numeric}, **bins}
  try:
    results = evaluate(real[columns], synth[columns], test=test,
                       target=args.target, bins=bins_arg,
                       categorical=categorical, numeric=declared_numeric,
                       seed=args.seed, max_levels=args.max_levels,
                       max_model_rows=args.max_model_rows or None,
                       backend=args.classifiers)
  except DataError:
    raise
  except ValueError as e:  # bad target and the like: the user's input
    raise DataError(str(e)) from None
  if args.target is not None and args.test is None:
    print("note: no --test given; utility is tested on a held-out 30% of "
          "REAL.csv")
  print(format_summary(results))
  if args.output is not None:
    from jtwin import __version__

    header = {"real": args.real, "synthetic": args.synthetic,
              "test": args.test, "model": args.model,
              "jtwin_version": __version__, "privacy": privacy}
    for path in write_report(results, real[columns], synth[columns],
                             args.output, header=header):
      print(f"wrote {path}")
  return 0
