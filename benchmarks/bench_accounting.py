"""Wall time of `jtwin.accounting.calibrate_noise` over a grid of settings.

Usage: python benchmarks/bench_accounting.py [--quick] [--repeat N]

Prints one row per (epsilon, q, T) at delta = 1e-5 with the calibrated sigma,
its certified epsilon and the cold wall time (in-memory caches cleared; best
of N runs), then, unless --quick, the speed-up over prv-accountant's own
`dpsgd.find_noise_multiplier(..., eps_error=0.01)` measured in the same run
(one run each). Wall times depend on machine load: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import os
import platform
import subprocess
import sys
import time
import warnings

DELTA = 1e-5
GRID = dict(epsilon=(0.5, 1.0, 4.0), q=(0.001, 0.01, 0.1), steps=(10**3, 10**4, 10**5))
QUICK_GRID = dict(epsilon=(1.0, 4.0), q=(0.01,), steps=(10**3,))
REFERENCE = ((1.0, 0.01, 10**4), (1.0, 0.01, 10**3))  # (epsilon, q, T)


def _clear_caches() -> None:
  from jtwin.accounting import bounds, calibrate
  calibrate._calibrate.cache_clear()
  bounds._epsilon.cache_clear()


def _stamp() -> str:
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False, timeout=5).stdout.strip() or "?"
  except (OSError, subprocess.SubprocessError):
    commit = "?"
  return (f"# {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
          f"python={platform.python_version()} "
          f"prv-accountant={importlib.metadata.version('prv-accountant')} commit={commit}")


def _calibrate(eps: float, q: float, steps: int, repeat: int = 1):
  """(Calibration, best cold wall time over `repeat` runs)."""
  from jtwin.accounting import calibrate_noise
  best = float("inf")
  for _ in range(repeat):
    _clear_caches()
    start = time.perf_counter()
    cal = calibrate_noise(eps, DELTA, q, steps)
    best = min(best, time.perf_counter() - start)
  return cal, best


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="tiny grid, no find_noise_multiplier comparison")
  parser.add_argument("--repeat", type=int, default=1,
                      help="report the best of this many cold runs per setting")
  args = parser.parse_args(argv)
  grid = QUICK_GRID if args.quick else GRID
  print(_stamp())
  print(f"calibrate_noise at delta={DELTA:g}; cold (caches cleared), "
        f"best of {args.repeat} run(s)")
  header = (f"{'epsilon':>7} {'q':>6} {'T':>7} {'sigma':>10} {'eps_upper':>9} "
            f"{'acct':>4} {'time_s':>7}")
  print(header)
  print("-" * len(header))
  times = []
  for eps, q, steps in itertools.product(grid["epsilon"], grid["q"], grid["steps"]):
    (sigma, b), dt = _calibrate(eps, q, steps, args.repeat)
    times.append(dt)
    print(f"{eps:>7g} {q:>6g} {steps:>7d} {sigma:>10.4f} {b.upper:>9.4f} "
          f"{b.accountant:>4} {dt:>7.2f}", flush=True)
  times.sort()
  print(f"median {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s over {len(times)} settings")
  if args.quick:
    return 0
  from prv_accountant.dpsgd import find_noise_multiplier
  print()
  print("vs prv_accountant.dpsgd.find_noise_multiplier(eps_error=0.01)")
  header = (f"{'epsilon':>7} {'q':>6} {'T':>7} {'sigma_fnm':>9} {'time_fnm':>8} "
            f"{'sigma':>9} {'time':>6} {'speedup':>7}")
  print(header)
  print("-" * len(header))
  for eps, q, steps in REFERENCE:
    (sigma, _), dt = _calibrate(eps, q, steps)
    start = time.perf_counter()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      ref = find_noise_multiplier(q, steps, eps, DELTA, eps_error=0.01)
    dt_ref = time.perf_counter() - start
    print(f"{eps:>7g} {q:>6g} {steps:>7d} {ref:>9.4f} {dt_ref:>8.2f} "
          f"{sigma:>9.4f} {dt:>6.2f} {dt_ref / dt:>6.1f}x", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
