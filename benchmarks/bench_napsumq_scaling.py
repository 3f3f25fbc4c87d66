"""Time of `jtwin.fit_marginals` against rows and columns (synthetic latent-class data).

Data: N rows, D categorical columns of 5 categories each, drawn from a
10-class latent-class model (so the columns depend on each other). Each run
measures every 1- and 2-way table at epsilon = 1 and fits K = 200
components; the phases show that counting (the only pass over the rows) is
linear in N while the fit depends only on the number of cells.

  python benchmarks/bench_napsumq_scaling.py [--rows 1e4 1e5 1e6 1e7] [--columns 15 50 100]
      [--devices D] [--quick]

--devices D counts the tables with the rows sharded over D devices
(`fit_marginals(devices=D)`; on a CPU, D host devices).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402


def latent_class_frame(n: int, d: int, seed: int = 0) -> pd.DataFrame:
  """n rows, d columns with categories 0..4, from a 10-class latent-class model."""
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.full(5, 0.5), size=(10, d))           # [class, column, category]
  z = rng.integers(0, 10, n)
  cum = probs.cumsum(-1)
  out = {}
  for j in range(d):
    u = rng.random(n)
    out[f"c{j}"] = (u[:, None] > cum[z, j, :]).sum(1).astype(np.int8)
  return pd.DataFrame(out)


def run(n: int, d: int, k: int, steps: int, devices: int = 1):
  import jax
  import jtwin
  from jtwin.spec import parse_model_text
  frame = latent_class_frame(n, d)
  spec = parse_model_text(
      "".join(f"c{j} : Categorical ; categories = 0, 1, 2, 3, 4 ; missing = no\n"
              for j in range(d)))
  t0 = time.perf_counter()
  res = jtwin.fit_marginals(jax.random.key(0), frame, spec, epsilon=1.0, delta=1e-7,
                            num_components=k, final_steps=steps,
                            **({"devices": devices} if devices != 1 else {}))
  wall = time.perf_counter() - t0
  return res, wall


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rows", nargs="+", type=float, default=[1e4, 1e5, 1e6, 1e7])
  ap.add_argument("--columns", nargs="+", type=int, default=[15, 50, 100])
  ap.add_argument("--k", type=int, default=200)
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--devices", type=int, default=1, help="count on this many devices")
  ap.add_argument("--quick", action="store_true", help="1e3 rows, 4 and 6 columns, K = 5")
  args = ap.parse_args(argv)
  from jtwin import parallel
  parallel.configure_cpu_devices(args.devices)      # before JAX starts its backend
  if args.quick:
    args.rows, args.columns, args.k, args.steps = [1e3], [4, 6], 5, 50
  print(common.header("jtwin napsumq scaling (library fit_marginals, selection 'all')"))
  print(f"# K = {args.k}, {args.steps} final Adam steps, 1-/2-way tables, epsilon = 1, "
        f"counted on {args.devices} device(s)")
  print("| rows | columns | tables | measured cells | cells+counting | of which measuring | fit | "
        "total | peak RSS |")
  print("|---|---|---|---|---|---|---|---|---|")
  grid = [(int(n), args.columns[0]) for n in args.rows]
  grid += [(int(args.rows[min(1, len(args.rows) - 1)]), d) for d in args.columns[1:]]
  for n, d in grid:
    res, wall = run(n, d, args.k, args.steps, args.devices)
    t = res.timings
    counting = t["cells"] + t["one-way"] + t["select and measure"]
    cells = sum(m[1] for m in res.measurements)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    measuring = t["one-way"] + t["select and measure"]      # the passes over the codes
    print(f"| {n:.0e} | {d} | {len(res.measurements)} | {cells:,} | {counting:.2f} s | "
          f"{measuring:.2f} s | "
          f"{t['fit']:.2f} s | {wall:.2f} s | {common.gib(peak)} |", flush=True)
  print("# peak RSS is the process maximum so far (monotone over the rows of the table)")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
