"""Quality cost of DP domains on Adult: declared domain vs DP domain vs read off the data.

For `jtwin napsumq` and `jtwin fit`, at epsilon 1 (row count and domain step
included), runs the command line on the 32,561 training rows with
  * the bundled model file (every domain declared: only the row count is spent),
  * twinify's plain model file (benchmarks/data/adult_twinify_model.txt, nothing
    declared) with the DP domain step (the default, `--domain dp`),
  * the same file with `--domain data` (domains read off the data: NOT covered),
and scores each twin with `jtwin.evaluate` against the 16,281 test rows
(target income). Prints one Markdown row per run.

  python benchmarks/domain_cost.py [--methods napsumq fit] [--settings declared dp data]
      [--seeds 0 1] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

ROOT = os.path.dirname(HERE)
BARE = os.path.join(HERE, "data", "adult_twinify_model.txt")
KEYS = ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean", "utility_auroc_synth")
SETTINGS = {"declared": ("declared (bundled model)", common.ADULT_MODEL, []),
            "dp": ("DP domain (twinify model)", BARE, ["--domain", "dp"]),
            "data": ("read off the data (twinify model)", BARE, ["--domain", "data"])}
EXTRA = {"napsumq": ["--target", "income"], "fit": []}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--methods", nargs="+", default=["napsumq", "fit"], choices=("napsumq", "fit"))
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
  p.add_argument("--epsilon", default="1")
  p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
  p.add_argument("--test", default=os.path.join(ROOT, "..", "shared", "data", "adult",
                                                "adult_test.csv"))
  p.add_argument("--quick", action="store_true", help="one seed, tiny runs, no scoring")
  args = p.parse_args(argv)
  quick = {"napsumq": ["--k", "5", "--steps", "50"], "fit": ["--k", "3", "-e", "1"]}
  if args.quick:
    args.seeds = [0]
  print(common.header("Quality cost of DP domains, Adult (scored on the test rows)"))
  test = pd.read_csv(args.test) if not args.quick and os.path.isfile(args.test) else None
  print("| method | domain | seed | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC | wall |")
  print("|---|---|---|---|---|---|---|---|")
  out_dir = tempfile.mkdtemp(prefix="jtwin_domain_cost_")
  for method in args.methods:
    for label, model, flags in (SETTINGS[k] for k in args.settings):
      for seed in args.seeds:
        prefix = os.path.join(out_dir, f"{method}_{len(flags)}_{flags[-1] if flags else 'decl'}_{seed}")
        cmd = [sys.executable, "-m", "jtwin", method, common.ADULT_CSV, model, prefix,
               "--epsilon", args.epsilon, "--seed", str(seed), "--visualize", "none", "--quiet"]
        cmd += flags + EXTRA[method] + (quick[method] if args.quick else [])
        run = common.run_child(cmd, timeout=3600)
        if run.returncode != 0:
          print(run.output[-2000:])
          return 1
        scores = _score(prefix + ".csv", test)
        print(f"| {method} | {label} | {seed} | " + " | ".join(_fmt(scores.get(k)) for k in KEYS)
              + f" | {run.wall_s:.1f} s |", flush=True)
  return 0


_score, _fmt = common.score_adult_twin, common.fmt_score


if __name__ == "__main__":
  raise SystemExit(main())
