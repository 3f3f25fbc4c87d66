"""How training and sampling scale with the number of rows N and components K.

Usage: python benchmarks/bench_scaling.py [--n 1e4,3e4,...] [--k 5,10,...] [--k-rows N]
                                          [--sample-n ...] [--epochs E] [--large] [--quick]

Each configuration runs in its own subprocess (so one configuration's memory
does not pollute another's), whose peak resident memory is read with
os.wait4. The columns are Adult's (jtwin/examples/adult_model.txt: 5 Normal,
10 Categorical/Bernoulli, 3 with missing values); the N rows are drawn from a
randomly initialised mixture with model.sample (no real data needed).

  * time per epoch of DP training (jtwin.infer.fit, sigma = 1, q = 0.01, so
    an epoch is 100 steps of batch qN) for N in 1e4..1e6 at K = 50 (1e7 too
    with --large), and for K in 5..200 at N = 1e5. The first epoch (which
    includes compilation) is reported separately as 'first'. The work per
    epoch is O(N K), so 'ns/(N K)' should be flat once the batch is large
    enough to amortise per-step overhead.
  * throughput (rows/s) of jtwin.sampling.sample_synthetic for 1e4..1e6 rows
    (1e7 with --large), K = 50, a fresh posterior draw per row; 'cold'
    includes compilation, 'warm' is the median of later calls.

Peak memory includes the generated data (N x D float32 + bool).
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


def _nums(text):
  return [int(float(x)) for x in text.split(",") if x]


def _features():
  domain, _ = bc.adult_data()
  return domain.features()


def _generate(model, n: int, seed: int = 0):
  """n rows from a randomly initialised mixture (chunked, numpy)."""
  import jax
  import numpy as np
  theta = model.init(jax.random.key(seed))
  chunk = 1 << 16
  draw = jax.jit(model.sample, static_argnums=2)
  keys = jax.random.split(jax.random.key(seed + 1), max(1, math.ceil(n / chunk)))
  vals, obs = [], []
  for c, key in enumerate(keys):
    v, o = draw(key, theta, min(chunk, n - c * chunk) if c == len(keys) - 1 else chunk)
    vals.append(np.asarray(v))
    obs.append(np.asarray(o))
  return np.concatenate(vals)[:n], np.concatenate(obs)[:n]


def worker_epoch(n: int, k: int, epochs: float, repeat: int = 1) -> dict:
  import jax
  from jtwin import infer, make_mixture_model
  model = make_mixture_model(_features(), num_components=k)
  t0 = time.perf_counter()
  values, observed = _generate(model, n)
  t_gen = time.perf_counter() - t0
  steps = infer.num_steps(epochs, Q)
  privacy = infer.PrivacyRecord("noise_multiplier", float("nan"), None, float("nan"), 1e-7,
                                1.0, Q, steps, 1.0, "none (benchmark)")
  chunk = math.ceil(1 / Q)
  steps_s, first = [], []
  for r in range(repeat):
    res = infer.fit(jax.random.key(r), model, (values, observed), privacy=privacy)
    steps_s.append(res.timings["training"] / max(steps - chunk, 1))
    first.append(res.timings["compile"])
  per_step = bc.median(steps_s)
  return {"n": n, "k": k, "steps": steps, "gen_s": t_gen, "first_s": bc.median(first),
          "epoch_s": per_step * chunk, "step_s": per_step, "batch": n * Q,
          "min_step_s": min(steps_s), "max_step_s": max(steps_s)}


def worker_sample(n: int, k: int, repeat: int = 1) -> dict:
  import jax
  from jtwin import make_mixture_model, sample_synthetic
  from jtwin.models import posterior as post
  model = make_mixture_model(_features(), num_components=k)
  posterior = post.init(jax.random.key(0), model.init(jax.random.key(1)))
  t0 = time.perf_counter()
  v, _ = sample_synthetic(jax.random.key(2), model, posterior, n)
  cold = time.perf_counter() - t0
  warm = []
  for r in range(repeat):
    t0 = time.perf_counter()
    v, _ = sample_synthetic(jax.random.key(3 + r), model, posterior, n)
    warm.append(time.perf_counter() - t0)
  assert v.shape[0] == n
  return {"n": n, "k": k, "cold_s": cold, "warm_s": bc.median(warm)}


def _spawn(args: list, timeout: float) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--worker", *args]
  run = bc.run_child(cmd, timeout=timeout, cwd=bc.REPO, env=bc.python_env())
  if run.returncode != 0:
    return {"error": f"rc={run.returncode}: " + run.output.strip().splitlines()[-1][-300:]
            if run.output.strip() else f"rc={run.returncode}"}
  line = [l for l in run.output.splitlines() if l.startswith("RESULT ")][-1]
  out = json.loads(line[len("RESULT "):])
  out["rss"] = run.max_rss_bytes
  out["wall"] = run.wall_s
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=_nums, default=[10**4, 3 * 10**4, 10**5, 3 * 10**5, 10**6])
  p.add_argument("--n-k", type=int, default=50, help="K for the N sweep")
  p.add_argument("--k", type=_nums, default=[5, 10, 20, 50, 100, 200])
  p.add_argument("--k-rows", type=int, default=10**5, help="N for the K sweep")
  p.add_argument("--sample-n", type=_nums, default=[10**4, 10**5, 10**6])
  p.add_argument("--epochs", type=float, default=4, help="epochs per fit (>= 2)")
  p.add_argument("--repeat", type=int, default=3,
                 help="fits (and warm sampling calls) per configuration; medians reported")
  p.add_argument("--large", action="store_true", help="add N = 1e7 (training and sampling)")
  p.add_argument("--timeout", type=float, default=1800, help="per configuration, seconds")
  p.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
  p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    kind, *rest = args.worker
    if kind == "epoch":
      out = worker_epoch(int(rest[0]), int(rest[1]), float(rest[2]), int(rest[3]))
    else:
      out = worker_sample(int(rest[0]), int(rest[1]), int(rest[2]))
    print("RESULT " + json.dumps(out), flush=True)
    return 0
  if args.quick:
    args.n, args.n_k, args.k, args.sample_n = [2000], 3, [], [1000]
    args.epochs, args.repeat = 2, 1
  if args.large:
    args.n = sorted(set(args.n) | {10**7})
    args.sample_n = sorted(set(args.sample_n) | {10**7})
  print(bc.header("bench_scaling: time per epoch and memory vs N and K; sampling throughput"))
  print(f"# DP training: sigma = 1, q = {Q:g} (100 steps/epoch), {args.epochs:g} epochs per "
        f"fit, median of {args.repeat} fit(s) (first epoch excluded); each configuration in "
        f"its own process (peak RSS via os.wait4); 'spread' = max/min step time over the fits",
        flush=True)
  hdr = (f"{'N':>9} {'K':>4} {'batch':>7} {'first':>9} {'epoch':>9} {'step':>9} "
         f"{'ns/(N K)':>9} {'peak RSS':>10} {'spread':>7}")

  def show(r):
    if "error" in r:
      print(f"  failed: {r['error']}", flush=True)
      return
    print(f"{r['n']:>9} {r['k']:>4} {r['batch']:>7.0f} {bc.fmt_s(r['first_s']):>9} "
          f"{bc.fmt_s(r['epoch_s']):>9} {bc.fmt_s(r['step_s']):>9} "
          f"{r['epoch_s'] / (r['n'] * r['k']) * 1e9:>9.2f} {bc.gib(r['rss']):>10} "
          f"{r['max_step_s'] / r['min_step_s']:>6.2f}x"
          f"   load {bc.loadavg()}", flush=True)

  if args.n:
    print(f"\n## N sweep at K = {args.n_k}\n{hdr}", flush=True)
    for n in args.n:
      show(_spawn(["epoch", str(n), str(args.n_k), str(args.epochs), str(args.repeat)],
                  args.timeout))
  if args.k:
    print(f"\n## K sweep at N = {args.k_rows}\n{hdr}", flush=True)
    for k in args.k:
      show(_spawn(["epoch", str(args.k_rows), str(k), str(args.epochs), str(args.repeat)],
                  args.timeout))
  if args.sample_n:
    k = args.n_k
    print(f"\n## sample_synthetic throughput, K = {k}\n"
          f"{'rows':>9} {'cold':>9} {'warm':>9} {'rows/s (warm)':>14} {'peak RSS':>10}",
          flush=True)
    for n in args.sample_n:
      r = _spawn(["sample", str(n), str(k), str(args.repeat)], args.timeout)
      if "error" in r:
        print(f"  failed: {r['error']}", flush=True)
        continue
      print(f"{n:>9} {bc.fmt_s(r['cold_s']):>9} {bc.fmt_s(r['warm_s']):>9} "
            f"{n / r['warm_s']:>14.3g} {bc.gib(r['rss']):>10}   load {bc.loadavg()}",
            flush=True)
  print(f"# loadavg at end {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
