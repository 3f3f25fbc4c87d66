"""DP step time on 1 vs D devices (data-parallel `fit(devices=D)`), measured in one run.

Usage: python benchmarks/bench_devices.py [--devices 1,2] [--cases adult,synthetic]
                                          [--rows 1000000] [--k 50] [--epochs 3]
                                          [--repeat 3] [--quick]

Cases (q = 0.01, sigma = 1, C = 1, the default model settings):
  * adult: the bundled Adult example (32,561 rows, the bundled model file), K = 50;
  * synthetic: --rows rows (default 10^6) with Adult's columns drawn from a
    randomly initialised mixture (as in bench_scaling.py), K = 50.

Every (case, device count) runs in its own child process; the child for D
devices gets XLA_FLAGS=--xla_force_host_platform_device_count=D on a CPU (D =
1 gets no flag: the default single-device client, as `jtwin fit` runs), or
uses the first D accelerators on a GPU/TPU. The children alternate (1, 2, 1,
2, ...) --repeat times so that a change in the machine's load hits every
device count alike. The time per DP step is `fit`'s training time (the
chunks after the first; the first chunk, which includes compilation, is
reported as 'first') over the steps it ran; the ratio is the median 1-device
step time over the median D-device one (> 1: D devices are faster).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402

Q = 0.01


def _ints(text):
  return [int(float(x)) for x in text.split(",") if x]


def worker(case: str, devices: int, rows: int, k: int, epochs: float) -> dict:
  import jax
  from jtwin import infer, make_mixture_model
  t0 = time.perf_counter()
  if case == "adult":
    model, values, observed, _ = bc.adult_model(k)
  else:
    import bench_scaling
    model = make_mixture_model(bench_scaling._features(), num_components=k)
    values, observed = bench_scaling._generate(model, rows)
  t_data = time.perf_counter() - t0
  n = values.shape[0]
  steps = infer.num_steps(epochs, Q)
  privacy = infer.PrivacyRecord("noise_multiplier", float("nan"), None, float("nan"), 1e-7,
                                1.0, Q, steps, 1.0, "none (benchmark)")
  res = infer.fit(jax.random.key(0), model, (values, observed), privacy=privacy,
                  devices=devices)
  chunk = math.ceil(1 / Q)
  return {"case": case, "devices": devices, "n": n, "k": k, "steps": steps,
          "data_s": t_data, "first_s": res.timings["compile"],
          "step_s": res.timings["training"] / max(steps - chunk, 1),
          "device": bc.device_info()}


def _spawn(case: str, devices: int, args, timeout: float) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", case, str(devices),
         "--rows", str(args.rows), "--k", str(args.k), "--epochs", str(args.epochs)]
  env = bc.python_env()
  if devices > 1:
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  run = bc.run_child(cmd, timeout=timeout, cwd=bc.REPO, env=env)
  if run.returncode != 0:
    tail = run.output.strip().splitlines()[-1][-300:] if run.output.strip() else ""
    return {"error": f"rc={run.returncode}: {tail}"}
  line = [l for l in run.output.splitlines() if l.startswith("RESULT ")][-1]
  out = json.loads(line[len("RESULT "):])
  out["rss"], out["wall"] = run.max_rss_bytes, run.wall_s
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", type=_ints, default=[1, 2])
  p.add_argument("--cases", default="adult,synthetic")
  p.add_argument("--rows", type=int, default=10**6, help="rows of the synthetic table")
  p.add_argument("--k", type=int, default=50)
  p.add_argument("--epochs", type=float, default=3,
                 help="epochs per run (the first is compile + warm-up, not timed)")
  p.add_argument("--repeat", type=int, default=3)
  p.add_argument("--timeout", type=float, default=900)
  p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
  p.add_argument("--worker", nargs=2, metavar=("CASE", "DEVICES"), help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    out = worker(args.worker[0], int(args.worker[1]), args.rows, args.k, args.epochs)
    print("RESULT " + json.dumps(out), flush=True)
    return 0
  if args.quick:
    args.rows, args.k, args.epochs, args.repeat = 20_000, 3, 2, 1
    args.cases = "synthetic"
  print(bc.header("bench_devices: DP step time on 1 vs D devices (data parallel)"))
  print(f"# q = {Q}, sigma = 1, C = 1, K = {args.k}, {args.epochs:g} epochs per run "
        f"(the first untimed), {args.repeat} alternating repeats per device count")
  results = {}
  for case in args.cases.split(","):
    for r in range(args.repeat):
      for d in args.devices:
        out = _spawn(case, d, args, args.timeout)
        results.setdefault((case, d), []).append(out)
        if "error" in out:
          print(f"# {case} devices={d} repeat {r}: {out['error']}", flush=True)
  print(f"\n{'case':>10} {'N':>9} {'devices':>7} {'step (median)':>14} {'min':>10} "
        f"{'max':>10} {'first':>9} {'peak RSS':>10}  vs 1 device")
  for case in args.cases.split(","):
    base = None
    for d in args.devices:
      runs = [o for o in results[(case, d)] if "error" not in o]
      if not runs:
        print(f"{case:>10} {'':>9} {d:>7} failed")
        continue
      steps = [o["step_s"] for o in runs]
      med = bc.median(steps)
      base = med if d == args.devices[0] else base
      ratio = f"{base / med:.2f}x" if base else "n/a"
      print(f"{case:>10} {runs[0]['n']:>9} {d:>7} {bc.fmt_s(med):>14} "
            f"{bc.fmt_s(min(steps)):>10} {bc.fmt_s(max(steps)):>10} "
            f"{bc.fmt_s(bc.median([o['first_s'] for o in runs])):>9} "
            f"{bc.gib(max(o['rss'] for o in runs)):>10}  {ratio}", flush=True)
  print(f"# device of the runs: {next(iter(results.values()))[0].get('device', '?')}; "
        f"loadavg at the end {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
