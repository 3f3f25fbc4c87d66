"""jtwin vs twinify 2.0.0 on the same data, model file and settings, in one run.

Usage: python benchmarks/bench_vs_twinify.py [--epochs 1,2] [--twinify-python PATH]
                                             [--data CSV] [--timeout S] [--no-install]

Both tools fit UCI Adult (default /work/shared/data/adult/adult_train.csv, all
15 columns) with benchmarks/data/adult_twinify_model.txt (plain twinify
grammar: age, education_num, hours_per_week, capital_gain, capital_loss
Poisson; fnlwgt Normal; the rest Categorical/Bernoulli), epsilon = 1,
K = 50, q = 0.01, C = 1, delta = 0.1/N, seed 123, then sample N rows and
write a CSV. Commands:

  TWINIFY_VENV/bin/python benchmarks/_twinify_shim.py T.json vi DATA MODEL OUT \
      --epsilon 1 --seed 123 --k 50 --num_epochs E
  python -m jtwin fit DATA MODEL OUT --epsilon 1 --seed 123 --k 50 --num_epochs E \
      --visualize none

(the shim calls twinify's own CLI `main()` and only timestamps its phases;
twinify 2.0.0 draws no plots, hence jtwin's --visualize none). Reported for
each E: end-to-end wall time (process start to exit), each tool's phase
split, CPU time and peak resident memory (os.wait4). Then the steady-state
time per epoch (100 DP steps): twinify's is the time between its per-epoch
progress callbacks (needs an E >= 2); jtwin's is the difference of the
'training' phases of its shortest and longest runs divided by the difference
in epochs (jtwin's first epoch is in 'compile', and 'training' also holds a
fixed setup that cancels in the difference). jtwin also runs alone at
--jtwin-full epochs (default 200, twinify's default); twinify's time for that
is EXTRAPOLATED (its 1-epoch wall + the remaining epochs at its steady-state
rate), since it would take hours. Each twinify run is bounded by --timeout
(default 15 min).

twinify lives in its own virtual environment (benchmarks/twinify_setup.sh;
default /tmp/twinify_venv or $TWINIFY_VENV) and is never a jtwin dependency.
If the default venv is missing, the setup script is run (unless
--no-install). If twinify is not available, the script says so and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402
from bench_end_to_end import STEPS_RE, parse_phases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "data", "adult_twinify_model.txt")
DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                    "shared", "data", "adult", "adult_train.csv")   # ../shared beside the repo
SHIM = os.path.join(HERE, "_twinify_shim.py")
SETUP = os.path.join(HERE, "twinify_setup.sh")
DEFAULT_VENV = os.environ.get("TWINIFY_VENV", "/tmp/twinify_venv")


def twinify_available(python: str) -> tuple[bool, str]:
  if not (os.path.isfile(python) and os.access(python, os.X_OK)):
    return False, f"{python} does not exist"
  try:
    r = subprocess.run([python, "-c", "import twinify, jax; print(jax.__version__)"],
                       capture_output=True, text=True, timeout=300)
  except (OSError, subprocess.SubprocessError) as e:
    return False, f"{python}: {e}"
  if r.returncode != 0:
    return False, f"{python} cannot import twinify: {r.stderr.strip().splitlines()[-1:]}"
  return True, f"twinify 2.0.0 with jax {r.stdout.strip()}"


def twinify_phases(marks: dict, wall: float) -> tuple[dict, list]:
  """Phase split (seconds) from the shim's timestamps, and the epoch end times."""
  first = lambda k: marks.get(k, [float("nan")])[0]
  last = lambda k: marks.get(k, [float("nan")])[-1]
  dur = lambda k: sum(e - s for s, e in zip(marks.get(k + ":start", []),
                                             marks.get(k + ":end", [])))
  epochs = marks.get("epoch_done", [])
  ph = {
      "python start and import": first("imported"),   # from the shim's start
      "read csv": dur("read_csv") if "read_csv:start" in marks else float("nan"),
      "model setup": dur("model_setup"),
      "noise calibration": dur("accountant"),
      "svi init": dur("svi_init"),
      "compile + first epoch": (epochs[0] - last("svi_init:end")) if epochs else float("nan"),
      "later epochs": (epochs[-1] - epochs[0]) if len(epochs) > 1 else 0.0,
      "after training (in fit)": (last("fit:end") - epochs[-1]) if epochs else float("nan"),
      "store result": dur("store"),
      "sampling": dur("sampling"),
      "writing csv": dur("to_csv"),
  }
  return ph, epochs


