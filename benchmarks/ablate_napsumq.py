"""One `jtwin.fit_marginals` run with chosen options, scored: for trying settings.

  python benchmarks/ablate_napsumq.py [--data adult|adult_twinify|loans] [--seed 0]
      [--epsilon 1] [--delta D] [--options "target='income', init_peak=0.0"]
      [--all_triples] [--pairs N] [--sampling balanced iid] [--quick]

adult: the bundled Adult example and model file, scored against
adult_test.csv (target income); adult_twinify: the same rows with twinify's
bare model file (benchmarks/data/adult_twinify_model.txt: numeric columns
as Poisson/Normal, every domain undeclared). loans: the loans-like table of
`unseen_napsumq.py`, half A fitted, half B scored (target term). The
options are keyword arguments of `fit_marginals`, written as in Python.
Prints 1-/2-/3-way TVD, TSTR AUROC and the per-column 1-way TVD; one seed,
so differences below about 0.001 in 2-way TVD are seed noise. 3-way TVD is
over `jtwin.evaluate`'s 200 sampled triples, or all of them with
--all_triples; --pairs N also prints the N pairs with the largest 2-way
TVD. --sampling scores one twin per sampler (`sample_marginals`) from
the same fit, so the samplers are compared on the same noisy tables.
(Its former --derive CHILD=PARENT experiment, which read the map off
the private data, became the model-file option `determined_by`; it was
removed after commit 85ef05a.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

TEST = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "adult", "adult_test.csv")


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", choices=("adult", "adult_twinify", "loans"), default="adult")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--epsilon", type=float, default=1.0)
  ap.add_argument("--delta", type=float, default=None, help="default: 0.1/N")
  ap.add_argument("--options", default="", help="fit_marginals keyword arguments")
  ap.add_argument("--all_triples", action="store_true", help="3-way TVD over every triple")
  ap.add_argument("--pairs", type=int, default=0, metavar="N",
                  help="also print the N pairs with the largest 2-way TVD")
  ap.add_argument("--sampling", nargs="+", choices=("balanced", "pairs", "iid"),
                  default=["balanced"],
                  help="sample_marginals' sampler(s): one scored twin each; pairs: balanced "
                       "with swaps toward the 2-way tables only (triples=False)")
  ap.add_argument("--quick", action="store_true", help="K = 5, 50 steps, no scoring")
  args = ap.parse_args(argv)
  import jtwin
  from jtwin import napsumq
  options = common.fit_options(args.options)
  if args.quick:
    options.update(num_components=5, final_steps=50, posterior_steps=10)
  print(common.header(f"fit_marginals on {args.data}: {options}"))
  if args.data in ("adult", "adult_twinify"):
    frame = jtwin.read_csv(common.ADULT_CSV)
    spec = jtwin.parse_model_file(common.ADULT_MODEL if args.data == "adult" else
                                  os.path.join(HERE, "data", "adult_twinify_model.txt"))
    test, target = (None if args.quick else pd.read_csv(TEST)), "income"
  else:
    from unseen_napsumq import MODEL, loans_like
    from jtwin.spec import parse_model_text
    df = loans_like(20000)
    perm = np.random.default_rng(0).permutation(len(df))
    frame = df.iloc[perm[:10000]].reset_index(drop=True)
    test, target = df.iloc[perm[10000:]].reset_index(drop=True), "term"
    spec = parse_model_text(MODEL)
    test = None if args.quick else test
  t0 = time.perf_counter()
  res = napsumq.fit_marginals(args.seed, frame, spec, epsilon=args.epsilon, delta=args.delta,
                              **options)
  print(f"# fit {time.perf_counter() - t0:.1f} s, {len(res.measurements)} tables, "
        f"certified epsilon {res.privacy.epsilon:.6f}")
  for sampling in args.sampling:
    twin = napsumq.sample_marginals(args.seed + 1, res, len(frame),
                                    sampling="balanced" if sampling == "pairs" else sampling,
                                    triples=sampling != "pairs")
    if test is None:
      continue
    from jtwin.evaluate import evaluate
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      r = evaluate(test, twin, test=test, target=target,
                   max_triples=10**9 if args.all_triples else 200)
    print(f"sampling {sampling}: " + " ".join(
        f"{k}={r[k]:.4f}" for k in ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean",
                                    "utility_auroc_synth")))
    print("1-way per column: " + ", ".join(f"{c} {v['tvd']:.3f}"
                                           for c, v in r["per_column"].items()))
    if args.pairs:
      print(f"largest 2-way TVDs: {_largest_pairs(test, twin, args.pairs)}")
  return 0


def _largest_pairs(test, twin, n: int) -> str:
  """The n column pairs with the largest 2-way TVD (the scorer's encoding)."""
  import itertools
  from jtwin.evaluate import encoding, metrics
  coders = encoding.make_coders(test, [twin, test])
  sizes = [c.num_codes for c in coders]
  pairs = list(itertools.combinations(range(len(coders)), 2))
  tvd = metrics.kway_tvds(encoding.encode_frame(test, coders),
                          encoding.encode_frame(twin, coders), sizes, pairs)
  names = list(test.columns)
  return ", ".join(f"{names[pairs[i][0]]} x {names[pairs[i][1]]} {tvd[i]:.3f}"
                   for i in np.argsort(-tvd)[:n])


if __name__ == "__main__":
  raise SystemExit(main())
