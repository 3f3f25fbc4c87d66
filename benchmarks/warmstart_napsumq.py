"""Does the marginal fit help DP-VI as a warm start? (issue 10, item 5)

Same total budget (epsilon = 1, delta = 0.1/N by basic composition) on the
bundled Adult example, scored against the test rows:

  A. `jtwin fit` defaults (DP-VI, K = 50, 200 epochs, 10% on the 1-way warm start);
  B. `jtwin.fit_marginals` alone (K = 50 and K = 200, the napsumq defaults);
  C. `fit_marginals` with a share f of (epsilon, delta) at K = 50, its MAP
     mixture mapped onto `jtwin fit`'s model (cells summed into the model
     file's categories and bins), then DP-SGD with the remaining (1 - f)
     (epsilon, delta) from that start (no 1-way warm start).

  python benchmarks/warmstart_napsumq.py [--shares 0.5 0.8] [--epochs 200] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

TEST = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "adult", "adult_test.csv")


def to_fit_params(res, domain, layout) -> dict:
  """The napsumq MAP mixture as `jtwin fit` mixture locations (same K)."""
  from jtwin.marginals import mixture_marginals as mm
  loc = res.posterior.loc
  index = mm.make_index(res.cells, res.num_components)
  table = np.exp(np.asarray(mm.log_cell_table(index, {k: np.asarray(v) for k, v in loc.items()})))
  k = res.num_components
  full = np.zeros((k, len(layout.flat_feature)))
  missing = []
  for j, (c, dc) in enumerate(zip(res.cells, domain.columns)):
    n_cat = len(dc.categories)
    probs = np.zeros((k, n_cat))
    for g, (members, weights) in enumerate(zip(c.groups, c.weights)):
      for base, w in zip(members, weights):
        if c.kind == "category":
          cat = base
        else:   # numeric cells refine the declared bins
          cat = int(np.clip(np.searchsorted(dc.bins, c.edges[base], "right") - 1, 0, n_cat - 1))
        probs[:, cat] += w * table[:, index.cell_pos[j][g]]
    if c.missing:
      m = table[:, index.cell_pos[j][-1]]
      missing.append(np.log(m) - np.log1p(-m))
    probs = np.maximum(probs / probs.sum(1, keepdims=True), 1e-6)
    full[:, layout.pad_index[j, :n_cat]] = np.log(probs)
  pc = len(layout.flat_free)
  ref = full[:, [layout.pad_index[j, layout.cat_sizes[j] - 1] for j in range(len(layout.cat_idx))]]
  out = {"mix": np.asarray(loc["mix"]), "cat_logits": full[:, :pc] - ref[:, layout.flat_feature[:pc]]}
  if missing:
    out["missing_logit"] = np.stack(missing, 1)
  return out


def score(synth, test):
  from jtwin.evaluate import evaluate
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    r = evaluate(test, synth, test=test, target="income")
  return [r[k] for k in ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean", "utility_auroc_synth")]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--shares", nargs="+", type=float, default=[0.5, 0.8])
  ap.add_argument("--epochs", type=int, default=200)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--quick", action="store_true", help="2 epochs, K = 5, no scoring")
  args = ap.parse_args(argv)
  import jax
  import jtwin
  from jtwin import napsumq
  from jtwin.models.mixture import make_layout
  k = 5 if args.quick else 50
  epochs = 2 if args.quick else args.epochs
  fast = dict(final_steps=50, posterior_steps=10) if args.quick else {}
  print(common.header("napsumq as DP-VI's warm start (Adult, total epsilon 1)"))
  df = jtwin.read_csv(common.ADULT_CSV)
  # every column modelled by both methods (the warm start maps napsumq's cells to DP-VI's)
  spec = common.without_determined_by(jtwin.parse_model_file(common.ADULT_MODEL))
  frame = df[list(spec.names)]
  n = len(frame)
  delta = 0.1 / n
  domain = jtwin.resolve_domain(frame, spec)
  data = jtwin.encode(frame, domain)
  model = jtwin.make_mixture_model(domain.features(), k)
  layout = make_layout(domain.features(), k)
  test = None if args.quick or not os.path.isfile(TEST) else pd.read_csv(TEST)
  rows = []

  def report(label, synth, secs):
    s = score(synth, test) if test is not None else [float("nan")] * 4
    rows.append((label, s, secs))
    print(f"| {label} | " + " | ".join(f"{x:.4f}" for x in s) + f" | {secs:.1f} s |", flush=True)

  def dp_vi(key, eps, dlt, init_loc, warm):
    fit = jtwin.fit(key, model, data, epsilon=eps, delta=dlt, num_epochs=epochs,
                    sampling_ratio=0.01, warm_start=warm, init_loc=init_loc,
                    init_method="zeros" if init_loc is not None else "uniform")
    v, o = jtwin.sample_synthetic(jax.random.key(1), model, fit.posterior, n)
    return jtwin.decode(v, o, domain, rng=np.random.default_rng(0)), fit.privacy

  print("| run | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC | time |")
  print("|---|---|---|---|---|---|")
  t0 = time.perf_counter()
  synth, _ = dp_vi(jax.random.key(args.seed), 1.0, delta, None, 0.1)
  report("A. jtwin fit (DP-VI) defaults", synth, time.perf_counter() - t0)
  for kk in ([k] if args.quick else [50, 200]):
    t0 = time.perf_counter()
    res = napsumq.fit_marginals(jax.random.key(args.seed), frame, spec, epsilon=1.0,
                                delta=delta, num_components=kk, target="income", **fast)
    report(f"B. napsumq alone, K = {kk}",
           napsumq.sample_marginals(jax.random.key(1), res, n), time.perf_counter() - t0)
  for share in args.shares:
    t0 = time.perf_counter()
    res = napsumq.fit_marginals(jax.random.key(args.seed), frame, spec, epsilon=share,
                                delta=share * delta, num_components=k, target="income", **fast)
    init = to_fit_params(res, domain, layout)
    synth, priv = dp_vi(jax.random.key(args.seed + 1), 1.0 - share, (1 - share) * delta, init, 0.0)
    total = res.privacy.epsilon + priv.epsilon
    report(f"C. napsumq ({share:g}) then DP-VI ({1 - share:g}); certified total {total:.4f}",
           synth, time.perf_counter() - t0)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
