"""Joining several fitted mixtures into one (jtwin.marginals.ensemble)."""
import jax
import numpy as np
import pytest

from jtwin.marginals import cells as cl
from jtwin.marginals import ensemble as ens
from jtwin.marginals import fit as mfit
from jtwin.marginals import mixture_marginals as mm
from jtwin.models.posterior import MeanFieldParams, raw_scale_for, scale_of


def _cells():
  return (cl.CellColumn("a", "category", labels=("x", "y", "z"), groups=((0,), (1,), (2,)),
                        weights=(1.0, 1.0, 1.0)),
          cl.CellColumn("b", "category", labels=("u", "v"), groups=((0,), (1,)),
                        weights=(1.0, 1.0), missing=True),
          cl.CellColumn("c", "category", labels=("p", "q", "r", "s"),
                        groups=((0,), (1,), (2,), (3,)), weights=(1.0,) * 4))


def _member(index, key, scale):
  k1, k2 = jax.random.split(key)
  theta = mfit.initial_theta(index, k1, [np.array([5., 3., 2.]), np.array([4., 4., 1.]),
                                         np.array([1., 2., 3., 4.])], 1.0, 2.0)
  theta = {k: np.asarray(v, np.float64) for k, v in theta.items()}
  theta["mix"] = np.asarray(jax.random.normal(k2, theta["mix"].shape))
  raw = {k: np.full(np.shape(v), raw_scale_for(scale)) for k, v in theta.items()}
  return MeanFieldParams(theta, raw)


@pytest.mark.parametrize("num_members,k", [(1, 4), (2, 3), (3, 5)])
def test_joined_marginals_are_the_average_of_the_members(num_members, k):
  cells = _cells()
  index = mm.make_index(cells, k)
  members = [_member(index, jax.random.PRNGKey(i), 0.1 * (i + 1)) for i in range(num_members)]
  joined = ens.join_mixtures(members)
  big = mm.make_index(cells, k * num_members)
  assert joined.loc["mix"].shape == (k * num_members - 1,)
  assert joined.raw_scale["mix"].shape == (k * num_members - 1,)
  for name in ("cat_logits", "missing_logit"):
    assert joined.loc[name].shape[0] == k * num_members
  want = np.mean([np.asarray(mm.marginal_vector(index, m.loc)) for m in members], axis=0)
  got = np.asarray(mm.marginal_vector(big, joined.loc))
  c = big.num_theta
  # 1- and 2-way parts: the joined mixture's u and G restricted to the fine cells
  u_want, u_got = want[:index.num_theta], got[:c]
  np.testing.assert_allclose(u_got, u_want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[c:c + c * c], want[index.num_theta:index.num_theta * (1 + index.num_theta)],
                             rtol=1e-5, atol=1e-6)


def test_component_scales_are_kept_and_weight_scales_are_positive():
  cells = _cells()
  index = mm.make_index(cells, 3)
  members = [_member(index, jax.random.PRNGKey(i), s) for i, s in enumerate((0.05, 0.2))]
  joined = ens.join_mixtures(members)
  np.testing.assert_allclose(np.asarray(scale_of(joined.raw_scale["cat_logits"]))[:3], 0.05,
                             rtol=1e-4)
  np.testing.assert_allclose(np.asarray(scale_of(joined.raw_scale["cat_logits"]))[3:], 0.2,
                             rtol=1e-4)
  s = np.asarray(scale_of(joined.raw_scale["mix"]))
  assert np.all(s > 0) and np.allclose(s[:3], 0.05, rtol=1e-3) and np.allclose(s[3:], 0.2, rtol=1e-3)


def test_one_member_is_returned_unchanged():
  index = mm.make_index(_cells(), 4)
  m = _member(index, jax.random.PRNGKey(0), 0.1)
  assert ens.join_mixtures([m]) is m


@pytest.mark.parametrize("num_members,k", [(2, 3), (3, 4)])
def test_member_posteriors_are_recovered_exactly(num_members, k):
  index = mm.make_index(_cells(), k)
  members = [_member(index, jax.random.PRNGKey(i), 0.1 * (i + 1)) for i in range(num_members)]
  joined = ens.join_mixtures(members)
  for r, m in enumerate(members):
    got = ens.member_posterior(joined, num_members, r)
    for part_got, part_want in ((got.loc, m.loc), (got.raw_scale, m.raw_scale)):
      assert set(part_got) == set(part_want)
      for name in part_want:
        np.testing.assert_allclose(part_got[name], part_want[name], rtol=1e-5, atol=1e-5)


def _two_pure_members():
  """A joined posterior whose member r always puts column a on label r."""
  cells = _cells()
  index = mm.make_index(cells, 2)
  members = []
  for r in range(2):
    m = _member(index, jax.random.PRNGKey(r), 1e-3)
    logits = np.array(m.loc["cat_logits"], np.float64)
    pos = index.layout.pad_index[0, :2]           # free logits of column a's cells x, y
    logits[:, pos] = -30.0
    logits[:, pos[r]] = 30.0                       # member r: always x (r = 0) or y (r = 1)
    members.append(m._replace(loc={**m.loc, "cat_logits": logits}))
  return cells, ens.join_mixtures(members)


def test_each_draw_comes_from_one_member():
  """Members that put column a on different labels: every block of m rows is pure."""
  cells, joined = _two_pure_members()
  feats = mm.cell_features(cells)
  values, observed = ens.sample_by_member(jax.random.PRNGKey(5), feats, joined, 2, 2000, 10)
  assert values.shape == (2000, 3) and observed.shape == (2000, 3)
  blocks = values[:, 0].reshape(200, 10)
  assert np.all(blocks == blocks[:, :1])            # one member per draw
  share = np.mean(blocks[:, 0] == 0)
  assert 0.4 < share < 0.6                          # members picked uniformly


@pytest.mark.parametrize("records_per_draw,members,pure", [(10, 2, True), (1, 2, False),
                                                           (10, 1, False)])
def test_sample_posterior_draws_by_member_only_for_ensembles_with_m(records_per_draw, members,
                                                                   pure):
  from jtwin.models import make_mixture_model
  cells, joined = _two_pure_members()
  model = make_mixture_model(mm.cell_features(cells), 4)
  post = MeanFieldParams(*[{k: jax.numpy.asarray(v) for k, v in part.items()} for part in joined])
  values, _ = ens.sample_posterior(jax.random.PRNGKey(6), model, post, 1000,
                                   records_per_draw=records_per_draw, members=members)
  blocks = values[:, 0].reshape(100, 10)
  assert np.all(blocks == blocks[:, :1]) == pure
