"""Data larger than memory (issue 12, item 3): streaming encode and training from a memmap.

For each N (default 10^6 and 10^7 rows) a synthetic table of 15 columns is
made (6 categorical with 3 to 50 string levels, 1 Bernoulli, 4 Normal (one
with 5% missing), 2 binned integers, 1 Poisson, 1 integer-coded categorical):

* as a CSV file (chunk by chunk, never whole in memory), then encoded by
  `jtwin.table_store.stream_encode` into a memory-mapped table with the DP
  domain step of `jtwin fit` (the model file leaves 4 items undeclared, so
  a first pass counts the histograms and a second encodes: two passes);
* or, for N >= --direct-from (default 10^8), generated straight into the
  table store (codes and standardised values drawn in numpy, chunk by chunk),
  because writing and parsing a 10^8-row CSV takes longer than this machine
  has; the encode column then shows "-".

Then a DP fit (K = 50, q = 0.01, sigma given: the per-step cost of a
calibrated run, without its calibration) trains from the memory map with
`infer.run_loop(..., stream=True)` (what `infer.fit(..., stream=True)` and
`jtwin fit --stream on` run): each step's Poisson batch is gathered on the
host and only those rows go to the device. It runs two chunks of steps as
`fit` chunks the run (one epoch of 100 steps, fewer when q N > 83,000: 82
at 10^7, 8 at 10^8 rows; `--steps` caps it): the first compiles and is not
timed (`compile s` is its time minus the second's), the second is timed; the
epoch time is its time x 100 / steps (extrapolated when steps < 100: said
in the table).

Each phase runs in a fresh child process; its peak resident memory is
reported two ways: `peak RSS` (ru_maxrss: includes the memory-mapped table's
file pages that a phase touched, which the kernel can drop at any time: they
are page cache, not the process's own memory), and `peak anon` (the largest
RssAnon seen, sampled every 20 ms: the process's own memory, which is what
must stay flat in N).

  python benchmarks/bench_large_data.py [--rows 1e6 1e7 1e8] [--steps S]
      [--dir DIR] [--quick] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import _bench_common as bc  # noqa: E402

CAT_LEVELS = (3, 5, 8, 12, 20, 50)
MODEL = """\
c0 : Categorical ; categories = L0, L1, L2 ; missing = no
c1 : Categorical ; categories = L0, L1, L2, L3, L4 ; missing = no
c2 : Categorical ; categories = L0, L1, L2, L3, L4, L5, L6, L7 ; missing = no
c3 : Categorical ; categories = {c3} ; missing = no
c4 : Categorical ; categories = {c4} ; missing = no
c5 : Categorical
b0 : Bernoulli ; categories = no, yes ; missing = no
n0 : Normal ; bounds = -10, 10 ; integer = no ; missing
n1 : Normal ; bounds = 0, 200 ; integer = no ; missing = no
n2 : Normal ; loc = 5 ; scale = 3 ; integer = no ; missing = no
n3 : Normal ; missing = no
i0 : Categorical ; bins = 17, 25, 35, 45, 55, 65, 91 ; integer ; missing = no
i1 : Categorical ; bins = 1, 20, 35, 40, 41, 50, 100 ; integer ; missing = no
p0 : Poisson ; bounds = 0, 50 ; missing = no
m0 : Categorical ; categories = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 ; missing = no
""".format(c3=", ".join(f"L{k}" for k in range(12)), c4=", ".join(f"L{k}" for k in range(20)))
# Undeclared: c5's categories and missing flag, n3's standardisation and integer flag.
_CHUNK = 500_000


def _frame(rng, n: int):
  """One chunk of the synthetic table (pandas DataFrame, raw values as in a CSV)."""
  import numpy as np
  import pandas as pd
  cols = {}
  z = rng.integers(0, 4, n)                      # a latent class: columns depend on each other
  for j, levels in enumerate(CAT_LEVELS):
    codes = (rng.integers(0, levels, n) + z * (j + 1)) % levels
    cols[f"c{j}"] = np.array([f"L{k}" for k in range(levels)], dtype=object)[codes]
  cols["b0"] = np.where(rng.random(n) < 0.3 + 0.1 * z, "yes", "no")
  n0 = np.round(rng.normal(z - 1.5, 2.0, n), 3)
  n0[rng.random(n) < 0.05] = np.nan
  cols["n0"] = n0
  cols["n1"] = np.round(np.clip(rng.gamma(2.0, 20.0 + 5 * z, n), 0, 200), 2)
  cols["n2"] = np.round(rng.normal(5 + z, 3.0, n), 3)
  cols["n3"] = np.round(rng.lognormal(3.0 + 0.2 * z, 0.5, n), 2)
  cols["i0"] = np.clip(np.round(rng.normal(38 + 4 * z, 12, n)), 17, 90).astype(np.int64)
  cols["i1"] = np.clip(np.round(rng.normal(40, 10, n)), 1, 99).astype(np.int64)
  cols["p0"] = np.minimum(rng.poisson(1.0 + z, n), 50)
  cols["m0"] = rng.integers(1, 13, n)
  return pd.DataFrame(cols)


def _write_csv(path: str, rows: int, seed: int) -> None:
  import numpy as np
  rng = np.random.default_rng(seed)
  with open(path, "w", newline="") as f:
    for start in range(0, rows, _CHUNK):
      _frame(rng, min(_CHUNK, rows - start)).to_csv(f, index=False, header=start == 0)


def _declared_spec():
  """MODEL with its undeclared items filled in (for a store generated directly)."""
  from jtwin.spec import parse_model_text
  text = MODEL.replace("c5 : Categorical\n", "c5 : Categorical ; categories = " + ", ".join(
      f"L{k}" for k in range(CAT_LEVELS[5])) + " ; missing = no\n")
  text = text.replace("n3 : Normal ; missing = no", "n3 : Normal ; loc = 25 ; scale = 15 ; "
                      "integer = no ; missing = no")
  return parse_model_text(text)


def _generate_store(directory: str, rows: int, seed: int) -> None:
  """The table store of `rows` synthetic rows, encoded chunk by chunk (no CSV)."""
  import numpy as np
  from jtwin import data as jdata
  from jtwin import table_store as ts
  domain = ts.declared_domain(_declared_spec())
  rng = np.random.default_rng(seed)
  tmp = directory + ".tmp"
  os.mkdir(tmp, 0o700)
  d = len(domain.columns)
  with ts._NpyWriter(os.path.join(tmp, "values.npy"), np.float32, d) as wv, \
       ts._NpyWriter(os.path.join(tmp, "observed.npy"), np.bool_, d) as wo:
    for start in range(0, rows, _CHUNK):
      enc = jdata.encode(_frame(rng, min(_CHUNK, rows - start)), domain)
      wv.append(enc.values)
      wo.append(enc.observed)
  with open(os.path.join(tmp, "table.json"), "w") as f:
    json.dump({"version": 1, "rows": rows, "domain": domain.to_dict()}, f)
  os.rename(tmp, directory)


class _AnonPeak:
  """Largest RssAnon (MiB) of this process, sampled in a thread."""

  def __init__(self, every: float = 0.02):
    self.peak, self._stop, self.every = 0.0, threading.Event(), every
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, _status("RssAnon"))
      self._stop.wait(self.every)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, _status("RssAnon"))


def _status(field: str) -> float:
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return float("nan")


def _peak_rss() -> float:
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_encode(csv: str, store: str, chunk_rows: int) -> dict:
  import numpy as np
  from jtwin import dp_domain, table_store
  from jtwin.spec import parse_model_text
  spec = parse_model_text(MODEL)

  def release(counts, spec):
    return dp_domain.plan_release(np.random.default_rng(0), counts, spec, epsilon=1.0,
                                  delta=None)
  with _AnonPeak() as anon:
    t = time.perf_counter()
    out = table_store.stream_encode(csv, spec, store, chunk_rows=chunk_rows, release=release)
    seconds = time.perf_counter() - t
  return {"seconds": seconds, "peak_rss": _peak_rss(), "peak_anon": anon.peak,
          "rows": out.store.num_rows, "released": len(out.public.release.released)}


def _child_fit(store: str, steps: int, k: int) -> dict:
  """Two chunks of DP steps from the memory map, as `fit` chunks the run (or of
  `steps` steps if given, > 0): the first compiles (and is discarded), the second
  is timed."""
  import jax
  from jtwin import infer, table_store
  from jtwin.models import make_mixture_model
  table = table_store.open_store(store)
  n = table.num_rows
  model = make_mixture_model(table.domain.features(), k)
  q = 0.01
  with _AnonPeak() as anon:
    t = time.perf_counter()
    chunk = infer.plan_fit(model, n, noise_multiplier=1.0, delta=0.1 / n, sampling_ratio=q,
                           num_epochs=1.0).chunk                # fit's own chunk size
    steps = min(steps, chunk) if steps > 0 else chunk
    plan = infer.plan_fit(model, n, noise_multiplier=1.0, delta=0.1 / n, sampling_ratio=q,
                          num_epochs=2 * steps * q)
    plan = plan._replace(chunk=steps, num_chunks=2)
    run = infer.setup_fit(jax.random.key(0), model, table.values, table.observed, plan)
    _, diag, first, timed = infer.run_loop(plan, run, table.values, table.observed,
                                           stream=True)
    total = time.perf_counter() - t
  return {"steps": steps, "compile": max(first - timed, 0.0), "training": timed,
          "total": total, "peak_rss": _peak_rss(), "peak_anon": anon.peak,
          "mean_batch": float(diag["mean_batch_size"].mean()), "rows": n}


def _run_child(argv: list, script: str = __file__) -> dict:
  """Runs `script --child ARGV` in a fresh process; its last JSON line."""
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
  proc = subprocess.run([sys.executable, os.path.abspath(script), "--child", *argv],
                        capture_output=True, text=True, env=env)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"child {argv[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1])


def _human(n: int) -> str:
  e = len(str(n)) - 1
  return f"10^{e}" if n == 10**e else f"{n:,}"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", type=float, nargs="+", default=[1e6, 1e7])
  p.add_argument("--steps", type=int, default=0,
                 help="DP steps timed (default: one chunk as fit runs it: 100 = one epoch, "
                 "fewer for q N > 83,000, e.g. 8 at 10^8 rows)")
  p.add_argument("--k", type=int, default=50)
  p.add_argument("--chunk-rows", type=int, default=100_000)
  p.add_argument("--direct-from", type=float, default=1e8,
                 help="from this N on, generate the table store directly (no CSV)")
  p.add_argument("--dir", default=None, help="working directory (default: a new temp dir)")
  p.add_argument("--keep", action="store_true", help="keep the CSV files and stores")
  p.add_argument("--quick", action="store_true",
                 help="20,000 rows (CSV) and 30,000 (generated), K = 5, 10 steps")
  p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    kind, *rest = args.child
    if kind == "encode":
      out = _child_encode(rest[0], rest[1], int(rest[2]))
    elif kind == "fit":
      out = _child_fit(rest[0], int(rest[1]), int(rest[2]))
    else:
      _generate_store(rest[0], int(rest[1]), int(rest[2]))
      out = {"peak_rss": _peak_rss()}
    print(json.dumps(out))
    return 0
  if args.quick:   # both paths: through a CSV, and generated directly into the store
    args.rows, args.k, args.steps, args.direct_from = [2e4, 3e4], 5, 10, 3e4
  print(bc.header("bench_large_data: streaming encode and DP training from a memory map"))
  work = args.dir or tempfile.mkdtemp(prefix="jtwin_bench_large_", dir=os.getcwd())
  os.makedirs(work, exist_ok=True)
  print(f"# K = {args.k}, q = 0.01, sigma = 1 (given), 15 columns, chunk_rows = "
        f"{args.chunk_rows:,}; work dir {work}")
  results = []
  try:
    for rows in (int(r) for r in args.rows):
      steps = args.steps
      store = os.path.join(work, f"store_{rows}")
      shutil.rmtree(store, ignore_errors=True)
      enc = None
      if rows >= args.direct_from:
        t = time.perf_counter()
        _run_child(["generate", store, str(rows), "0"])
        made = f"generated directly into the store in {time.perf_counter() - t:.0f} s"
      else:
        csv = os.path.join(work, f"data_{rows}.csv")
        if not os.path.exists(csv):
          t = time.perf_counter()
          _write_csv(csv, rows, 0)
          made = (f"CSV {os.path.getsize(csv) / 2**30:.2f} GiB written in "
                  f"{time.perf_counter() - t:.0f} s")
        else:
          made = f"CSV {os.path.getsize(csv) / 2**30:.2f} GiB (existing)"
        enc = _run_child(["encode", csv, store, str(args.chunk_rows)])
        if not args.keep:
          os.remove(csv)
      size = sum(os.path.getsize(os.path.join(store, f)) for f in os.listdir(store))
      fit = _run_child(["fit", store, str(steps), str(args.k)])
      if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
      epoch = fit["training"] * 100.0 / fit["steps"]
      print(f"# N = {_human(rows)}: {made}; store {size / 2**30:.2f} GiB; "
            f"mean batch {fit['mean_batch']:.0f}; {fit['steps']} steps timed"
            + ("" if fit["steps"] >= 100 else " (epoch extrapolated)"), flush=True)
      results.append((rows, enc, fit, epoch, size))
  finally:
    if not args.keep and args.dir is None:
      shutil.rmtree(work, ignore_errors=True)
  print()
  print(f"{'N':>8} | {'encode s':>9} {'rows/s':>9} {'peak RSS':>9} {'peak anon':>9} | "
        f"{'compile s':>9} {'epoch s':>8} {'s/step':>7} {'peak RSS':>9} {'peak anon':>9}")
  for rows, enc, fit, epoch, size in results:
    e = (f"{enc['seconds']:9.1f} {rows / enc['seconds']:9.3g} {enc['peak_rss']:7.0f}Mi "
         f"{enc['peak_anon']:7.0f}Mi" if enc else f"{'-':>9} {'-':>9} {'-':>9} {'-':>9}")
    mark = "" if fit["steps"] >= 100 else "*"
    print(f"{_human(rows):>8} | {e} | {fit['compile']:9.1f} {epoch:7.1f}{mark or ' '} "
          f"{fit['training'] / fit['steps']:7.3f} {fit['peak_rss']:7.0f}Mi "
          f"{fit['peak_anon']:7.0f}Mi")
  if any(fit["steps"] < 100 for _, _, fit, _, _ in results):
    print("* epoch = 100 steps, extrapolated from the steps timed")
  print(f"# loadavg at the end {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
