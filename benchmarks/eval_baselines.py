"""Ceiling and floor of `jtwin evaluate` on Adult, as a Markdown table.

The real data is a seeded half A of adult_train.csv (the data a generator
would be trained on). Two reference "twins" bracket what a generator can
reach:

* ceiling: the other half B of adult_train.csv, an independent sample of the
  same population (what a perfect generator would produce);
* floor: an independent-marginals sample, every column of A permuted
  independently (exact 1-way marginals, no dependence at all).

Utility is train-on-twin / test-on-adult_test.csv with target `income`.
Further twins (trained on A: write it with --save-real) are added as
columns with --twin LABEL=PATH.csv.

  python benchmarks/eval_baselines.py [--data DIR] [--seed 0]
      [--save-real A.csv] [--twin jtwin=synthetic.csv ...]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import numpy as np
import pandas as pd

from jtwin.evaluate import evaluate

ROWS = (
    ("n_synth", "synthetic rows", "{:,.0f}"),
    ("tvd_1way_mean", "1-way TVD, mean", "{:.4f}"),
    ("tvd_2way_mean", "2-way TVD, mean", "{:.4f}"),
    ("tvd_2way_max", "2-way TVD, max", "{:.4f}"),
    ("tvd_3way_mean", "3-way TVD, mean (200 triples)", "{:.4f}"),
    ("missing_abs_error_max", "missing-rate error, max", "{:.4f}"),
    ("cramers_v_diff_mean", "Cramér's V diff, mean", "{:.4f}"),
    ("cramers_v_diff_max", "Cramér's V diff, max", "{:.4f}"),
    ("pearson_diff_mean", "Pearson diff, mean", "{:.4f}"),
    ("pearson_diff_max", "Pearson diff, max", "{:.4f}"),
    ("pmse_ratio", "pMSE / null, main effects", "{:.2f}"),
    ("pmse_pairs_ratio", "pMSE / null, pairwise interactions", "{:.2f}"),
    ("w1_ratio_median", "W1 ratio, median over numeric columns", "{:.2f}"),
    ("utility_accuracy_synth", "accuracy (logistic), trained on twin",
     "{:.4f}"),
    ("utility_auroc_synth", "AUROC (logistic), trained on twin", "{:.4f}"),
    ("sra", "synthetic ranking agreement (6 models)", "{:.2f}"),
    ("seconds_total", "evaluation time, s", "{:.1f}"),
)


def _halves(frame: pd.DataFrame, seed: int):
  perm = np.random.default_rng(seed).permutation(len(frame))
  half = len(frame) // 2
  return (frame.iloc[perm[:half]].reset_index(drop=True),
          frame.iloc[perm[half:]].reset_index(drop=True))


def _independent(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
  rng = np.random.default_rng(seed)
  return pd.DataFrame({c: frame[c].to_numpy()[rng.permutation(len(frame))]
                       for c in frame.columns})


def _fmt(template: str, value) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return "n/a"
  return template.format(value)


def _stamp() -> str:
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True,
                            check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  return (f"commit {commit}, {platform.machine()} {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}, "
          f"pandas {pd.__version__}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "adult"),
                      help="folder with adult_train.csv and adult_test.csv "
                      "(default: %(default)s)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seed of the halves, the permutation and "
                      "evaluate (default: %(default)s)")
  parser.add_argument("--save-real", metavar="PATH", default=None,
                      help="also write the real half A as CSV, to train "
                      "twins on")
  parser.add_argument("--twin", action="append", default=[],
                      metavar="LABEL=PATH",
                      help="add a synthetic CSV (trained on half A) as a "
                      "column; repeatable")
  args = parser.parse_args(argv)

  train = pd.read_csv(os.path.join(args.data, "adult_train.csv"))
  test = pd.read_csv(os.path.join(args.data, "adult_test.csv"))
  real, held_out = _halves(train, args.seed)
  if args.save_real:
    real.to_csv(args.save_real, index=False)
  twins = [("ceiling: held-out half", held_out),
           ("floor: independent columns", _independent(real, args.seed + 1))]
  for item in args.twin:
    label, _, path = item.rpartition("=")
    twins.append((label, pd.read_csv(path)))

  results = []
  for label, synth in twins:
    start = time.perf_counter()
    r = evaluate(real, synth, test=test, target="income", seed=args.seed)
    r["seconds_total"] = time.perf_counter() - start
    results.append(r)
    parts = ", ".join(f"{k} {v:.2f}" for k, v in r["seconds"].items())
    print(f"<!-- {label}: {parts} s -->")

  head = results[0]
  print(f"\nReal: half A of adult_train.csv ({head['n_real']:,} rows, seed "
        f"{args.seed}); utility target `income`, tested on adult_test.csv "
        f"({head['utility_num_test_rows']:,} rows). Real-trained logistic: "
        f"accuracy {head['utility_accuracy_real']:.4f}, AUROC "
        f"{head['utility_auroc_real']:.4f}; majority class "
        f"{head['utility_accuracy_majority']:.4f}.\n")
  print("| metric | " + " | ".join(label for label, _ in twins) + " |")
  print("|---|" + "---:|" * len(twins))
  for key, name, template in ROWS:
    print(f"| {name} | "
          + " | ".join(_fmt(template, r.get(key)) for r in results) + " |")
  print(f"\n<!-- {_stamp()} -->")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