def run_twinify(python: str, data: str, epochs: int, tmp: str, timeout: float) -> dict:
  out_json = os.path.join(tmp, f"twinify_{epochs}.json")
  cmd = [python, SHIM, out_json, "vi", data, MODEL, os.path.join(tmp, f"twinify_{epochs}"),
         "--epsilon", "1", "--seed", "123", "--k", "50", "--num_epochs", str(epochs)]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.pop("PYTHONPATH", None)
  run = bc.run_child(cmd, timeout=timeout, cwd=tmp, env=env)
  res = {"cmd": cmd, "wall": run.wall_s, "rss": run.max_rss_bytes, "cpu": run.cpu_s,
         "rc": run.returncode, "output": run.output}
  if run.returncode is None:
    res["error"] = f"timed out after {timeout:.0f} s"
  elif run.returncode != 0 or not os.path.exists(out_json):
    res["error"] = f"rc={run.returncode}: " + run.output[-1500:]
  if os.path.exists(out_json):
    with open(out_json) as f:
      marks = json.load(f)["marks"]
    res["phases"], ep = twinify_phases(marks, run.wall_s)
    diffs = [b - a for a, b in zip(ep, ep[1:])]
    res["epoch_s"] = bc.median(diffs) if diffs else float("nan")
  return res


def run_jtwin(data: str, epochs: int, tmp: str, timeout: float) -> dict:
  cmd = [sys.executable, "-m", "jtwin", "fit", data, MODEL, os.path.join(tmp, f"jtwin_{epochs}"),
         "--epsilon", "1", "--seed", "123", "--k", "50", "--num_epochs", str(epochs),
         "--visualize", "none"]
  run = bc.run_child(cmd, timeout=timeout, cwd=bc.REPO, env=bc.python_env())
  res = {"cmd": cmd, "wall": run.wall_s, "rss": run.max_rss_bytes, "cpu": run.cpu_s,
         "rc": run.returncode}
  if run.returncode != 0:
    res["error"] = f"rc={run.returncode}: " + run.output[-1500:]
    return res
  total, phases = parse_phases(run.output)
  steps = int(STEPS_RE.search(run.output).group(1))
  res.update(total=total, phases=phases, steps=steps)
  res["phases"] = {"python start and import": run.wall_s - total, **phases}
  res["epoch_s"] = (phases["training"] / (steps - 100) * 100) if steps > 100 else float("nan")
  return res


