"""Where `jtwin napsumq`'s error on Adult comes from: the fit with some tables made exact.

NOT private: a diagnosis. The real `fit_marginals` runs on the bundled
Adult example and model file (epsilon and noise sds as usual, so cells,
compression, coarse views and the fit's weights are those of a private run),
but the Gaussian noise of one group of tables is left out:

  --exact none    every table noisy (the twin a private run makes)
  --exact one     the 1-way tables (and a determined column's table) exact
  --exact multi   the 2- and 3-way tables exact
  --exact all     every table exact: what the model itself reaches

Scores the twin against adult_test.csv like `quality_napsumq.py` (1-, 2-,
3-way TVD, TSTR AUROC), and prints the twin's income rate under 21 (the
data's is 0.001). `--options` are `fit_marginals` keyword arguments.

  python benchmarks/noise_sources_napsumq.py [--exact none one multi all] [--seed 0]
      [--epsilon 1] [--options "num_components=400"] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

ROOT = os.path.dirname(HERE)
KEYS = ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean", "utility_auroc_synth")


def run(exact: str, seed: int, epsilon: float, options: dict, test=None):
  """One fit with the noise of the `exact` group left out; (scores, twin)."""
  from jtwin import napsumq
  from jtwin.marginals import cells as cl
  phase = {"multi": False}
  measure, compress = napsumq.gaussian_measure, cl.compress

  def gaussian(counts, sigma, rng):
    noisy = measure(counts, sigma, rng)          # draws as usual: other noise unchanged
    group = "multi" if phase["multi"] else "one"
    return counts + 0.0 * noisy if exact in ("all", group) else noisy

  def compress_then_multi(*args, **kwargs):      # the 1-way step ends with compression
    phase["multi"] = True
    return compress(*args, **kwargs)

  napsumq.gaussian_measure, cl.compress = gaussian, compress_then_multi
  try:
    frame = pd.read_csv(common.ADULT_CSV)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      res = napsumq.fit_marginals(seed, frame, common.ADULT_MODEL, epsilon=epsilon,
                                  target="income", **options)
  finally:
    napsumq.gaussian_measure, cl.compress = measure, compress
  twin = napsumq.sample_marginals(seed, res, len(frame))
  scores = {}
  if test is not None:
    from jtwin.evaluate import evaluate
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      scores = evaluate(test, twin, test=test, target="income")
  return scores, twin


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--exact", nargs="+", default=["none", "one", "multi", "all"],
                 choices=("none", "one", "multi", "all"))
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--epsilon", type=float, default=1.0)
  p.add_argument("--options", default="", help="fit_marginals keyword arguments")
  p.add_argument("--test", default=os.path.join(ROOT, "..", "shared", "data", "adult",
                                                "adult_test.csv"))
  p.add_argument("--quick", action="store_true", help="K = 5, 50 steps, no scoring")
  args = p.parse_args(argv)
  options = eval(f"dict({args.options})")   # noqa: S307 (a benchmark's own flag)
  if args.quick:
    options.update(num_components=5, final_steps=50, posterior_steps=10)
  test = None if args.quick or not os.path.isfile(args.test) else pd.read_csv(args.test)
  print(common.header("napsumq on Adult with some tables exact (NOT private: a diagnosis)"))
  print(f"# seed {args.seed}, epsilon {args.epsilon:g}, options {options}")
  print("| exact tables | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC | income rate, age < 21 |")
  print("|---|---|---|---|---|---|")
  for exact in args.exact:
    scores, twin = run(exact, args.seed, args.epsilon, options, test)
    young = float((twin.loc[twin["age"] < 21, "income"] == ">50K").mean())
    print(f"| {exact} | " + " | ".join(common.fmt_score(scores.get(k)) for k in KEYS)
          + f" | {young:.4f} |", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
