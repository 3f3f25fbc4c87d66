"""The marginal method's measurement pass: per-table numpy vs one blocked pass vs devices.

Usage: python benchmarks/bench_measure_sharded.py [--rows 1e6 1e7] [--columns 15]
           [--methods numpy,block,dev1,dev2] [--repeat 3] [--memmap] [--quick]

Counts every 1- and 2-way table (the workload of `fit_marginals(selection="all")`)
of latent-class codes (5 categories per column, as bench_napsumq_scaling.py) with:
  * numpy: `clique_counts`, one `np.bincount` per table over all rows (what
    `fit_marginals` did before `make_counter`);
  * block: `counting.count_tables`, every table in one pass over row blocks
    (`fit_marginals(devices=1)` now);
  * devD: `counting_sharded.count_tables_sharded` on D devices (rows
    sharded, int32 scatter-adds, one psum); on a CPU D host devices
    (XLA_FLAGS=--xla_force_host_platform_device_count=D), on a GPU/TPU the
    first D accelerators.

The codes are written once to an int8 .npy file; every (rows, method) runs
in its own child process, which loads it (in memory, or memory-mapped with
--memmap), counts twice (the first call includes JAX's compilation, the
time reported is the second) and reports its peak RSS. The children
alternate methods --repeat times so a change in the machine's load hits
every method alike; the table gives medians and the ratio of numpy's
median time to each method's. The noise is not timed: it is one host draw
per cell whichever method counted.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as bc  # noqa: E402


def _codes(n: int, d: int, seed: int = 0, block: int = 1 << 20) -> np.ndarray:
  """int8 [n, d] latent-class codes (10 classes, 5 categories), drawn in row blocks."""
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.full(5, 0.5), size=(10, d)).cumsum(-1)   # [class, column, cat]
  out = np.empty((n, d), np.int8)
  for lo in range(0, n, block):
    m = min(block, n - lo)
    z = rng.integers(0, 10, m)
    u = rng.random((m, d))
    out[lo:lo + m] = (u[:, :, None] > probs[z]).sum(-1)
  return out


def _peak_rss() -> int:
  """This process's peak RSS in bytes (VmHWM: unlike ru_maxrss, not inherited from
  the parent across fork + exec)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(path: str, method: str, memmap: bool) -> dict:
  from jtwin.marginals import counting, counting_sharded
  from jtwin.marginals.measure import clique_counts
  codes = np.load(path, mmap_mode="r" if memmap else None)
  if not memmap:
    codes = np.ascontiguousarray(codes)
  base_rss = _peak_rss()
  d = codes.shape[1]
  sizes = [5] * d
  cliques = [(j,) for j in range(d)] + list(itertools.combinations(range(d), 2))
  if method == "numpy":
    run = lambda: [clique_counts(codes, sizes, c) for c in cliques]
  elif method == "block":
    run = lambda: counting.count_tables(codes, sizes, cliques)
  else:
    devices = int(method[3:])
    from jtwin import parallel
    mesh = parallel.make_mesh(devices)
    run = lambda: counting_sharded.count_tables_sharded(codes, sizes, cliques, mesh)
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    tables = run()
    times.append(time.perf_counter() - t0)
  peak = _peak_rss()            # before importing JAX for the report below
  digest = hashlib.sha1(np.concatenate(tables).astype(np.int64).tobytes()).hexdigest()[:12]
  out = {"first": times[0], "time": times[1], "tables": len(cliques), "peak": peak,
         "base": base_rss, "digest": digest, "device": "host (numpy)", "num_devices": 0}
  if method.startswith("dev"):
    import jax
    out.update(device=bc.device_info(), num_devices=len(jax.devices()))
  return out


def _run_child(path: str, method: str, memmap: bool) -> dict:
  env = dict(os.environ)
  if method.startswith("dev") and int(method[3:]) > 1:
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count="
                        + method[3:]).strip()
  cmd = [sys.executable, os.path.abspath(__file__), "--child", path, method]
  out = subprocess.run(cmd + (["--memmap"] if memmap else []), capture_output=True, text=True,
                       env=env, timeout=3600)
  if out.returncode != 0:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rows", nargs="+", type=float, default=[1e6, 1e7])
  ap.add_argument("--columns", type=int, default=15)
  ap.add_argument("--methods", default="numpy,block,dev1,dev2")
  ap.add_argument("--repeat", type=int, default=3)
  ap.add_argument("--memmap", action="store_true", help="children memory-map the codes")
  ap.add_argument("--quick", action="store_true", help="1e4 rows, 4 columns, 1 repeat")
  ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child:
    print(json.dumps(_child(*args.child, args.memmap)))
    return 0
  if args.quick:
    args.rows, args.columns, args.repeat = [1e4], 4, 1
  methods = [m for m in args.methods.split(",") if m]
  print(bc.header("jtwin napsumq measurement pass: numpy per table vs blocks vs devices"))
  print(f"# every 1- and 2-way table of {args.columns} columns x 5 categories; "
        f"{'memory-mapped' if args.memmap else 'in-memory'} int8 codes; "
        f"median of {args.repeat} alternating children, second call timed")
  print("| rows | method | devices | time | first call | vs numpy | peak RSS | codes loaded | "
        "same counts |")
  print("|---|---|---|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for n in (int(x) for x in args.rows):
      path = os.path.join(tmp, f"codes_{n}.npy")
      np.save(path, _codes(n, args.columns))
      runs = {m: [] for m in methods}
      for _ in range(args.repeat):
        for m in methods:
          runs[m].append(_run_child(path, m, args.memmap))
      ref = bc.median([r["time"] for r in runs["numpy" if "numpy" in runs else methods[0]]])
      digests = {r["digest"] for rs in runs.values() for r in rs}
      for m in methods:
        rs = runs[m]
        t = bc.median([r["time"] for r in rs])
        print(f"| {n:.0e} | {m} | {rs[0]['num_devices'] if m.startswith('dev') else '-'} | "
              f"{t:.3f} s | {bc.median([r['first'] for r in rs]):.3f} s | {ref / t:.2f}x | "
              f"{bc.gib(max(r['peak'] for r in rs))} | {bc.gib(rs[0]['base'])} | "
              f"{'yes' if len(digests) == 1 else 'NO'} |", flush=True)
  print(f"# devices: {'; '.join(sorted({r['device'] for rs in runs.values() for r in rs}))}; "
        f"loadavg after: {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
