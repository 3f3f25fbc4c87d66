"""Peak memory of `jtwin evaluate` at scale (issue 13, item 1).

Three cases, each in a fresh child process so that one case's memory does
not leak into the next:

* `wide`: 10^6 real and 10^6 synthetic rows x 50 columns (30 numeric, 10
  string categoricals with 5 to 200 levels, 10 small-integer columns), no
  target, through `jtwin.evaluate.evaluate`;
* `id`: 10^5 real and 10^5 synthetic rows with a 10^5-value string ID column
  (the twin's IDs are other values) and 5 ordinary columns, target `y`;
* `adult-model`: the bundled Adult data (32,561 rows) against a copy with
  every column permuted independently, through the command line with
  `--model jtwin/examples/adult_model.txt --target income -o REPORT` (CSV
  reading, the HTML report and its figures included).

For each case the child prints the resident memory after building the data
(`data RSS`) and the peak resident memory of the whole process
(`resource.getrusage(...).ru_maxrss`, which includes the data), plus the
encoded width and the wall time. `--limit-gb` caps the child's address
space (RLIMIT_AS), so an old version that would exhaust the machine stops
with MemoryError instead; `--pythonpath DIR` imports jtwin from DIR (e.g. an
older checkout extracted with `git archive`), for before/after figures.

  python benchmarks/bench_evaluate_memory.py [--cases wide id adult-model]
      [--quick] [--rows N] [--limit-gb 8] [--pythonpath DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = ("wide", "id", "adult-model")
_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_HERE)


def _rss_mib() -> float:
  """Current resident set size (MiB) from /proc, NaN where unavailable."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return float("nan")


def _peak_mib() -> float:
  import resource

  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _wide(rows: int, seed: int):
  import numpy as np
  import pandas as pd

  def make(s):
    rng = np.random.default_rng(s)
    columns = {}
    for j in range(30):
      x = rng.normal(j, 1 + j % 5, rows)
      if j % 3 == 1:
        x = np.exp(x / (5 + j))
      if j % 3 == 2:
        x = np.round(x * 10)
      x[rng.random(rows) < 0.02] = np.nan
      columns[f"num{j:02d}"] = x
    for j in range(10):
      levels = np.array([f"level_{k}" for k in range(5 + 20 * j)], dtype=object)
      columns[f"cat{j:02d}"] = levels[rng.integers(0, levels.size, rows)]
    for j in range(10):
      columns[f"int{j:02d}"] = rng.integers(0, 3 + j, rows)
    return pd.DataFrame(columns)

  return make(seed), make(seed + 1)


def _id(rows: int, seed: int):
  import numpy as np
  import pandas as pd

  def make(s, prefix):
    rng = np.random.default_rng(s)
    a = rng.integers(0, 4, rows)
    return pd.DataFrame({
        "id": [f"{prefix}{k:07d}" for k in range(rows)],
        "a": a, "b": rng.choice(["u", "v", "w"], rows),
        "x": rng.normal(size=rows) + a, "z": rng.exponential(size=rows),
        "y": np.where(rng.random(rows) < 0.2 + 0.15 * a, "yes", "no"),
    })

  return make(seed, "R"), make(seed + 1, "S")


