"""MST (McKenna, Miklau & Sheldon 2021) as a baseline at several epsilons, scored like napsumq.

smartnoise-synth's MST gave twins worse than independent columns on this
discretisation (benchmarks/README.md §6), so this script runs MST's
algorithm itself on jtwin's cells of the bundled Adult model file (every
column modelled; `determined_by` is ignored, a tree edge can carry that
relation):

  1. rho / 3: every 1-way table with Gaussian noise; cells below 3 noise sds
     merged (MST's domain compression, `jtwin.marginals.cells.compress`);
  2. rho / 3: d - 1 exponential-mechanism selections of a maximum spanning
     tree, each edge scored by the L1 error of the independent estimate from
     the noisy 1-way tables (sensitivity 1);
  3. rho / 3: the tree's d - 1 2-way tables with Gaussian noise.

The estimate is the tree-structured model those tables define: node
marginals combine each column's noisy 1-way table with its edges' margins by
inverse variance, each edge table (negatives clipped) is fitted to its two
node marginals by iterative proportional fitting, and rows are sampled from
the root down the tree. Private-PGM solves the same least-squares problem by
mirror descent; on a tree the two differ only in how inconsistencies between
noisy tables are resolved. A baseline, NOT part of jtwin.

  python benchmarks/mst_baseline.py [--epsilons 0.3 1 3] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

KEYS = ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean", "utility_auroc_synth")


def _tree(rng, ones, cells, codes, eps0):
  """MST's tree: d - 1 exponential-mechanism picks among edges joining two components."""
  from jtwin.marginals.measure import clique_counts
  from jtwin.marginals.select import spanning_tree
  d = len(cells)
  sizes = [c.size for c in cells]
  p1 = [np.maximum(m, 0) / max(np.maximum(m, 0).sum(), 1e-12) for m in ones]
  n = float(np.mean([m.sum() for m in ones]))
  pairs = [(a, b) for a in range(d) for b in range(a + 1, d)]
  err = {e: np.abs(clique_counts(codes, sizes, e) - n * np.outer(p1[e[0]], p1[e[1]]).ravel()).sum()
         for e in pairs}                                    # PRIVATE scores
  return spanning_tree(d, err, eps0, rng)


def _estimate(ones, var1, edges, var2, sizes, iters=50):
  """Consistent node and edge marginals (probabilities) from the noisy tables."""
  d = len(sizes)
  num, den = [m / var1 for m in ones], [np.full(s, 1.0 / var1) for s in sizes]
  for (a, b), t in edges.items():
    t = t.reshape(sizes[a], sizes[b])
    num[a] = num[a] + t.sum(1) / (var2 * sizes[b])
    den[a] = den[a] + 1.0 / (var2 * sizes[b])
    num[b] = num[b] + t.sum(0) / (var2 * sizes[a])
    den[b] = den[b] + 1.0 / (var2 * sizes[a])
  node = []
  for j in range(d):
    p = np.maximum(num[j] / den[j], 0.0) + 1e-9
    node.append(p / p.sum())
  joint = {}
  for (a, b), t in edges.items():
    q = np.maximum(t.reshape(sizes[a], sizes[b]), 0.0) + 1e-9
    q /= q.sum()
    for _ in range(iters):
      q *= (node[a] / q.sum(1))[:, None]
      q *= (node[b] / q.sum(0))[None, :]
    joint[(a, b)] = q
  return node, joint


def _sample(rng, node, joint, d, n):
  """Rows from the tree model: the root's marginal, then each child given its parent."""
  adj = {j: [] for j in range(d)}
  for a, b in joint:
    adj[a].append(b)
    adj[b].append(a)
  out = np.zeros((n, d), np.int64)
  out[:, 0] = rng.choice(len(node[0]), n, p=node[0])
  seen, queue = {0}, [0]
  while queue:
    u = queue.pop(0)
    for v in adj[u]:
      if v in seen:
        continue
      q = joint[(u, v)] if (u, v) in joint else joint[(v, u)].T     # [u cells, v cells]
      cond = q / q.sum(1, keepdims=True)
      cum = np.cumsum(cond, 1)
      r = rng.random(n)[:, None]
      out[:, v] = np.minimum((r > cum[out[:, u]]).sum(1), q.shape[1] - 1)
      seen.add(v)
      queue.append(v)
  return out


