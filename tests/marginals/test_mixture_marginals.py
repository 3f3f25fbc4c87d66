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
  shape = tuple(int(s) for s in index.sizes[:len(index.multiway_view)])   # fine views
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


@pytest.mark.parametrize("use_jit", [False, True])
def test_coarse_view_marginals_are_sums_of_fine_cells(use_jit):
  import dataclasses
  a, b, c = _cells()
  c = dataclasses.replace(c, coarse=((0, 1), (2, 3)))
  index = mm.make_index((a, b, c), num_components=3, cond_cols=[1])
  assert index.view_column == (0, 1, 2, 2) and index.multiway_view == (0, 1, 3)
  assert list(index.sizes) == [4, 2, 5, 3]
  assert mm.views((a, b, c)) == (index.view_column, tuple(index.sizes), index.multiway_view)
  rng = np.random.default_rng(7)
  theta = {"mix": rng.normal(size=2).astype(np.float32),
           "cat_logits": rng.normal(size=(3, len(index.layout.flat_free))).astype(np.float32),
           "missing_logit": rng.normal(size=(3, 2)).astype(np.float32)}
  fn = lambda th: mm.marginal_vector(index, th)
  vector = np.asarray((jax.jit(fn) if use_jit else fn)(theta), np.float64)
  joint = _joint(index, theta)                                   # [4, 2, 5] over fine cells
  coarse = np.stack([joint[..., 0] + joint[..., 1], joint[..., 2] + joint[..., 3],
                     joint[..., 4]], axis=-1)                      # missing cell stays
  for clique, other in [((3,), (0, 1)), ((0, 3), (1,)), ((1, 3), (0,)), ((0, 1, 3), ())]:
    expected = coarse.sum(axis=other).ravel() if other else coarse.ravel()
    np.testing.assert_allclose(vector[mm.clique_positions(index, clique)], expected, atol=2e-6)


@pytest.mark.parametrize("use_jit", [False, True])
def test_extra_view_marginals_are_sums_of_fine_cells(use_jit):
  """A second, coarser view of a column (multi-resolution tables) beside its coarse view."""
  import dataclasses
  a, b, c = _cells()
  c = dataclasses.replace(c, coarse=((0, 1), (2,), (3,)))
  extra = ((2, ((0, 1, 2), (3,))),)                  # runs of c's fine cells
  index = mm.make_index((a, b, c), num_components=3, cond_cols=[1], extra=extra)
  assert index.view_column == (0, 1, 2, 2, 2) and index.multiway_view == (0, 1, 3)
  assert list(index.sizes) == [4, 2, 5, 4, 3]       # the missing cell stays its own
  assert mm.views((a, b, c), extra) == (index.view_column, tuple(index.sizes),
                                        index.multiway_view)
  theta = _random_theta(index, 3, 5)
  fn = lambda th: mm.marginal_vector(index, th)
  vector = np.asarray((jax.jit(fn) if use_jit else fn)(theta), np.float64)
  joint = _joint(index, theta)
  runs = np.stack([joint[..., :3].sum(-1), joint[..., 3], joint[..., 4]], axis=-1)
  for clique, other in [((4,), (0, 1)), ((0, 4), (1,)), ((1, 4), (0,)), ((0, 1, 4), ())]:
    expected = runs.sum(axis=other).ravel() if other else runs.ravel()
    np.testing.assert_allclose(vector[mm.clique_positions(index, clique)], expected, atol=2e-6)


def _random_theta(index, k, seed):
  rng = np.random.default_rng(seed)
  return {"mix": rng.normal(size=k - 1).astype(np.float32),
          "cat_logits": rng.normal(size=(k, len(index.layout.flat_free))).astype(np.float32),
          "missing_logit": rng.normal(size=(k, 2)).astype(np.float32)}


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_roughness_matches_its_definition(use_jit, seed):
  import dataclasses
  a, b, c = _cells()
  c = dataclasses.replace(c, coarse=((0, 1), (2, 3)))
  index = mm.make_index((a, b, c), num_components=3)
  # only the numeric column with a coarse view: its 4 observed cells, 2 triples
  np.testing.assert_array_equal(index.adjacent, np.stack(
      [index.cell_pos[2][:2], index.cell_pos[2][1:3], index.cell_pos[2][2:4]], 1))
  theta = _random_theta(index, 3, seed)
  fn = lambda th: mm.roughness(index, th)
  got = float((jax.jit(fn) if use_jit else fn)(theta))
  table = np.exp(np.asarray(mm.log_cell_table(index, theta), np.float64))       # [K, C]
  pi = np.exp(np.asarray(jax.nn.log_softmax(np.append(theta["mix"], 0.0)), np.float64))
  share = np.log(table[:, index.cell_pos[2][:4]]) - np.log(pi @ table[:, index.cell_pos[2][:4]])
  expected = sum(pi[k] * np.sum(np.diff(share[k], 2) ** 2) for k in range(3))
  assert got == pytest.approx(expected, rel=1e-4)


def test_roughness_is_zero_for_constant_shares_and_without_coarse_views():
  import dataclasses
  a, b, c = _cells()
  index = mm.make_index((a, b, c), num_components=2)
  assert index.adjacent.shape == (0, 3)                          # no coarse view: no prior
  assert float(mm.roughness(index, _random_theta(index, 2, 0))) == 0.0
  c = dataclasses.replace(c, coarse=((0, 1), (2, 3)))
  index = mm.make_index((a, b, c), num_components=2)
  theta = _random_theta(index, 2, 1)
  # components whose numeric cells all have the same probability: log shares are
  # constant across cells, so their second differences vanish
  logits = np.asarray(theta["cat_logits"]).copy()
  layout = index.layout
  free = [i for i, f in enumerate(layout.flat_feature[:len(layout.flat_free)]) if f == 2]
  logits[:, free] = 0.0
  theta["cat_logits"] = logits
  assert float(mm.roughness(index, theta)) == pytest.approx(0.0, abs=1e-8)
  logits[0, free[0]] = 2.0                                       # a kink in component 0
  assert float(mm.roughness(index, theta)) > 0.01
