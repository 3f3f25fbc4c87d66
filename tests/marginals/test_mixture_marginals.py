"""Closed-form mixture marginals against brute-force enumeration of the joint."""
import itertools

import jax
import numpy as np
import pytest

from jtwin.marginals import cells as cl
from jtwin.marginals import mixture_marginals as mm


def _cells():
  """Three columns: 3 categories + missing, 2 categories, 4 numeric cells + missing."""
  a = cl.CellColumn("a", "category", labels=("x", "y", "z"), missing=True,
                    groups=((0,), (1,), (2,)), weights=((1.0,),) * 3)
  b = cl.CellColumn("b", "category", labels=("u", "v"), groups=((0,), (1,)),
                    weights=((1.0,),) * 2)
  c = cl.CellColumn("c", "numeric", edges=(0.0, 1.0, 2.0, 3.0, 4.0), point=(False,) * 4,
                    missing=True, groups=((0,), (1,), (2,), (3,)), weights=((1.0,),) * 4)
  return (a, b, c)


def _joint(index, theta):
  """P(x) for every combination of cells, by enumeration: [4, 2, 5]."""
  table = np.exp(np.asarray(mm.log_cell_table(index, theta), np.float64))
  pi = np.exp(np.asarray(jax.nn.log_softmax(np.append(theta["mix"], 0.0)), np.float64))
  shape = tuple(int(s) for s in index.sizes)
  joint = np.zeros(shape)
  for combo in itertools.product(*[range(s) for s in shape]):
    prob = pi.copy()
    for col, cell in enumerate(combo):
      prob = prob * table[:, index.cell_pos[col][cell]]
    joint[combo] = prob.sum()
  return joint


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_marginals_match_enumeration(use_jit, seed):
  cells = _cells()
  index = mm.make_index(cells, num_components=4, cond_cols=[1])
  template = {"mix": np.zeros(3), "cat_logits": np.zeros((4, len(index.layout.flat_free))),
              "missing_logit": np.zeros((4, 2))}
  rng = np.random.default_rng(seed)
  theta = {k: jax.numpy.asarray(rng.normal(size=np.shape(v)) * 1.5, jax.numpy.float32)
           for k, v in template.items()}
  vector_fn = lambda th: mm.marginal_vector(index, th)
  vector = np.asarray((jax.jit(vector_fn) if use_jit else vector_fn)(theta), np.float64)
  joint = _joint(index, theta)
  assert joint.sum() == pytest.approx(1.0, abs=1e-5)
  cliques = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
  for clique in cliques:
    other = tuple(i for i in range(3) if i not in clique)
    expected = joint.sum(axis=other).ravel()
    got = vector[mm.clique_positions(index, clique)]
    np.testing.assert_allclose(got, expected, atol=2e-6, err_msg=str(clique))


def test_each_component_is_a_distribution_per_column():
  cells = _cells()
  index = mm.make_index(cells, num_components=3)
  rng = np.random.default_rng(3)
  theta = {"mix": rng.normal(size=2).astype(np.float32),
           "cat_logits": rng.normal(size=(3, len(index.layout.flat_free))).astype(np.float32),
           "missing_logit": rng.normal(size=(3, 2)).astype(np.float32)}
  table = np.exp(np.asarray(mm.log_cell_table(index, theta)))
  for pos in index.cell_pos:
    np.testing.assert_allclose(table[:, pos].sum(1), 1.0, atol=1e-6)


def test_three_way_needs_a_conditioning_column():
  index = mm.make_index(_cells(), num_components=2)
  with pytest.raises(ValueError, match="conditioning"):
    mm.clique_positions(index, (0, 1, 2))
  with pytest.raises(ValueError, match="increasing"):
    mm.clique_positions(index, (1, 0))