def _child(case: str, quick: bool, rows: int | None) -> dict:
  """Builds one case's data, runs the evaluation, returns the figures."""
  import numpy as np
  import pandas as pd

  info = {"case": case}
  if case == "adult-model":
    from jtwin.evaluate import cli as ecli

    real = pd.read_csv(os.path.join(_REPO, "jtwin", "examples", "adult.csv.gz"))
    if quick:
      real = real.sample(n=1000, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(1)
    synth = pd.DataFrame({c: real[c].to_numpy()[rng.permutation(len(real))]
                          for c in real.columns})
    tmp = tempfile.mkdtemp(prefix="jtwin_bench_eval_")
    paths = [os.path.join(tmp, "real.csv"), os.path.join(tmp, "synth.csv")]
    real.to_csv(paths[0], index=False)
    synth.to_csv(paths[1], index=False)
    info["shape"] = f"{len(real):,} + {len(synth):,} rows x {real.shape[1]} columns"
    del real, synth
    parser = argparse.ArgumentParser()
    ecli.add_parser(parser.add_subparsers(dest="command"))
    prefix = os.path.join(tmp, "report")
    args = parser.parse_args(
        ["evaluate", *paths, "--target", "income", "--model",
         os.path.join(_REPO, "jtwin", "examples", "adult_model.txt"),
         "-o", prefix])
    info["data_mib"] = _rss_mib()
    start = time.perf_counter()
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      ecli.run(args)
    info["seconds"] = time.perf_counter() - start
    text = out.getvalue()
    info["classifiers"] = next((line.split(":", 1)[1].strip()
                                for line in text.splitlines()
                                if line.startswith("utility models:")), "?")
    if os.path.exists(prefix + ".json"):
      with open(prefix + ".json", encoding="utf-8") as f:
        info["encoded_width"] = json.load(f).get("settings", {}).get(
            "encoded_width")
    for name in os.listdir(tmp):
      os.unlink(os.path.join(tmp, name))
    os.rmdir(tmp)
    return info
  from jtwin.evaluate import evaluate

  if case == "wide":
    real, synth = _wide(rows or (2000 if quick else 10**6), 0)
    target = None
  else:
    real, synth = _id(rows or (2000 if quick else 10**5), 0)
    target = "y"
  info["shape"] = f"{len(real):,} + {len(synth):,} rows x {real.shape[1]} columns"
  info["data_mib"] = _rss_mib()
  start = time.perf_counter()
  results = evaluate(real, synth, target=target)
  info["seconds"] = time.perf_counter() - start
  info["encoded_width"] = results.get("settings", {}).get("encoded_width")
  info["classifiers"] = results.get("utility_backend", "-")
  return info


def _run_child(case: str, quick: bool, rows: int | None, limit_gb: float,
               pythonpath: str | None) -> dict:
  env = dict(os.environ)
  if pythonpath:
    env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, os.path.abspath(__file__), "--child", case,
         "--limit-gb", str(limit_gb)] + (["--quick"] if quick else []) + (
             ["--rows", str(rows)] if rows else [])
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return {"case": case, "error": tail[:160]}
  return json.loads(lines[-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
  parser.add_argument("--quick", action="store_true",
                      help="small sizes (2,000 rows; Adult: 1,000 rows)")
  parser.add_argument("--rows", type=int, default=None,
                      help="rows per table of the wide and id cases (default: "
                      "10^6 and 10^5; the id column has one value per row)")
  parser.add_argument("--limit-gb", type=float, default=8.0,
                      help="address-space cap of each child (default: 8)")
  parser.add_argument("--pythonpath", default=None,
                      help="import jtwin from this directory instead")
  parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    if args.limit_gb > 0:
      import resource

      cap = int(args.limit_gb * 2**30)
      resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
      info = _child(args.child, args.quick, args.rows)
    except MemoryError:
      print(json.dumps({"case": args.child,
                        "error": f"MemoryError at the {args.limit_gb:g} GB cap"}))
      return 0
    info["peak_mib"] = _peak_mib()
    print(json.dumps(info))
    return 0

  sys.path.insert(0, _HERE)
  from _bench_common import header

  print(header("jtwin evaluate: peak resident memory per case"))
  print(f"# jtwin imported from {args.pythonpath or 'this checkout'}; child "
        f"address space capped at {args.limit_gb:g} GB")
  print("| case | data | data RSS, MiB | peak RSS, MiB | encoded width | "
        "utility models | seconds |")
  print("|---|---|---:|---:|---:|---|---:|")
  for case in args.cases:
    r = _run_child(case, args.quick, args.rows, args.limit_gb, args.pythonpath)
    if "error" in r:
      print(f"| {case} | - | - | failed: {r['error']} | - | - | - |")
      continue
    width = r.get("encoded_width")
    models = str(r.get("classifiers", "-")).split(" (")[0]
    print(f"| {case} | {r['shape']} | {r['data_mib']:,.0f} | "
          f"{r['peak_mib']:,.0f} | {'-' if width is None else f'{width:,}'} | "
          f"{models} | {r['seconds']:.1f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