def row(name, a, b, unit="s"):
  ratio = a / b if b and b == b else float("nan")
  print(f"{name:<28} {a:>9.2f}{unit:<2} {b:>9.2f}{unit:<2} {ratio:>7.1f}x")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", default="1,2", help="comma-separated epoch counts to run")
  p.add_argument("--twinify-python", default=None,
                 help=f"twinify venv's python (default {DEFAULT_VENV}/bin/python)")
  p.add_argument("--data", default=DATA)
  p.add_argument("--timeout", type=float, default=900, help="per twinify run, seconds")
  p.add_argument("--no-install", action="store_true",
                 help="do not run twinify_setup.sh when the default venv is missing")
  p.add_argument("--jtwin-full", type=int, default=200,
                 help="also run jtwin alone at this many epochs (0: no); twinify's time "
                      "there is extrapolated from its steady-state epoch")
  p.add_argument("--quick", action="store_true",
                 help="only check that twinify is available (smoke test)")
  args = p.parse_args(argv)
  print(bc.header("bench_vs_twinify: jtwin vs twinify 2.0.0 on Adult, same model file"),
        flush=True)
  python = args.twinify_python or os.path.join(DEFAULT_VENV, "bin", "python")
  ok, why = twinify_available(python)
  if not ok and args.twinify_python is None and not args.no_install and not args.quick:
    print(f"# twinify venv missing ({why}); running {os.path.relpath(SETUP, bc.REPO)} "
          f"{DEFAULT_VENV}", flush=True)
    r = subprocess.run(["bash", SETUP, DEFAULT_VENV], capture_output=True, text=True)
    if r.returncode != 0:
      why = "install failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    else:
      ok, why = twinify_available(python)
  if not ok:
    print(f"twinify not available: {why}. Install it with "
          f"`bash benchmarks/twinify_setup.sh [VENV]` (needs PyPI); nothing measured.")
    return 0
  print(f"# twinify: {why} ({python})")
  if args.quick:
    print("# --quick: twinify is available; no runs")
    return 0
  if not os.path.exists(args.data):
    print(f"twinify comparison skipped: data file {args.data} not found")
    return 0
  epochs_list = [int(e) for e in args.epochs.split(",") if e]
  print(f"# data {args.data}; model {os.path.relpath(MODEL, bc.REPO)}; epsilon 1, K 50, "
        f"q 0.01, C 1, delta 0.1/N, seed 123; epochs {epochs_list}", flush=True)
  results, full = [], None
  with tempfile.TemporaryDirectory() as tmp:
    for e in epochs_list:
      j = run_jtwin(args.data, e, tmp, args.timeout)
      print(f"  jtwin   E={e}: wall {j['wall']:.1f} s, peak {bc.gib(j['rss'])}, "
            f"load {bc.loadavg()}" + (f"  ERROR {j['error']}" if "error" in j else ""),
            flush=True)
      t = run_twinify(python, args.data, e, tmp, args.timeout)
      print(f"  twinify E={e}: wall {t['wall']:.1f} s, peak {bc.gib(t['rss'])}, "
            f"load {bc.loadavg()}" + (f"  ERROR {t['error']}" if "error" in t else ""),
            flush=True)
      results.append((e, j, t))
    if args.jtwin_full:
      full = run_jtwin(args.data, args.jtwin_full, tmp, args.timeout)
      print(f"  jtwin   E={args.jtwin_full}: wall {full['wall']:.1f} s, peak "
            f"{bc.gib(full['rss'])}, load {bc.loadavg()}"
            + (f"  ERROR {full['error']}" if "error" in full else ""), flush=True)
  print("\ncommands:\n  " + " ".join(results[0][2]["cmd"][:1] + ["<shim>"] + results[0][2]["cmd"][3:])
        + "\n  " + " ".join(results[0][1]["cmd"]))
  for e, j, t in results:
    print(f"\n## {e} epoch(s) = {100 * e} DP steps")
    print(f"{'':<28} {'twinify':>11} {'jtwin':>11} {'ratio':>8}")
    row("end-to-end wall", t["wall"], j["wall"])
    row("CPU time (user+sys)", t["cpu"], j["cpu"])
    print(f"{'peak resident memory':<28} {bc.gib(t['rss']):>11} {bc.gib(j['rss']):>11} "
          f"{t['rss'] / j['rss']:>7.1f}x")
    for name, who in (("twinify", t), ("jtwin", j)):
      if "phases" in who:
        print(f"  {name} phases: " + " | ".join(f"{k} {v:.1f}s" for k, v in who["phases"].items()))
      if "error" in who:
        print(f"  {name} ERROR: {who['error'][-800:]}")
  # Steady state: twinify from its per-epoch callbacks (largest E >= 2); jtwin from the
  # difference of the 'training' phases of its shortest and longest runs (the same
  # fixed setup is in both, so it cancels).
  tw = [t for e, _, t in results if e >= 2 and t.get("epoch_s", float("nan")) == t.get("epoch_s")]
  tw_epoch = tw[-1]["epoch_s"] if tw else float("nan")
  jruns = [(e, j) for e, j, _ in results if "phases" in j]
  if full is not None and "phases" in full:
    jruns.append((args.jtwin_full, full))
  jt_epoch = float("nan")
  if len(jruns) >= 2:
    (ea, ja), (eb, jb) = min(jruns, key=lambda r: r[0]), max(jruns, key=lambda r: r[0])
    if eb > ea:
      jt_epoch = (jb["phases"]["training"] - ja["phases"]["training"]) / (eb - ea)
  print("\n## steady state, one epoch = 100 DP steps (batch ~326)")
  print(f"{'':<28} {'twinify':>11} {'jtwin':>11} {'ratio':>8}")
  row("time per epoch", tw_epoch, jt_epoch)
  row("time per DP step", tw_epoch * 10, jt_epoch * 10, unit="ms")
  if full is not None and "phases" in full:
    one = [t for e, _, t in results if e == 1 and "error" not in t]
    est = (one[0]["wall"] + (args.jtwin_full - 1) * tw_epoch) if one else float("nan")
    print(f"\n## {args.jtwin_full} epochs (twinify's default run)")
    print(f"{'':<28} {'twinify':>11} {'jtwin':>11} {'ratio':>8}")
    row("end-to-end wall", est, full["wall"])
    print(f"  twinify: EXTRAPOLATED = its 1-epoch wall + {args.jtwin_full - 1} x its steady "
          f"epoch ({est / 3600:.2f} h); jtwin: measured")
    print("  jtwin phases: " + " | ".join(f"{k} {v:.1f}s" for k, v in full["phases"].items()))
  print(f"\n# loadavg at end {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
