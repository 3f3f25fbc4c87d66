"""`jtwin napsumq` and `jtwin fit` on a table tuned for nothing, with a twinify-style model file.

A loans-like table (20,000 rows: 8 Normal-modelled amounts, rates and scores
with heavy tails, 6 counts, 4 categorical columns, dependent through a latent
grade and income) is split in halves: A is the private data, B the held-out
real data used for scoring. The model file is twinify's grammar only
(`col : Normal`, nothing declared), so every domain is read off the data
(`--domain data`, listed in the warning: the figures in benchmarks/README.md
were made this way, before DP domains existed; `--domain dp` releases them
under DP instead, which needs more rows than the quick run's 2,000). Both commands run at epsilon = 1 with their
defaults; twins are scored with `jtwin.evaluate` against B (target `term`),
next to the floor (A with every column permuted independently) and the
ceiling (A itself).

With `--csv PATH --target COL` any CSV is used instead (e.g. ggplot2's
diamonds, 53,940 rows, from the plotnine wheel's data folder), with a model
file written as a twinify user would: Normal for numeric columns with
fractions, Poisson for non-negative integer ones, Bernoulli for two values,
Categorical otherwise (or `--model FILE`). After the table it prints the
napsumq twin's 1-way TVD per column and the range of its numeric columns.

  python benchmarks/unseen_napsumq.py [--rows 20000] [--domain data|dp] [--quick]
      [--csv PATH --target COL [--model FILE]] [--seed S] [--napsumq_args "--smoothness 0"]
      [--no_fit]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

KEYS = ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean", "utility_auroc_synth")


def loans_like(n: int, seed: int = 1) -> pd.DataFrame:
  """A loans-like table with dependent numeric, count and categorical columns."""
  rng = np.random.default_rng(seed)
  grade = rng.choice(7, n, p=[.15, .28, .27, .17, .08, .04, .01])
  u = rng.standard_normal(n)
  term = np.where(rng.random(n) < 0.25 + 0.05 * grade, "60 months", "36 months")
  loan = np.round(np.exp(9.3 + 0.3 * u + 0.5 * rng.standard_normal(n)), -2)
  rate = np.round(7 + 3.5 * grade + 1.5 * rng.standard_normal(n), 2)
  months = np.where(term == "60 months", 60, 36)
  lam = np.exp(0.3 * u + 0.3 * rng.standard_normal(n))
  return pd.DataFrame({
      "loan_amount": loan,
      "annual_income": np.round(np.exp(11.0 + 0.55 * u + 0.1 * rng.standard_normal(n))),
      "interest_rate": rate,
      "installment": np.round(loan * (rate / 1200) / (1 - (1 + rate / 1200) ** -months), 2),
      "debt_to_income": np.round(np.clip(18 + 8 * rng.standard_normal(n) + grade, 0, 60), 2),
      "total_credit_limit": np.round(np.exp(9.5 + 0.6 * u + 0.9 * rng.standard_normal(n))),
      "credit_utilization": np.round(np.clip(50 + 24 * rng.standard_normal(n), 0, 120), 1),
      "emp_length": np.clip(np.round(6 + 3.5 * rng.standard_normal(n)), 0, 10),
      "open_accounts": rng.poisson(11 * lam), "total_accounts": rng.poisson(25 * lam),
      "delinquencies": rng.poisson(0.2, n), "inquiries": rng.poisson(0.3 * (1 + 0.3 * grade)),
      "public_records": rng.poisson(0.8 * (1 + 0.2 * grade)),
      "mortgages": rng.poisson(1.6 * np.exp(0.5 * u)),
      "grade": np.array(list("ABCDEFG"))[grade], "term": term,
      "home": rng.choice(["MORTGAGE", "RENT", "OWN", "ANY"], n, p=[.48, .40, .11, .01]),
      "purpose": rng.choice(["debt", "card", "home", "other", "car", "medical"], n,
                            p=[.58, .22, .06, .08, .03, .03]),
  })


MODEL = "".join(f"{c} : Normal\n" for c in (
    "loan_amount", "annual_income", "interest_rate", "installment", "debt_to_income",
    "total_credit_limit", "credit_utilization", "emp_length")) + "".join(
    f"{c} : Poisson\n" for c in ("open_accounts", "total_accounts", "delinquencies",
                                 "inquiries", "public_records", "mortgages")) + (
    "grade : Categorical\nterm : Bernoulli\nhome : Categorical\npurpose : Categorical\n")


def twinify_style_model(df: pd.DataFrame) -> str:
  """A model file with families chosen as a twinify user would, nothing declared."""
  lines = []
  for c in df.columns:
    x = df[c].dropna()
    if pd.api.types.is_numeric_dtype(x) and x.nunique() > 2:
      integer = bool(np.all(x == np.round(x))) and x.min() >= 0
      lines.append(f"{c} : {'Poisson' if integer else 'Normal'}\n")
    else:
      lines.append(f"{c} : {'Bernoulli' if x.nunique() == 2 else 'Categorical'}\n")
  return "".join(lines)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rows", type=int, default=20000)
  ap.add_argument("--domain", choices=("data", "dp"), default="data",
                  help="where the undeclared domains come from (jtwin's --domain)")
  ap.add_argument("--quick", action="store_true", help="2,000 rows, tiny fits, no scoring")
  ap.add_argument("--csv", default=None, help="use this CSV instead of the loans-like table")
  ap.add_argument("--target", default="term", help="TSTR target column [default: term]")
  ap.add_argument("--seed", type=int, default=0, help="the commands' --seed")
  ap.add_argument("--napsumq_args", default="", help="more `jtwin napsumq` options")
  ap.add_argument("--model", default=None, help="with --csv: this model file instead")
  ap.add_argument("--no_fit", action="store_true", help="skip `jtwin fit` (DP-VI)")
  args = ap.parse_args(argv)
  name = os.path.basename(args.csv) if args.csv else "a loans-like table"
  print(common.header(f"napsumq and fit on {name} (unseen), twinify-style model"))
  if args.csv:
    df = pd.read_csv(args.csv)
    df = df.iloc[:2000] if args.quick else df
    n = len(df)
    if args.model:
      with open(args.model) as f:
        model_text = f.read()
    else:
      model_text = twinify_style_model(df)
    print("# model file: " + "; ".join(model_text.strip().splitlines()))
  else:
    n = 2000 if args.quick else args.rows
    df = loans_like(n)
    model_text = MODEL
  rng = np.random.default_rng(0)
  perm = rng.permutation(n)
  a, b = df.iloc[perm[:n // 2]].reset_index(drop=True), df.iloc[perm[n // 2:]].reset_index(drop=True)
  tmp = tempfile.mkdtemp(prefix="jtwin_unseen_")
  data, model = os.path.join(tmp, "loans_a.csv"), os.path.join(tmp, "model.txt")
  a.to_csv(data, index=False)
  with open(model, "w") as f:
    f.write(model_text)
  floor = pd.DataFrame({c: a[c].to_numpy()[rng.permutation(len(a))] for c in a.columns})
  runs = {"floor: independent columns": floor, "ceiling: the private half itself": a}
  extra = {"napsumq": ["--k", "5", "--steps", "50"], "fit": ["--k", "5", "-e", "1"]}
  import shlex
  for command in ("napsumq",) + (() if args.no_fit else ("fit",)):
    out = os.path.join(tmp, command)
    cmd = [sys.executable, "-m", "jtwin", command, data, model, out, "--epsilon", "1",
           "--seed", str(args.seed), "--visualize", "none", "--quiet", "--domain", args.domain]
    cmd += extra[command] if args.quick else []
    cmd += shlex.split(args.napsumq_args) if command == "napsumq" else []
    run = common.run_child(cmd, timeout=1800)
    if run.returncode != 0:
      print(run.output[-2000:])
      return 1
    runs[f"jtwin {command}, epsilon 1 ({run.wall_s:.0f} s)"] = pd.read_csv(out + ".csv")
  print(f"| twin of half A, scored on half B | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC ({args.target}) | sd ratio, median over numeric columns |")
  print("|---|---|---|---|---|---|")
  numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
  for label, twin in runs.items():
    scores = [float("nan")] * 4
    if not args.quick:
      from jtwin.evaluate import evaluate
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(b, twin, test=b, target=args.target)
      scores = [r[k] for k in KEYS]
      if label.startswith("jtwin napsumq"):
        per_column = r["per_column"]
    sd = np.median([twin[c].std() / a[c].std() for c in numeric])
    print(f"| {label} | " + " | ".join(f"{x:.4f}" for x in scores) + f" | {sd:.2f} |", flush=True)
  napsumq = next(t for lbl, t in runs.items() if lbl.startswith("jtwin napsumq"))
  if not args.quick:
    print("# napsumq 1-way TVD per column: " + ", ".join(
        f"{c} {v['tvd']:.3f}" for c, v in per_column.items()))
  print("# napsumq twin's numeric ranges: " + ", ".join(
      f"{c} {napsumq[c].min():.6g}..{napsumq[c].max():.6g}" for c in numeric
      if pd.api.types.is_numeric_dtype(napsumq[c])))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
