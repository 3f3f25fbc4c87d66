"""Interval coverage of `jtwin napsumq` twins combined with Rubin's rules.

For each repeat (a different seed, i.e. different DP noise): fit the
marginal-query mixture to Adult (bundled model file, epsilon as given,
--target income), draw m synthetic data sets of N rows from m posterior
draws, fit a logistic regression of income on age, education_num,
hours_per_week and sex on each, and combine the m estimates with Rubin's
rules for fully synthetic data (`jtwin.rubin`). A 95% interval "covers" when
it contains the coefficient fitted on the real data. Prints the coverage per
coefficient and overall; nominal is 0.95.

  python benchmarks/coverage_napsumq.py [--repeats 10] [--m 10] [--epsilon 1] [--quick]
      [--options "non_private=True"]

Each repeat also prints the combined estimate (the mean of the m sets'
coefficients) beside the real one, so a miss can be told apart as bias or
as a narrow interval; `--options "non_private=True"` (NOT private: exact
tables) shows how much of the bias is the model's own.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

NAMES = ("intercept", "age/10", "education_num", "hours_per_week/10", "male")


def design(df):
  """X [n, 5] and y [n] of the regression (rows with a missing value dropped)."""
  df = df[["age", "education_num", "hours_per_week", "sex", "income"]].dropna()
  x = np.stack([np.ones(len(df)), df["age"].to_numpy(float) / 10,
                df["education_num"].to_numpy(float), df["hours_per_week"].to_numpy(float) / 10,
                (df["sex"] == "Male").to_numpy(float)], 1)
  return x, (df["income"] == ">50K").to_numpy(float)


def logistic(x, y, iters=50):
  """Maximum-likelihood coefficients and their variances (inverse Fisher information)."""
  beta = np.zeros(x.shape[1])
  for _ in range(iters):
    p = 1 / (1 + np.exp(-x @ beta))
    hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(x.shape[1])
    step = np.linalg.solve(hess, x.T @ (y - p))
    beta += step
    if np.max(np.abs(step)) < 1e-10:
      break
  p = 1 / (1 + np.exp(-x @ beta))
  cov = np.linalg.inv((x * (p * (1 - p))[:, None]).T @ x)
  return beta, np.diag(cov)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--m", type=int, default=10)
  ap.add_argument("--epsilon", type=float, default=1.0)
  ap.add_argument("--k", type=int, default=None, help="K [default: fit_marginals' (400)]")
  ap.add_argument("--posterior_steps", type=int, default=None,
                  help="Adam steps of the mean-field posterior (default: fit_marginals')")
  ap.add_argument("--options", default="",
                  help='more fit_marginals keyword arguments, e.g. "non_private=True"')
  ap.add_argument("--quick", action="store_true", help="2 repeats, m = 3, K = 5, few steps")
  args = ap.parse_args(argv)
  import jax
  import jtwin
  from jtwin import napsumq, rubin
  fast = {} if args.posterior_steps is None else {"posterior_steps": args.posterior_steps}
  fast.update(common.fit_options(args.options))
  if args.quick:
    args.repeats, args.m, args.k = 2, 3, 5
    fast.update(final_steps=50, posterior_steps=20)
  print(common.header("Rubin's-rules coverage of jtwin napsumq twins (Adult)"))
  df = jtwin.read_csv(common.ADULT_CSV)
  spec = jtwin.parse_model_file(common.ADULT_MODEL)
  frame = df[list(spec.names)]
  beta_real, _ = logistic(*design(frame))
  print("# real-data coefficients: " + ", ".join(f"{n} {b:.4f}" for n, b in zip(NAMES, beta_real)))
  k = {} if args.k is None else {"num_components": args.k}
  print(f"# epsilon {args.epsilon:g}, K = {args.k or 'default'}, m = {args.m} synthetic sets of N rows, "
        f"{args.repeats} repeats, fit options {fast}")
  covered, widths, centres = [], [], []
  for r in range(args.repeats):
    t0 = time.perf_counter()
    res = napsumq.fit_marginals(jax.random.key(1000 + r), frame, spec, epsilon=args.epsilon,
                                target="income", **k, **fast)
    n = int(round(res.num_rows_estimate))
    twin = napsumq.sample_marginals(jax.random.key(r), res, n * args.m, records_per_draw=n)
    est = [logistic(*design(twin.iloc[i * n:(i + 1) * n])) for i in range(args.m)]
    lo, hi = rubin.confidence_interval([e[0] for e in est], [e[1] for e in est], 0.95,
                                       n_synthetic=n, n_original=n)
    covered.append((lo <= beta_real) & (beta_real <= hi))
    widths.append(hi - lo)
    centres.append(np.mean([e[0] for e in est], 0))
    # where the miss comes from: the interval's centre off the real value, in half-widths
    bias = ((lo + hi) / 2 - beta_real) / ((hi - lo) / 2)
    young = lambda df: float((df.loc[df["age"] < 21, "income"] == ">50K").mean())
    print(f"repeat {r}: covered " + " ".join("y" if c else "n" for c in covered[-1]) +
          "; centre - real in half-widths " + " ".join(f"{b:+.1f}" for b in bias) +
          f"; income rate at age < 21: twin {young(twin):.3f}, real {young(frame):.3f}"
          f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
  cov = np.mean(covered, 0)
  print("| coefficient | real | median combined estimate | coverage of 95% intervals | median width |")
  print("|---|---|---|---|---|")
  for i, name in enumerate(NAMES):
    print(f"| {name} | {beta_real[i]:.4f} | {np.median(np.array(centres)[:, i]):.4f} | {cov[i]:.2f} "
          f"| {np.median(np.array(widths)[:, i]):.4f} |")
  print(f"| all | | | {np.mean(covered):.2f} | |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
