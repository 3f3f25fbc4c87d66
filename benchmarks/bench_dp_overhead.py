"""What DP costs per step: clipped gradient sum + noise vs a plain summed gradient.

Usage: python benchmarks/bench_dp_overhead.py [--batch 64,326,1024,4096] [--k 10,50]
                                               [--repeat R] [--fit-epochs E] [--quick]

On the Adult mixture (built from jtwin/examples/adult_model.txt as in the
README's library example), for each batch size B and number of components K,
the median time of one jitted call of:

  (b) nonpriv   the non-private summed gradient
                jax.grad(lambda th: sum(model.log_likelihood_batch(th, X, O)));
  (a) clip      model.clipped_grad_sum(theta, ones, X, O, mask, C=1): the
                closed-form exact per-example clipping (group clipping, as in
                training);
      noise     the DP noise per step, drawn as training draws it: one
                dp.wide_normal(key, (100, P)) per 100-step chunk, divided by 100
                (a single [P] draw per call costs ~0.6 ms on the 2-core CPU, mostly
                per-call overhead, which training does not pay);
      dp        = clip + noise, the DP path of one step;
  (a') dp_glob  the same with plain global clipping (group_clip=False);
  (c) vmap      the generic jtwin.dp.vmap_clipped_grad_sum(model.log_likelihood, ...)
                (vmap(grad) per-example gradients; what a custom model gets).

The batch, theta and the noise key are jit ARGUMENTS (closed-over data would
be constant-folded by XLA); every call is block_until_ready'd; the first
call (compile) is discarded. Then whole training steps: jtwin.infer.fit on
all of Adult (q = 0.01, so B ~ 326, 100 steps per lax.scan chunk) with
non_private=True (no clipping, no noise: the same closed-form path with
C = inf) vs noise_multiplier=1.0, comparing FitResult.timings['training']
per step (the first chunk, which includes compilation, is excluded).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_common as bc  # noqa: E402


def _ints(text):
  return [int(x) for x in text.split(",") if x]


def kernel_times(k: int, batches, *, repeat: int, min_time: float, with_vmap: bool) -> list:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jtwin import dp
  model, values, observed, domain = bc.adult_model(k)
  model_glob = bc.adult_model(k, group_clip=False)[0]
  theta = model.init(jax.random.key(1))
  weights = jax.tree.map(jnp.ones_like, theta)
  ravel = lambda tree: jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
  size = int(ravel(theta).shape[0])
  sigma = 1.0

  def clip_path(m):
    @jax.jit
    def f(theta, weights, x, o, mask):
      g, info = m.clipped_grad_sum(theta, weights, x, o, mask, 1.0)
      return ravel(g), info
    return f

  clip_fn, clip_glob_fn = clip_path(model), clip_path(model_glob)
  chunk = 100

  @jax.jit
  def noise_fn(key):       # a chunk's noise at once, as jtwin.infer.fit draws it
    return sigma * 1.0 * dp.wide_normal(key, (chunk, size))


  @jax.jit
  def nonpriv_fn(theta, x, o):
    return ravel(jax.grad(lambda th: jnp.sum(model.log_likelihood_batch(th, x, o)))(theta))

  @jax.jit
  def vmap_fn(theta, weights, x, o, mask):
    g, info = dp.vmap_clipped_grad_sum(model.log_likelihood, theta, weights, x, o, mask, 1.0)
    return ravel(g), info

  rng = np.random.default_rng(0)
  rows = []
  for b in batches:
    idx = rng.choice(values.shape[0], size=b, replace=b > values.shape[0])
    x, o = jnp.asarray(values[idx]), jnp.asarray(observed[idx])
    mask = jnp.ones((b,), bool)
    t_np = bc.time_jitted(nonpriv_fn, (theta, x, o), repeat=repeat, min_time=min_time)
    t_noise = bc.time_jitted(noise_fn, (jax.random.key(2),), repeat=repeat,
                             min_time=min_time) / chunk       # re-measured per row
    t_clip = bc.time_jitted(clip_fn, (theta, weights, x, o, mask), repeat=repeat,
                            min_time=min_time)
    t_dp = t_clip + t_noise
    t_glob = bc.time_jitted(clip_glob_fn, (theta, weights, x, o, mask), repeat=repeat,
                            min_time=min_time) + t_noise
    t_vm = (bc.time_jitted(vmap_fn, (theta, weights, x, o, mask), repeat=repeat,
                           min_time=min_time) if with_vmap else float("nan"))
    row = dict(k=k, b=b, p=size, nonpriv=t_np, clip=t_clip, noise=t_noise, dp=t_dp,
               dp_glob=t_glob, vmap=t_vm)
    rows.append(row)
    print(f"{k:>3} {b:>5} {size:>6} {bc.fmt_s(t_np):>10} {bc.fmt_s(t_clip):>10} "
          f"{bc.fmt_s(t_noise):>8} {bc.fmt_s(t_dp):>10} "
          f"{bc.fmt_s(t_glob):>10} {bc.fmt_s(t_vm):>10} {t_dp / t_np:>7.2f}x "
          f"{t_glob / t_np:>7.2f}x {t_vm / t_np:>7.2f}x   load {bc.loadavg()}", flush=True)
  return rows


def fit_times(k: int, *, epochs: float, repeat: int, rows: int | None) -> dict:
  import jax
  from jtwin import infer
  model, values, observed, _ = bc.adult_model(k)
  if rows:
    values, observed = values[:rows], observed[:rows]
  q = 0.01
  chunk = math.ceil(1 / q)
  out = {"nonpriv": [], "dp": []}
  for r in range(repeat):
    for mode in ("nonpriv", "dp"):
      kw = dict(non_private=True) if mode == "nonpriv" else dict(noise_multiplier=1.0)
      res = infer.fit(jax.random.key(r), model, (values, observed), sampling_ratio=q,
                      num_epochs=epochs, **kw)
      steps = res.privacy.steps
      out[mode].append(res.timings["training"] / max(steps - chunk, 1))
  return {m: bc.median(v) for m, v in out.items()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=_ints, default=[64, 326, 1024, 4096])
  p.add_argument("--k", type=_ints, default=[10, 50])
  p.add_argument("--repeat", type=int, default=5, help="timing samples per kernel (median)")
  p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing sample")
  p.add_argument("--fit-epochs", type=float, default=3, help="epochs of each fit (>= 2)")
  p.add_argument("--fit-repeat", type=int, default=3, help="fits per mode (median)")
  p.add_argument("--no-vmap", action="store_true", help="skip the vmap(grad) reference")
  p.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
  args = p.parse_args(argv)
  fit_rows = None
  if args.quick:
    args.batch, args.k, args.repeat, args.min_time = [64], [3], 2, 0.01
    args.fit_epochs, args.fit_repeat, fit_rows = 2, 1, 2000
  print(bc.header("bench_dp_overhead: DP step vs non-private step, Adult mixture"))
  print("# per-call medians; clip = closed-form clipped sum (group clip); noise = per-step "
        "share of a chunk's noise; dp = clip + noise; dp_glob = global clip + noise; "
        "vmap = vmap(grad) clipped sum (no noise); ratios are / nonpriv")
  print(f"{'K':>3} {'B':>5} {'P':>6} {'nonpriv':>10} {'clip':>10} {'noise':>8} {'dp':>10} "
        f"{'dp_glob':>10} "
        f"{'vmap':>10} {'dp/np':>8} {'glob/np':>8} {'vmap/np':>8}", flush=True)
  for k in args.k:
    kernel_times(k, args.batch, repeat=args.repeat, min_time=args.min_time,
                 with_vmap=not args.no_vmap)
  print(f"\n# whole training steps: jtwin.infer.fit, q = 0.01, {args.fit_epochs:g} epochs, "
        f"median of {args.fit_repeat} fit(s) per mode, training time / (T - first chunk)")
  print(f"{'K':>3} {'nonpriv/step':>13} {'dp/step':>10} {'dp/np':>7}")
  for k in args.k:
    t = fit_times(k, epochs=args.fit_epochs, repeat=args.fit_repeat, rows=fit_rows)
    print(f"{k:>3} {bc.fmt_s(t['nonpriv']):>13} {bc.fmt_s(t['dp']):>10} "
          f"{t['dp'] / t['nonpriv']:>6.2f}x   load {bc.loadavg()}", flush=True)
  print(f"# loadavg at end {bc.loadavg()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
