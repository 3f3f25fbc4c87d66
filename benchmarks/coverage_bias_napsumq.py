"""Where the bias of the coverage benchmark's regression comes from (diagnosis).

`coverage_napsumq.py` finds the 95% intervals of a logistic regression of
income on age/10, education_num, hours/10 and sex missing on one side: the
twin's slopes are attenuated. This script splits that bias in two, for one
`jtwin napsumq` fit (Adult, bundled model, --target income):

  * the twin's covariates: an *oracle* conditional, an additive logistic
    model of income on every other column (numeric columns on the model's
    coarse bins), fitted on the REAL training rows (NOT private: a
    diagnostic), draws income anew for the twin's rows and for the real
    rows. On the real rows it recovers the real coefficients, so whatever
    bias it leaves on the twin's rows is in the twin's covariates;
  * the covariates' joint: their correlations in the twin and the data, and
    the mean hours per week by age band (the relation the twin loses most).

  python benchmarks/coverage_bias_napsumq.py [--seed 0] [--epsilon 1] [--options "..."] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402
from coverage_napsumq import NAMES, design, logistic  # noqa: E402

AGE_BANDS = [17, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 91]
# coarse bins of the oracle's numeric covariates (the model file's, roughly)
ORACLE_BINS = {"age": AGE_BANDS,
               "fnlwgt": [0, 50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 350e3, 400e3, 500e3,
                          750e3, 1e9],
               "capital_gain": [0, 1, 5000, 10000, 1e9], "capital_loss": [0, 1, 1500, 2000, 1e9],
               "hours_per_week": [0, 20, 30, 35, 40, 41, 45, 50, 60, 100]}
COVARIATES = ("age/10", "education_num", "hours/10", "male")


def _one_hot(frame: pd.DataFrame, columns, levels=None):
  """Intercept + one-hot columns ([n, p]) and the levels used (fitted on the first call)."""
  parts, levels = [np.ones((len(frame), 1))], {} if levels is None else levels
  for c in columns:
    v = frame[c]
    if c in ORACLE_BINS:
      v = pd.cut(v.astype(float), ORACLE_BINS[c], right=False)
    v = pd.Series([str(x) for x in v.to_numpy()], dtype=object)
    levels.setdefault(c, sorted(v.unique()))
    parts.append(np.stack([(v == level).to_numpy(float) for level in levels[c]], 1))
  return np.concatenate(parts, 1), levels


def oracle_conditional(real: pd.DataFrame, columns):
  """p(income > 50K | x) as a function of a frame: L2-penalised (1.0) additive
  logistic regression on `columns`, fitted on `real` (NOT private)."""
  x, levels = _one_hot(real, columns)
  y = (real["income"] == ">50K").to_numpy(float)
  beta = np.zeros(x.shape[1])
  for _ in range(30):
    p = 1 / (1 + np.exp(-x @ beta))
    hess = (x * (p * (1 - p))[:, None]).T @ x + np.eye(len(beta))
    beta += np.linalg.solve(hess, x.T @ (y - p) - beta)
  return lambda frame: 1 / (1 + np.exp(-_one_hot(frame, columns, levels)[0] @ beta))


def _coefficients(frame) -> str:
  return " / ".join(f"{b:.3f}" for b in logistic(*design(frame))[0])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--epsilon", type=float, default=1.0)
  ap.add_argument("--options", default="", help="more fit_marginals keyword arguments")
  ap.add_argument("--quick", action="store_true", help="K = 5, few steps, 3,000 rows")
  args = ap.parse_args(argv)
  import jtwin
  from jtwin import napsumq
  options = common.fit_options(args.options)
  if args.quick:
    options.update(num_components=5, final_steps=50, posterior_steps=10)
  print(common.header(f"coverage bias of jtwin napsumq twins (Adult), seed {args.seed}, "
                      f"epsilon {args.epsilon:g}, options {options}"))
  spec = jtwin.parse_model_file(common.ADULT_MODEL)
  real = jtwin.read_csv(common.ADULT_CSV)[list(spec.names)]
  if args.quick:
    real = real.iloc[:3000].reset_index(drop=True)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = napsumq.fit_marginals(args.seed, real, spec, epsilon=args.epsilon, target="income",
                                **options)
    twin = napsumq.sample_marginals(args.seed + 100, res, len(real))
  columns = [c for c in real.columns if c not in ("income", "education_num")]
  conditional = oracle_conditional(real, columns)
  rng = np.random.default_rng(args.seed)

  def redraw(frame):
    out = frame.copy()
    out["income"] = np.where(rng.random(len(out)) < conditional(out), ">50K", "<=50K")
    return out

  print(f"# coefficients {' / '.join(NAMES)}")
  print(f"real rows:                          {_coefficients(real)}")
  print(f"twin:                               {_coefficients(twin)}")
  print(f"real covariates, oracle income:     {_coefficients(redraw(real))}")
  print(f"twin covariates, oracle income:     {_coefficients(redraw(twin))}")
  pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
  print("# covariate correlations " + ", ".join(f"{COVARIATES[i]}~{COVARIATES[j]}"
                                               for i, j in pairs))
  for name, frame in (("real", real), ("twin", twin)):
    c = np.corrcoef(design(frame)[0][:, 1:].T)
    print(f"{name}: " + " ".join(f"{c[i, j]:+.3f}" for i, j in pairs))
  print("# mean hours per week by age band " + " ".join(
      f"[{a},{b})" for a, b in zip(AGE_BANDS[:-1], AGE_BANDS[1:])))
  for name, frame in (("real", real), ("twin", twin)):
    hours = frame.groupby(pd.cut(frame["age"], AGE_BANDS, right=False), observed=False)[
        "hours_per_week"].mean()
    print(f"{name}: " + " ".join("  nan" if np.isnan(h) else f"{h:5.1f}" for h in hours))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
