"""Quality of jtwin's twin of Adult at several epsilons, next to the ceiling and floor.

Trains jtwin (the `jtwin fit` command line with its defaults: K = 50, 200
epochs, q = 0.01, C = 1, and the bundled model file) on a seeded half A of
adult_train.csv at each epsilon and at infinity (--no-privacy), then runs
`benchmarks/eval_baselines.py`, which prints one Markdown table: the held-out
half B (ceiling), an independent-marginals sample (floor) and the twins.
Utility is train-on-twin / test-on-adult_test.csv with target `income`.

  python benchmarks/quality_adult.py [--epsilons 0.5 1 4 inf] [--epochs 200] [--k 50]
      [--out DIR] [--fit-args "-q 0.05"] [--quick]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epsilons", nargs="+", default=["0.5", "1", "4", "inf"])
  p.add_argument("--epochs", type=int, default=200)
  p.add_argument("--k", type=int, default=50)
  p.add_argument("--model", default=os.path.join(ROOT, "jtwin/examples/adult_model.txt"))
  p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "adult"))
  p.add_argument("--out", default=None, help="directory for the twins (default: a temp dir)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--quick", action="store_true", help="2 epochs, K = 5, one epsilon")
  p.add_argument("--fit-args", default="", help="more `jtwin fit` options, e.g. '-q 0.05'")
  args = p.parse_args(argv)
  if args.quick:
    args.epsilons, args.epochs, args.k = ["1"], 2, 5
  out = args.out or tempfile.mkdtemp(prefix="jtwin_quality_")
  os.makedirs(out, exist_ok=True)
  real_a = os.path.join(out, "adult_half_a.csv")
  base = [sys.executable, os.path.join(HERE, "eval_baselines.py"), "--data", args.data,
          "--seed", str(args.seed), "--save-real", real_a]
  subprocess.run(base, check=True, stdout=subprocess.DEVNULL)   # writes half A
  twins = []
  for eps in args.epsilons:
    prefix = os.path.join(out, f"twin_eps_{eps}")
    cmd = [sys.executable, "-m", "jtwin", "fit", real_a, args.model, prefix, "--k", str(args.k),
           "-e", str(args.epochs), "--seed", str(args.seed), "--visualize", "none", "--quiet"]
    cmd += ["--no-privacy"] if eps == "inf" else ["--epsilon", eps]
    cmd += args.fit_args.split()
    subprocess.run(cmd, check=True)
    twins += ["--twin", f"jtwin eps={eps}={prefix}.csv"]
  subprocess.run(base + twins, check=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
