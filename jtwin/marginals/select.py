"""Private selection of the marginals to measure: AIM's loop and MST's tree.

Both score a candidate clique r by how badly the current model answers it,
using the EXACT table (private) and the model's (public) answer:

  score(r) = w_r * (|| counts_r - n P_model(r) ||_1 - sqrt(2/pi) sigma |r|)

(AIM; w_r is the workload weight, |r| the number of cells, and the second
term the expected L1 norm of the measurement noise, so that large tables are
not chosen just for their size). Adding or removing a row changes one count
of the table, so the score has sensitivity w_r, and the exponential mechanism
with parameter eps0 and sensitivity max_r w_r is eps0^2 / 8-zCDP. It is
sampled exactly by the Gumbel-max trick (float64 Gumbel noise from numpy).
"""
from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["exponential_mechanism", "l1_errors", "spanning_tree", "workload"]


def workload(num_columns: int, sizes, *, target: Optional[int] = None,
             max_cells: int = 1 << 20, extra: Sequence[tuple] = ()) -> dict:
  """Candidate cliques and their AIM weights.

  The workload is every 2-way clique, plus every 3-way clique containing
  `target` when given, plus `extra`; each candidate r is weighted by
  sum_{s in workload} |r intersect s| (AIM's weights). Cliques whose table
  has more than `max_cells` cells are dropped (the size is public).

  Returns:
    {clique: weight}, cliques as increasing tuples.
  """
  cliques = set(itertools.combinations(range(num_columns), 2))
  if target is not None:
    others = [c for c in range(num_columns) if c != target]
    cliques |= {tuple(sorted((a, b, target))) for a, b in itertools.combinations(others, 2)}
  cliques |= {tuple(sorted(e)) for e in extra}
  cells = lambda r: int(np.prod([sizes[c] for c in r], dtype=np.int64))
  cliques = sorted(r for r in cliques if cells(r) <= max_cells)
  member = np.zeros((len(cliques), num_columns))
  for i, r in enumerate(cliques):
    member[i, list(r)] = 1.0
  overlap = member @ member.T                      # |r intersect s|
  weights = overlap.sum(axis=1)
  return {r: float(w) for r, w in zip(cliques, weights)}


def l1_errors(exact: np.ndarray, model: np.ndarray, segments: np.ndarray,
              num_segments: int) -> np.ndarray:
  """Per-clique L1 distance between concatenated tables (segments: clique id per cell)."""
  return np.bincount(segments, weights=np.abs(exact - model), minlength=num_segments)


def exponential_mechanism(scores: np.ndarray, epsilon0: float, sensitivity: float,
                          rng: np.random.Generator) -> int:
  """Index drawn with probability proportional to exp(eps0 * score / (2 sensitivity)).

  `epsilon0 = inf` returns the argmax (non-private).
  """
  scores = np.asarray(scores, np.float64)
  if math.isinf(epsilon0):
    return int(np.argmax(scores))
  logits = epsilon0 * (scores - scores.max()) / (2.0 * sensitivity)
  return int(np.argmax(logits + rng.gumbel(size=scores.shape)))


def spanning_tree(num_columns: int, errors: dict, epsilon0: float, rng) -> list:
  """MST's tree (McKenna et al. 2021): num_columns - 1 exponential-mechanism picks.

  Each pick is among the pairs that join two components of the tree so far,
  scored by `errors` (the L1 error of the independent estimate, sensitivity
  1); every pick is epsilon0^2 / 8-zCDP.

  Args:
    num_columns: d.
    errors: {(a, b): score} for every pair a < b (PRIVATE).
    epsilon0: the exponential mechanism's parameter (inf: argmax).
    rng: numpy Generator.

  Returns:
    the d - 1 picked pairs, in order.
  """
  pairs = sorted(errors)
  parent = list(range(num_columns))

  def find(x):
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  tree = []
  for _ in range(num_columns - 1):
    cand = [e for e in pairs if find(e[0]) != find(e[1])]
    pick = cand[exponential_mechanism(np.array([errors[e] for e in cand]), epsilon0, 1.0, rng)]
    parent[find(pick[0])] = find(pick[1])
    tree.append(pick)
  return tree
