"""Quality, time and memory of `jtwin napsumq` on Adult, scored like the issue's table.

Runs the command line (`python -m jtwin napsumq`) on all 32,561 rows of the
bundled Adult example with the bundled public-domain model file, for each
epsilon and seed, measuring each run's wall time and peak memory from process
start to CSV (no plots). Every twin is scored with `jtwin.evaluate` against
the 16,281 test rows (adult_test.csv, target income): 1-, 2- and 3-way TVD
and train-on-twin/test-on-real logistic AUROC. Prints one Markdown row per
run and the median over seeds per epsilon.

  python benchmarks/quality_napsumq.py [--epsilons 0.3 1 3] [--seeds 0 1 2 3 4]
      [--args "--target income"] [--model MODEL_FILE] [--quick]
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

ROOT = os.path.dirname(HERE)
KEYS = ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean", "utility_auroc_synth")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epsilons", nargs="+", default=["1"])
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
  p.add_argument("--args", default="--target income", help="more `jtwin napsumq` options")
  p.add_argument("--test", default=os.path.join(ROOT, "..", "shared", "data", "adult",
                                                "adult_test.csv"))
  p.add_argument("--model", default=common.ADULT_MODEL,
                 help="model file [default: the bundled public-domain one]")
  p.add_argument("--quick", action="store_true", help="one seed, K = 5, 100 steps, no scoring")
  args = p.parse_args(argv)
  if args.quick:
    args.seeds, args.args = [0], args.args + " --k 5 --steps 100"
  print(common.header("jtwin napsumq on Adult (train 32,561 rows, scored on the test rows)"))
  print(f"# options: {args.args}; model file {os.path.relpath(args.model, ROOT)}")
  test = None
  if not args.quick:
    if not os.path.isfile(args.test):
      print(f"# {args.test} not found: scoring skipped")
    else:
      test = pd.read_csv(args.test)
  print("| epsilon | seed | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC | wall | peak memory |")
  print("|---|---|---|---|---|---|---|---|")
  out_dir = tempfile.mkdtemp(prefix="jtwin_napsumq_")
  for eps in args.epsilons:
    rows = []
    for seed in args.seeds:
      prefix = os.path.join(out_dir, f"twin_{eps}_{seed}")
      cmd = [sys.executable, "-m", "jtwin", "napsumq", common.ADULT_CSV, args.model,
             prefix, "--epsilon", eps, "--seed", str(seed), "--visualize", "none", "--quiet"]
      run = common.run_child(cmd + shlex.split(args.args), timeout=1800)
      if run.returncode != 0:
        print(run.output[-2000:])
        return 1
      scores = _score(prefix + ".csv", test)
      rows.append((scores, run.wall_s, run.max_rss_bytes))
      print(f"| {eps} | {seed} | " + " | ".join(_fmt(scores.get(k)) for k in KEYS) +
            f" | {run.wall_s:.1f} s | {common.gib(run.max_rss_bytes)} |", flush=True)
    if len(rows) > 1:
      med = {k: statistics.median(r[0][k] for r in rows) if k in rows[0][0] else None
             for k in KEYS}
      print(f"| {eps} | median | " + " | ".join(_fmt(med[k]) for k in KEYS) +
            f" | {statistics.median(r[1] for r in rows):.1f} s | "
            f"{common.gib(max(r[2] for r in rows))} |", flush=True)
  return 0


_score, _fmt = common.score_adult_twin, common.fmt_score


if __name__ == "__main__":
  raise SystemExit(main())
