"""The whole default Adult run as a user runs it, from process start to files.

Usage: python benchmarks/bench_end_to_end.py [--epochs E] [--k K] [--repeat R]
                                              [--variants none,store] [--quick]

Runs `python -m jtwin fit jtwin/examples/adult.csv.gz jtwin/examples/adult_model.txt
OUT --seed 0 --num_epochs E --k K --visualize V` in a fresh subprocess
(twinify's defaults otherwise: q = 0.01, C = 1, epsilon = 1) for V = none (no
plots) and V = store (the default: three SVG plots), R times each. Reports
the median wall time (including Python start and `import jax`), jtwin's own
printed phase split ("jtwin: done in ... (load and encode ... | ...)"), the
part outside it (interpreter start, imports, argument parsing), the
steady-state time per DP step and the child's peak resident memory (os.wait4).

Note on the phase split: jtwin's "compile" phase is the first training chunk
(one epoch = 1/q steps), compile included; "training" is the rest, plus
what `jtwin.infer.fit` does outside its own timers (compiling its `setup`,
about 1.2 s on the 2-core CPU), so the per-step figure below is an upper
bound that is tight only for long runs.
`--quick` fits K = 3 for 1 epoch on 1,000 rows (smoke test only).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402

DONE_RE = re.compile(r"jtwin: done in ([0-9.]+) s \((.*)\)")
STEPS_RE = re.compile(r"T = (\d+) steps")


def parse_phases(output: str) -> tuple[float, dict]:
  """jtwin's printed total and phase split: (total_s, {phase: seconds})."""
  m = DONE_RE.search(output)
  if not m:
    raise ValueError("no 'jtwin: done in' line in the output:\n" + output[-2000:])
  phases = {}
  for part in m.group(2).split(" | "):
    name, _, value = part.rpartition(" ")
    phases[name] = float(value.rstrip("s"))
  return float(m.group(1)), phases


def _quick_data(tmp: str) -> str:
  import pandas as pd
  path = os.path.join(tmp, "adult_1000.csv")
  pd.read_csv(bc.ADULT_CSV).head(1000).to_csv(path, index=False)
  return path


def run_once(data: str, model: str, out_prefix: str, *, epochs: float, k: int,
             visualize: str, timeout: float, extra=()) -> dict:
  cmd = [sys.executable, "-m", "jtwin", "fit", data, model, out_prefix, "--seed", "0",
         "--num_epochs", f"{epochs:g}", "--k", str(k), "--visualize", visualize, *extra]
  run = bc.run_child(cmd, timeout=timeout, cwd=bc.REPO, env=bc.python_env())
  if run.returncode != 0:
    raise RuntimeError(f"jtwin fit failed (rc={run.returncode}):\n{run.output[-3000:]}")
  total, phases = parse_phases(run.output)
  steps = int(STEPS_RE.search(run.output).group(1))
  return {"wall": run.wall_s, "rss": run.max_rss_bytes, "cpu": run.cpu_s, "total": total,
          "phases": phases, "steps": steps, "cmd": cmd}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", type=float, default=200)
  p.add_argument("--k", type=int, default=50)
  p.add_argument("--sampling-ratio", type=float, default=0.01,
                 help="q (only to compute the steps of the first chunk; passed to jtwin)")
  p.add_argument("--repeat", type=int, default=1)
  p.add_argument("--variants", default="none,store",
                 help="comma-separated --visualize values to run")
  p.add_argument("--timeout", type=float, default=3600)
  p.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
  args = p.parse_args(argv)
  print(bc.header("bench_end_to_end: `jtwin fit` on Adult, whole process"), flush=True)
  variants = [v for v in args.variants.split(",") if v]
  with tempfile.TemporaryDirectory() as tmp:
    data, model = bc.ADULT_CSV, bc.ADULT_MODEL
    if args.quick:
      data, args.epochs, args.k, args.repeat = _quick_data(tmp), 1, 3, 1
      variants = variants[:1] if variants else ["none"]
    print(f"# data {os.path.relpath(data, bc.REPO) if not args.quick else data}, "
          f"K={args.k}, epochs={args.epochs:g}, q={args.sampling_ratio:g}, C=1, eps=1, "
          f"seed 0; median of {args.repeat} run(s) per variant", flush=True)
    results = {}
    for v in variants:
      runs = []
      for r in range(args.repeat):
        res = run_once(data, model, os.path.join(tmp, f"out_{v}_{r}"), epochs=args.epochs,
                       k=args.k, visualize=v, timeout=args.timeout,
                       extra=["--sampling_ratio", f"{args.sampling_ratio:g}"])
        runs.append(res)
        print(f"  run {r + 1}/{args.repeat} --visualize {v}: wall {res['wall']:.1f} s, "
              f"peak RSS {bc.gib(res['rss'])}, load {bc.loadavg()}", flush=True)
      results[v] = runs
    if results:
      print("command: " + " ".join(os.path.relpath(c, bc.REPO) if c.startswith(bc.REPO)
                                     else c for c in next(iter(results.values()))[0]["cmd"]))
    chunk = max(1, int(-(-1 // args.sampling_ratio)))
    for v, runs in results.items():
      med = lambda f: bc.median([f(r) for r in runs])
      steps = runs[0]["steps"]
      names = list(runs[0]["phases"])
      outside = med(lambda r: r["wall"] - r["total"])
      print(f"\n--visualize {v}: T = {steps} DP steps")
      print(f"  wall time (process start to exit)   {med(lambda r: r['wall']):9.2f} s")
      print(f"  CPU time (user+sys)                 {med(lambda r: r['cpu']):9.2f} s")
      print(f"  peak resident memory                {bc.gib(med(lambda r: r['rss'])):>11}")
      print(f"  jtwin's 'done in' total             {med(lambda r: r['total']):9.2f} s")
      print(f"  outside it (python start, imports)  {outside:9.2f} s")
      for n in names:
        print(f"    {n:<32}  {med(lambda r: r['phases'].get(n, float('nan'))):9.2f} s")
      if steps > chunk:
        per = med(lambda r: r["phases"].get("training", float("nan")) / (r["steps"] - chunk))
        print(f"  steady-state time per DP step       {per * 1e3:9.2f} ms "
              f"(training / (T - {chunk}); includes fit's setup compile)")
        first = med(lambda r: r["phases"].get("compile", float("nan")))
        print(f"  compile alone (first chunk minus {chunk} steady steps) "
              f"{first - chunk * per:6.2f} s")
    print(f"\n# loadavg at end {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
