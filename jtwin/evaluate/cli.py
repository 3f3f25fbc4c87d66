"""Command-line glue for `jtwin evaluate` (wired into `jtwin.cli`)."""
from __future__ import annotations

import argparse
import os
from typing import Optional

import numpy as np
import pandas as pd

from jtwin.errors import DataError, ModelFileError

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
How good is a synthetic twin? Compares SYNTHETIC.csv with REAL.csv:
total variation distance of 1-, 2- and 3-way marginals (numeric columns with
more than 20 distinct values cut into --bins equal-width bins between the
real minimum and maximum; missing is its own category), missing-rate errors,
Cramér's V and Pearson differences, the propensity-score MSE (pMSE) of
logistic regressions telling real from synthetic, Wasserstein-1 ratios of
numeric columns and, with --target, train-on-synthetic/test-on-real accuracy
and AUROC of six simple classifiers and their synthetic ranking agreement.

This reads the real data: the summary and report are for the data holder,
not for release."""


def add_parser(subparsers) -> argparse.ArgumentParser:
  """Registers the `evaluate` sub-command on an argparse `subparsers`."""
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
                 help="model file: evaluate only its columns, treat its "
                 "Categorical and Bernoulli columns as categorical and bin "
                 "columns with public bounds on those bounds (default: all "
                 "columns common to both CSV files)")
  p.add_argument("-o", "--output", metavar="REPORT_PREFIX", default=None,
                 help="write REPORT_PREFIX.json and REPORT_PREFIX.html "
                 "(default: only print the summary)")
  p.add_argument("--bins", type=int, default=20, metavar="N",
                 help="equal-width bins for numeric columns with more than "
                 "20 distinct values (default: 20)")
  p.add_argument("--seed", type=int, default=0,
                 help="seed of the sampled 3-way marginals and column pairs, "
                 "the real halves of the W1 baseline and the 30%% hold-out "
                 "(default: 0)")
  return p


def _read_csv(path: str, what: str) -> pd.DataFrame:
  try:
    return pd.read_csv(path)
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


def _parse_model_minimal(path: str) -> list[tuple[str, str, None]]:
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
    out.append((name.strip(), dist.split(";", 1)[0].strip().lower(), None))
  return out


def _model_features(path: str) -> list[tuple[str, str, Optional[tuple]]]:
  """(name, family, public bounds or None) of each model-file feature."""
  try:
    import jtwin.spec as spec
  except ImportError:
    return _parse_model_minimal(path)
  return [(f.name, f.family.lower(), getattr(f, "bounds", None))
          for f in spec.parse_model_file(path).features]


def _columns(args, real, synth):
  """The evaluated columns, the categorical ones and explicit bins."""
  if args.model is None:
    columns = [c for c in real.columns if c in synth.columns]
    if not columns:
      raise DataError(f"{args.synthetic}: no column in common with "
                      f"{args.real}")
    return columns, [], {}
  features = _model_features(args.model)
  for table, path in ((real, args.real), (synth, args.synthetic)):
    absent = [name for name, _, _ in features if name not in table.columns]
    if absent:
      raise DataError(f"{path}: lacks column(s) {absent} named in model "
                      f"file {args.model}")
  columns = [name for name, _, _ in features]
  categorical = [name for name, family, _ in features
                 if family in ("categorical", "bernoulli")]
  bins = {name: np.linspace(bounds[0], bounds[1], args.bins + 1)
          for name, family, bounds in features
          if bounds is not None and family in ("normal", "poisson")
          and bounds[1] > bounds[0]}
  return columns, categorical, bins


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

  if args.bins < 1:
    raise DataError(f"--bins must be at least 1, got {args.bins}")
  if args.output is not None:
    directory = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(directory):
      raise DataError(f"{args.output}: output directory '{directory}' does "
                      "not exist; create it first")
  real = _read_csv(args.real, "real data")
  synth = _read_csv(args.synthetic, "synthetic data")
  test = _read_csv(args.test, "test data") if args.test else None
  columns, categorical, bins = _columns(args, real, synth)
  if args.target is not None and args.target not in columns:
    raise DataError(f"--target {args.target!r}: not a column of both "
                    f"{args.real} and {args.synthetic}"
                    + (" within the model file" if args.model else ""))
  if test is not None:
    absent = [c for c in columns if c not in test.columns]
    if absent:
      raise DataError(f"{args.test}: lacks column(s) {absent}")
    test = test[columns]
  numeric = [c for c in columns if c not in categorical
             and is_numeric_column(real[c])]
  bins_arg = {**{c: args.bins for c in numeric}, **bins}
  try:
    results = evaluate(real[columns], synth[columns], test=test,
                       target=args.target, bins=bins_arg,
                       categorical=categorical, seed=args.seed)
  except DataError:
    raise
  except ValueError as e:  # bad target and the like: the user's input
    raise DataError(str(e)) from None
  if args.target is not None and args.test is None:
    print("note: no --test given; utility is tested on a held-out 30% of "
          "REAL.csv")
  print(format_summary(results))
  if args.output is not None:
    for path in write_report(results, real[columns], synth[columns],
                             args.output):
      print(f"wrote {path}")
  return 0
