"""Empirical privacy audit of jtwin's mechanisms (issue 11 item 4).

    python benchmarks/audit_privacy.py            # the table in benchmarks/README.md
    python benchmarks/audit_privacy.py --quick    # small sizes (about a minute)
    python benchmarks/audit_privacy.py --parts efg   # only the DP row count and domains

Audits the real code paths (see benchmarks/_audit_common.py and
docs/privacy_audit.md):

  (a) two-world canary audit of `jtwin.infer.fit` with a linear custom model
      and plain SGD at learning rate 1 (eps = 2, q = 0.1, T = 100; eps = 1,
      q = 0.01; q = 1; a forced batch overflow);
  (b) one-run audit (Steinke, Nasr and Jagielski 2023) of the mixture model's
      DP fit, grouped clipping on and off;
  (c) two-world test of the mixture's DP warm start, with the noise tail
      beyond 5.4 sd, and the tail of the noise generator itself;
  (d) two-world test of `jtwin.fit_marginals`' Gaussian measurements;
  (e) two-world test of the DP row count (`dp_domain.noisy_row_count`);
  (f) two-world test of DP category discovery (`dp_domain.release_domain`),
      a label's count c against c + 1 near the threshold and 0 against 1,
      also in the zCDP form and with napsumq's label transfer; and of the DP
      missing flag;
  (g) two-world test of a numeric column's DP domain (loc, scale, bin
      edges): one outlier added, one value moved across a grid edge; and of
      the fine stage of a narrow column (years), one row added past the top.

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


def rows(quick: bool, parts: str = "abcdefg"):
  """Yields the audit rows of the audits in `parts`, one configuration at a time."""
  if "a" in parts:
    yield from _rows_a(quick)
  if "b" in parts:
    yield from _rows_b(quick)
  if "c" in parts:
    yield from _rows_c(quick)
  if "d" in parts:
    yield from _rows_d(quick)
  if "e" in parts:
    yield from _rows_e(quick)
  if "f" in parts:
    yield from _rows_f(quick)
  if "g" in parts:
    yield from _rows_g(quick)


def _rows_a(quick: bool):
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


def _rows_b(quick: bool):
  m = 1000 if quick else 2000
  for eps in (4.0, 16.0):
    for group in (True, False):
      yield ac.one_run_audit(f"(b) mixture one-run: ε={eps:g}, K=3, m={m}, group_clip={group}",
                             epsilon=eps, num_canaries=m, group_clip=group, seed=5)
  yield ac.one_run_audit(f"(b) mixture one-run: ε=16, K=3, m={m}, with the DP warm start",
                         epsilon=16.0, num_canaries=m, warm_start=0.1, seed=5)


def _rows_c(quick: bool):
  from jtwin import infer
  s = 0.2 if quick else 1.0
  plan = infer.privacy_plan(30_000, epsilon=1.0, delta=1e-5, sampling_ratio=0.01,
                            num_epochs=200, clipping_threshold=1.0, warm_start=0.1)
  yield ac.warm_start_audit(
      f"(c) warm start of an ε=1 fit: σ={plan.warm_start_noise:.4g}, D_cat=2",
      noise_multiplier=plan.warm_start_noise, delta=plan.warm_start_delta,
      num_slots=10_000, num_calls=max(2, int(50 * s)), seed=6)
  calls = 4 if quick else 40
  yield ac.warm_start_audit(f"(c) warm start tails: σ=0.5, D_cat=2, {calls}·10⁶ draws",
                            noise_multiplier=0.5, num_slots=1_000_000, num_calls=calls, seed=7)


def _rows_d(quick: bool):
  for eps in (1.0, 8.0):
    cats = 200 if quick else 600
    yield ac.marginals_audit(f"(d) fit_marginals: ε={eps:g}, 2 columns × {cats} categories, "
                             "selection all", epsilon=eps, num_slots=cats,
                             num_runs=1 if quick else 4, seed=8)


def _rows_e(quick: bool):
  draws = 100_000 if quick else 500_000
  for i, eps in enumerate((0.01, 0.5, 1.0)):
    yield ac.row_count_audit(f"(e) row count: ε={eps:g}, N=10⁴ vs N+1", epsilon=eps,
                             n=10_000, draws=draws, seed=20 + i)


def _rows_f(quick: bool):
  runs = 4 if quick else 20
  configs = [  # (epsilon, delta, count: None = floor(tau), or tau - k s, slots, columns)
      (0.09, 1e-6, None, 400, 1), (1.0, 1e-6, None, 2000, 1), (1.0, 1e-6, 2.0, 2000, 1),
      (4.0, 1e-6, 2.0, 2000, 1), (1.0, 0.2, 0, 2000, 1), (1.0, 0.2, 0, 2000, 3),
      (1.0, 1e-6, 0, 2000, 1)]
  for i, (eps, delta, count, slots, cols) in enumerate(configs):
    s, tau = ac.domain_noise(eps, delta, cols, cols)
    if count is None:
      c, what = None, f"c=⌊τ⌋={math.floor(tau)}"
    elif count == 0:
      c, what = 0, "c=0 (a label held by one row)"
    else:
      c = int(math.floor(tau - count * s))
      what = f"c=⌊τ−{count:g}s⌋={c}"
    where = f", {cols} columns" if cols > 1 else ""
    yield ac.category_audit(f"(f) categories: ε={eps:g}, δ={delta:g}{where}, τ={tau:.1f}, "
                            f"s={s:.2f}, {what} vs c+1", epsilon=eps, delta=delta, count=c,
                            num_slots=slots, num_runs=runs, num_columns=cols, seed=30 + i)
  for i, (eps, count) in enumerate(((1.0, None), (4.0, 0))):
    s, _ = ac.domain_noise(eps, 1e-6, 20, 0)
    c = int(math.floor(2.0 * s)) if count is None else count
    yield ac.missing_flag_audit(f"(f) missing flag: ε={eps:g}, δ=1e-06, 20 columns, s={s:.2f}, "
                                f"c={c} missing vs c+1 (flag: count > 2s)", epsilon=eps,
                                delta=1e-6, count=c, num_columns=20, num_runs=50 * runs,
                                seed=60 + i)
  # the zCDP form (`plan_release(composition="zcdp")`, the marginal method) at
  # epsilon = 1, delta = 1e-5: 10% of rho, the threshold 5% of delta times e^-1
  from scipy import stats
  from jtwin.accounting import zcdp
  rho = 0.1 * zcdp.cdp_rho(0.99, 1e-5 - 5e-7)
  for i, (thr, below) in enumerate(((5e-7 * math.exp(-1.0), None), (5e-7 * math.exp(-1.0), 2.0),
                                    (0.1, 0))):
    s = math.sqrt(1.0 / (2.0 * rho))
    tau = 1.0 + s * float(stats.norm.isf(thr))
    c = (None if below is None else 0 if below == 0 else int(math.floor(tau - below * s)))
    what = (f"c=⌊τ⌋={math.floor(tau)}" if c is None else "c=0 (a label held by one row)"
            if c == 0 else f"c=⌊τ−{below:g}s⌋={c}")
    yield ac.category_audit(f"(f) categories, zCDP form: ρ={rho:.3g}, threshold δ={thr:.2g}, "
                            f"τ={tau:.1f}, s={s:.2f}, {what} vs c+1", epsilon=0.0, delta=1e-6,
                            count=c, num_slots=2000, num_runs=runs, rho=rho,
                            threshold_delta=thr, seed=50 + i)
  # with the marginal method's transfer of released labels' 1-way budget (napsumq's
  # CATEGORY_TRANSFER of a 15-column table's 1-way share, Gaussian composition)
  from jtwin.accounting import gaussian
  rho_all = gaussian.composed_rho(0.99, 1e-5 - 5e-7)
  rho, extra = 0.1 * rho_all, 0.75 * 0.4 * 0.9 / 15 * rho_all
  s = (2.0 * (rho + extra)) ** -0.5
  thr = 5e-7 * math.exp(-1.0)
  tau = 1.0 + s * float(stats.norm.isf(thr))
  yield ac.category_audit(f"(f) categories, label transfer: ρ={rho:.3g} + {extra:.3g}, "
                          f"threshold δ={thr:.2g}, τ={tau:.1f}, s={s:.2f}, "
                          f"c=⌊τ⌋={math.floor(tau)} vs c+1", epsilon=0.0, delta=1e-6,
                          num_slots=2000, num_runs=runs, rho=rho, category_rho=extra,
                          threshold_delta=thr, seed=53)


def _rows_g(quick: bool):
  runs = 300 if quick else 2000
  yield ac.numeric_domain_audit("(g) numeric: ε=1, δ=1e-6, 200 log-normal values vs + one at 10⁹",
                                epsilon=1.0, delta=1e-6, change="outlier", num_runs=runs,
                                seed=40)
  for i, eps in enumerate((1.0, 4.0)):
    yield ac.numeric_domain_audit(f"(g) numeric: ε={eps:g}, δ=1e-6, 100 at 9.9 + 100 at 10.1, "
                                  "one 9.9 moved to 10.1 (replace one: 2ε)", epsilon=eps,
                                  delta=1e-6, change="move", num_runs=runs, seed=41 + i)
  yield ac.fine_domain_audit("(g) narrow numeric, zCDP form with the fine stage: ρ=0.02 (+0.02 "
                             "fine), δ=1e-6, 50 rows at each year 2000..2015 vs + one at 2016",
                             rho=0.02, delta=1e-6, num_runs=runs, seed=45)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes")
  parser.add_argument("--parts", default="abcdefg", help="audits to run, e.g. efg")
  args = parser.parse_args(argv)
  print(header("audit_privacy: empirical privacy audit (two-world and one-run)"))
  t0 = time.perf_counter()
  done, details = [], []
  for row in rows(args.quick, args.parts):
    done.append(row)
    print(format_row(row), flush=True)
    extra = {k: v for k, v in row.extra.items() if k not in ("first_key", "first_z", "privacy")}
    details.append(f"{row.name}: {extra}")
  draws = 20_000_000 if args.quick else 200_000_000
  tail = ac.normal_tail_check(draws, 5.4, seed=9) if "c" in args.parts else None
  print()
  print(TABLE_HEAD)
  for row in done:
    print(format_row(row))
  print()
  for line in details:
    print("#", line)
  if tail is not None:
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
