"""Empirical privacy audit of jtwin's mechanisms (issue 11 item 4).

    python benchmarks/audit_privacy.py            # the table in benchmarks/README.md
    python benchmarks/audit_privacy.py --quick    # small sizes (about a minute)

Audits the real code paths (see benchmarks/_audit_common.py and
docs/privacy_audit.md):

  (a) two-world canary audit of `jtwin.infer.fit` with a linear custom model
      and plain SGD at learning rate 1 (eps = 2, q = 0.1, T = 100; eps = 1,
      q = 0.01; q = 1; a forced batch overflow);
  (b) one-run audit (Steinke, Nasr and Jagielski 2023) of the mixture model's
      DP fit, grouped clipping on and off;
  (c) two-world test of the mixture's DP warm start, with the noise tail
      beyond 5.4 sd, and the tail of the noise generator itself;
  (d) two-world test of `jtwin.fit_marginals`' Gaussian measurements.

Prints one row per configuration: the certified epsilon (the claim), the
measured noise sd against its expectation, the canary's mean shift against
its expectation (both with their distance in standard errors), the 95%
epsilon lower bound and the number of trials per world. A row passes when
sd and shift are within 4 standard errors and the lower bound is at most the
claim. Exit status 1 if any row fails.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _audit_common as ac  # noqa: E402
from _bench_common import header  # noqa: E402


def _fmt(x: float, digits: int = 4) -> str:
  return "-" if not math.isfinite(x) else f"{x:.{digits}g}"


def format_row(row: ac.AuditRow) -> str:
  """One markdown table row."""
  sd = (f"{_fmt(row.sd)} / {_fmt(row.sd_expected)} ({row.sd_z():+.1f})"
        if math.isfinite(row.sd_expected) else f"{_fmt(row.sd)} / -")
  shift = (f"{_fmt(row.shift)} / {_fmt(row.shift_expected)} ({row.shift_z():+.1f})"
           if math.isfinite(row.shift_expected) else f"{_fmt(row.shift)} ± {_fmt(row.shift_se, 2)} / -")
  return (f"| {row.name} | {row.epsilon:.3f} ({row.delta:.2g}) | {sd} | {shift} | "
          f"{row.eps_lower:.3f} | {row.trials:,} | {'yes' if row.passed() else 'NO'} |")


TABLE_HEAD = ("| configuration | claimed ε (δ) | noise sd: measured / expected (z) | "
              "canary shift: measured / expected (z) | ε lower bound (95%) | "
              "trials per world | pass |\n|---|---|---|---|---|---|---|")


def rows(quick: bool):
  """Yields the audit rows, one configuration at a time."""
  from jtwin import infer
  s = 0.2 if quick else 1.0
  slots, fits = (2000, 1) if quick else (10_000, 6)
  yield ac.canary_audit("(a) fit: ε=2, q=0.1, T=100", epsilon=2.0, sampling_ratio=0.1,
                        steps=100, num_slots=slots, num_fits=fits, seed=1)
  yield ac.canary_audit("(a) fit: ε=1, q=0.01, T=1000", epsilon=1.0, sampling_ratio=0.01,
                        steps=1000, num_slots=slots, num_fits=fits, seed=2)
  yield ac.canary_audit("(a) fit: ε=2, q=1, T=10", epsilon=2.0, sampling_ratio=1.0,
                        steps=10, num_slots=slots, num_fits=fits, seed=3)
  yield ac.canary_audit("(a) fit: ε=2, q=0.1, T=100, batches padded to 8 rows (overflow)",
                        epsilon=2.0, sampling_ratio=0.1, steps=100, num_slots=slots,
                        num_fits=fits, overflow_batch=8, seed=4)
  m = 1000 if quick else 2000
  for eps in (4.0, 16.0):
    for group in (True, False):
      yield ac.one_run_audit(f"(b) mixture one-run: ε={eps:g}, K=3, m={m}, group_clip={group}",
                             epsilon=eps, num_canaries=m, group_clip=group, seed=5)
  yield ac.one_run_audit(f"(b) mixture one-run: ε=16, K=3, m={m}, with the DP warm start",
                         epsilon=16.0, num_canaries=m, warm_start=0.1, seed=5)
  plan = infer.privacy_plan(30_000, epsilon=1.0, delta=1e-5, sampling_ratio=0.01,
                            num_epochs=200, clipping_threshold=1.0, warm_start=0.1)
  yield ac.warm_start_audit(
      f"(c) warm start of an ε=1 fit: σ={plan.warm_start_noise:.4g}, D_cat=2",
      noise_multiplier=plan.warm_start_noise, delta=plan.warm_start_delta,
      num_slots=10_000, num_calls=max(2, int(50 * s)), seed=6)
  calls = 4 if quick else 40
  yield ac.warm_start_audit(f"(c) warm start tails: σ=0.5, D_cat=2, {calls}·10⁶ draws",
                            noise_multiplier=0.5, num_slots=1_000_000, num_calls=calls, seed=7)
  for eps in (1.0, 8.0):
    cats = 200 if quick else 600
    yield ac.marginals_audit(f"(d) fit_marginals: ε={eps:g}, 2 columns × {cats} categories, "
                             "selection all", epsilon=eps, num_slots=cats,
                             num_runs=1 if quick else 4, seed=8)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes")
  args = parser.parse_args(argv)
  print(header("audit_privacy: empirical privacy audit (two-world and one-run)"))
  t0 = time.perf_counter()
  done, details = [], []
  for row in rows(args.quick):
    done.append(row)
    print(format_row(row), flush=True)
    extra = {k: v for k, v in row.extra.items() if k not in ("first_key", "first_z", "privacy")}
    details.append(f"{row.name}: {extra}")
  draws = 20_000_000 if args.quick else 200_000_000
  tail = ac.normal_tail_check(draws, 5.4, seed=9)
  print()
  print(TABLE_HEAD)
  for row in done:
    print(format_row(row))
  print()
  for line in details:
    print("#", line)
  print(f"# noise generator dp.wide_normal: {tail['count']} of {tail['draws']:,} draws beyond "
        f"5.4 sd (Gaussian: {tail['expected']:.1f}; float32 jax.random.normal: 0), "
        f"largest |z| {tail['max_abs']:.2f}")
  print(f"# total {time.perf_counter() - t0:.0f} s")
  failed = [r.name for r in done if not r.passed()]
  if failed:
    print("# FAILED:", "; ".join(failed))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