def mst_twin(frame, spec, epsilon, delta, seed):
  """A twin of `frame` by MST at (epsilon, delta)."""
  from jtwin import data as jdata
  from jtwin.accounting import zcdp
  from jtwin.marginals import cells as cl
  from jtwin.marginals.measure import clique_counts
  rng = np.random.default_rng(seed)
  resolved = jdata.resolve_domain(frame, spec, source="adult", warn=False)
  cells = cl.build_cells(frame, spec, resolved)
  codes = cl.encode_cells(frame, cells, resolved, source="adult")
  d, rho = len(cells), zcdp.cdp_rho(epsilon, delta)
  sigma1 = math.sqrt(d / (2 * rho / 3))
  ones = [clique_counts(codes, [c.size for c in cells], (j,)) + sigma1 * rng.standard_normal(c.size)
          for j, c in enumerate(cells)]
  cells, maps = cl.compress(cells, ones, 3 * sigma1)
  ones = [mp @ m for m, mp in zip(ones, maps)]
  group = [np.concatenate([c.base_to_group(), [c.num_cells]]) for c in cells]
  codes = np.stack([g[codes[:, j]] for j, g in enumerate(group)], axis=1)
  sizes = [c.size for c in cells]
  tree = _tree(rng, ones, cells, codes, math.sqrt(8 * (rho / 3) / (d - 1)))
  sigma2 = math.sqrt((d - 1) / (2 * rho / 3))
  edges = {e: clique_counts(codes, sizes, e) + sigma2 * rng.standard_normal(
      sizes[e[0]] * sizes[e[1]]) for e in tree}
  node, joint = _estimate(ones, sigma1**2, edges, sigma2**2, sizes)
  n = int(round(np.mean([m.sum() for m in ones])))
  sampled = _sample(rng, node, joint, d, n)
  return cl.decode_cells(sampled, np.ones_like(sampled, bool), cells, rng)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epsilons", nargs="+", type=float, default=[0.3, 1.0, 3.0])
  p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  p.add_argument("--quick", action="store_true", help="one run at epsilon 1, no scoring")
  args = p.parse_args(argv)
  import jtwin
  print(common.header("MST baseline on Adult (train 32,561 rows, scored on the test rows)"))
  frame = jtwin.read_csv(common.ADULT_CSV)
  spec = common.without_determined_by(jtwin.parse_model_file(common.ADULT_MODEL))
  test_path = os.path.join(common.REPO, "..", "shared", "data", "adult", "adult_test.csv")
  test = None if args.quick or not os.path.isfile(test_path) else pd.read_csv(test_path)
  if args.quick:
    args.epsilons, args.seeds = [1.0], [0]
  delta = 0.1 / len(frame)
  print(f"# delta = 0.1 / N = {delta:.3g}")
  print("| epsilon | seed | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC | time |")
  print("|---|---|---|---|---|---|---|")
  for eps in args.epsilons:
    rows = []
    for seed in args.seeds:
      t0 = time.perf_counter()
      twin = mst_twin(frame, spec, eps, delta, seed)
      secs = time.perf_counter() - t0
      scores = {}
      if test is not None:
        from jtwin.evaluate import evaluate
        with warnings.catch_warnings():
          warnings.simplefilter("ignore")
          scores = evaluate(test, twin, test=test, target="income")
      rows.append(scores)
      print(f"| {eps:g} | {seed} | " + " | ".join(common.fmt_score(scores.get(k)) for k in KEYS)
            + f" | {secs:.1f} s |", flush=True)
    if len(rows) > 1 and rows[0]:
      print(f"| {eps:g} | median | " + " | ".join(
          common.fmt_score(statistics.median(r[k] for r in rows)) for k in KEYS) + " | |",
            flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
