"""Private selection: the exponential mechanism's law and the score's sensitivity."""
import math

import numpy as np
import pytest

from jtwin.marginals import select as sel
from jtwin.marginals.measure import clique_counts


def test_exponential_mechanism_frequencies_follow_softmax():
  scores = np.array([0.0, 1.0, 2.0, 4.0])
  eps0, sens = 1.5, 2.0
  rng = np.random.default_rng(0)
  draws = np.array([sel.exponential_mechanism(scores, eps0, sens, rng) for _ in range(40000)])
  p = np.exp(eps0 * scores / (2 * sens))
  p /= p.sum()
  freq = np.bincount(draws, minlength=4) / len(draws)
  assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / len(draws)) + 1e-3), (freq, p)


def test_exponential_mechanism_non_private_is_argmax():
  rng = np.random.default_rng(0)
  assert sel.exponential_mechanism(np.array([0.3, 5.0, 1.0]), math.inf, 1.0, rng) == 1


@pytest.mark.parametrize("seed", range(5))
def test_score_sensitivity_is_the_weight(seed):
  """Removing one row changes every candidate's score by at most its weight."""
  rng = np.random.default_rng(seed)
  sizes = [3, 4, 2, 5]
  codes = np.stack([rng.integers(0, s, 200) for s in sizes], 1)
  cand = sel.workload(4, sizes, target=2)
  cliques = list(cand)
  weights = np.array([cand[r] for r in cliques])
  model = [rng.uniform(0, 20, int(np.prod([sizes[c] for c in r]))) for r in cliques]
  seg = np.concatenate([np.full(len(m), i) for i, m in enumerate(model)])
  flat_model = np.concatenate(model)

  def scores(rows):
    exact = np.concatenate([clique_counts(rows, sizes, r) for r in cliques])
    return weights * sel.l1_errors(exact, flat_model, seg, len(cliques))

  base = scores(codes)
  for drop in rng.choice(len(codes), 10, replace=False):
    neighbour = np.delete(codes, drop, axis=0)
    assert np.all(np.abs(scores(neighbour) - base) <= weights + 1e-9)


def test_workload_contents_and_weights():
  cand = sel.workload(4, [2, 2, 2, 2], target=3)
  pairs = [r for r in cand if len(r) == 2]
  triples = [r for r in cand if len(r) == 3]
  assert len(pairs) == 6 and len(triples) == 3 and all(3 in r for r in triples)
  # AIM's weight: sum over workload cliques of the overlap
  expected = sum(len(set((0, 1)) & set(s)) for s in cand)
  assert cand[(0, 1)] == expected
  assert all(r not in sel.workload(4, [2, 2, 2, 200], max_cells=100) for r in [(0, 3)])



def _is_spanning_tree(d, edges) -> bool:
  """d - 1 edges without a cycle (union-find)."""
  parent = list(range(d))

  def find(x):
    while parent[x] != x:
      x = parent[x]
    return x

  for a, b in edges:
    if find(a) == find(b):
      return False
    parent[find(a)] = find(b)
  return len(edges) == d - 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spanning_tree_is_the_maximum_one_without_noise(seed):
  import itertools
  rng = np.random.default_rng(seed)
  d = 5
  errors = {e: float(rng.uniform(0, 100)) for e in itertools.combinations(range(d), 2)}
  tree = sel.spanning_tree(d, errors, math.inf, np.random.default_rng(0))
  assert _is_spanning_tree(d, tree)
  # the maximum weight over all spanning trees (brute force)
  best = max(sum(errors[e] for e in c) for c in itertools.combinations(errors, d - 1)
             if _is_spanning_tree(d, c))
  assert sum(errors[e] for e in tree) == pytest.approx(best)


def test_spanning_tree_with_noise_still_spans():
  errors = {(0, 1): 1.0, (0, 2): 1.0, (1, 2): 1.0, (2, 3): 1.0}
  tree = sel.spanning_tree(4, errors, 0.01, np.random.default_rng(3))
  assert _is_spanning_tree(4, tree)
