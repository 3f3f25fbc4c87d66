"""Balanced sampling: exact totals, unbiased counts, far less variance than i.i.d. rows."""
import jax
import numpy as np
import pandas as pd
import pytest

from jtwin.errors import JtwinInputError
from jtwin.marginals import balanced, swaps
from jtwin.marginals.ensemble import sample_posterior
from jtwin.models import make_mixture_model
from jtwin.models.interface import Feature
from jtwin.models.posterior import MeanFieldParams

FEATURES = (Feature("a", "categorical", 3, True), Feature("b", "bernoulli", 2),
            Feature("c", "categorical", 4))


def _posterior(k, seed=0, features=FEATURES):
  model = make_mixture_model(features, k)
  loc = model.init(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  loc = {n: np.asarray(v) + rng.normal(0, 1.5, np.shape(v)) for n, v in loc.items()}
  return model, MeanFieldParams(loc, {n: np.full(np.shape(v), -3.0) for n, v in loc.items()})


def _model_tables(k, seed=0):
  model, post = _posterior(k, seed)
  w, tables = balanced.component_tables(FEATURES, k, post.loc)
  return model, post, w, tables


@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
@pytest.mark.parametrize("cells", [1, 2, 7])
def test_allocate_sums_rounds_and_is_unbiased(shape, cells):
  rng = np.random.default_rng(cells)
  totals = rng.integers(0, 50, shape)
  probs = rng.dirichlet(np.ones(cells), shape) if cells > 1 else np.ones(shape + (1,))
  grid = (np.arange(400) + 0.5) / 400          # offsets spread evenly over [0, 1)
  counts = np.stack([balanced.allocate(totals, probs, np.full(shape, u)) for u in grid])
  np.testing.assert_array_equal(counts.sum(-1), np.broadcast_to(totals, counts.shape[:-1]))
  exact = totals[..., None] * probs
  assert np.all(counts >= np.floor(exact - 1e-9)) and np.all(counts <= np.ceil(exact + 1e-9))
  np.testing.assert_allclose(counts.mean(0), exact, atol=1.0 / 400 + 1e-9)


def test_allocate_zero_weights_are_uniform_and_zero_totals_empty():
  got = balanced.allocate(np.array([4, 0]), np.zeros((2, 4)), np.array([0.3, 0.9]))
  np.testing.assert_array_equal(got, [[1, 1, 1, 1], [0, 0, 0, 0]])


def test_component_tables_match_the_model_parameters():
  k = 3
  _, post, w, tables = _model_tables(k)
  a = np.concatenate([post.loc["mix"], [0.0]])
  np.testing.assert_allclose(w, np.exp(a) / np.exp(a).sum(), rtol=1e-5)
  q = 1.0 / (1.0 + np.exp(-post.loc["missing_logit"][:, 0]))
  np.testing.assert_allclose(tables[0][:, -1], q, rtol=1e-5)
  assert [t.shape for t in tables] == [(k, 4), (k, 2), (k, 4)]
  for t in tables:
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)


def test_component_tables_reject_numeric_columns():
  features = (Feature("x", "normal"), Feature("b", "bernoulli", 2))
  _, post = _posterior(2, features=features)
  with pytest.raises(ValueError, match="categorical columns only"):
    balanced.component_tables(features, 2, post.loc)


@pytest.mark.parametrize("k,n", [(1, 7), (5, 1000), (40, 333)])
def test_one_way_counts_are_within_the_rounding_bound(k, n):
  """Every 1-way count is within 2K of N times the model's marginal: a deterministic bound."""
  _, _, w, tables = _model_tables(k, seed=k)
  missing = [f.missing for f in FEATURES]
  values, observed = balanced.balanced_rows(np.random.default_rng(0), w, tables, missing, n)
  assert values.shape == (n, 3) and observed.shape == (n, 3)
  for j, t in enumerate(tables):
    codes = np.where(observed[:, j], values[:, j], t.shape[1] - 1).astype(int)
    counts = np.bincount(codes, minlength=t.shape[1])
    assert np.all(np.abs(counts - n * (w @ t)) <= 2 * k), (j, counts, n * (w @ t))
  assert np.all(values[~observed] == 0)
  assert observed[:, 1:].all()           # only 'a' may be missing


def test_two_way_counts_are_unbiased_with_less_variance_than_iid():
  """Over repeats, each 2-way cell's mean count matches N sum_k pi_k p_ka p_kb (the
  model's closed form), and its variance is below the multinomial one."""
  k, n, repeats = 4, 200, 400
  _, _, w, tables = _model_tables(k, seed=3)
  missing = [f.missing for f in FEATURES]
  exact = n * np.einsum("k,ka,kb->ab", w, tables[0], tables[2])
  got = []
  rng = np.random.default_rng(1)
  for _ in range(repeats):
    v, o = balanced.balanced_rows(rng, w, tables, missing, n)
    a = np.where(o[:, 0], v[:, 0], 3).astype(int)
    got.append(np.bincount(a * 4 + v[:, 2].astype(int), minlength=16).reshape(4, 4))
  got = np.asarray(got, float)
  multinomial_var = exact * (1 - exact / n)
  # mean within 4 standard errors of the multinomial's (an upper bound of the true sd)
  assert np.all(np.abs(got.mean(0) - exact) <= 4 * np.sqrt(multinomial_var / repeats) + 1e-9)
  assert got.var(0).sum() < 0.8 * multinomial_var.sum()


def test_sample_posterior_balanced_uses_the_posterior_mean():
  k, n = 3, 3000
  model, post = _posterior(k, seed=5)
  w, tables = balanced.component_tables(FEATURES, k, post.loc)
  wide = MeanFieldParams(post.loc, {nm: np.full(np.shape(v), 2.0) for nm, v in post.loc.items()})
  values, observed = sample_posterior(jax.random.key(0), model, wide, n, sampling="balanced")
  counts = np.bincount(values[:, 2].astype(int), minlength=4)
  assert np.all(np.abs(counts - n * (w @ tables[2])) <= 2 * k)   # the scales play no part


@pytest.mark.parametrize("kwargs,message", [
    (dict(sampling="balanced", records_per_draw=2), "Rubin"),
    (dict(sampling="stratified"), "sampling must be one of"),
])
def test_sample_posterior_rejects_bad_choices(kwargs, message):
  model, post = _posterior(2)
  with pytest.raises(ValueError, match=message):
    sample_posterior(jax.random.key(0), model, post, 10, **kwargs)


def test_resolve_sampling_defaults_and_rejects():
  from jtwin.marginals.ensemble import resolve_sampling
  with pytest.raises(JtwinInputError, match="--sampling balanced .* --m > 1; use --sampling iid"):
    resolve_sampling("balanced", 3, flag="--sampling", m_flag="--m")
  assert resolve_sampling(None, 1) == "balanced" and resolve_sampling(None, 3) == "iid"
  assert resolve_sampling(None, 1, marginal=False) == "iid"
  assert resolve_sampling("balanced", 1, marginal=False) == "balanced"
  with pytest.raises(JtwinInputError, match="sampling must be one of"):
    resolve_sampling("nope", 1)


def test_balanced_twin_is_closer_to_the_model_than_iid_rows():
  """The 1-way TVD of the twin to the model's marginals (sampling noise only)."""
  k, n = 20, 5000
  model, post = _posterior(k, seed=7)
  post = MeanFieldParams(post.loc, {nm: np.full(np.shape(v), -20.0) for nm, v in post.loc.items()})
  w, tables = balanced.component_tables(FEATURES, k, post.loc)
  tvd = {}
  for sampling in ("balanced", "iid"):
    values, _ = sample_posterior(jax.random.key(2), model, post, n, sampling=sampling)
    p = np.bincount(values[:, 2].astype(int), minlength=4) / n
    tvd[sampling] = 0.5 * np.abs(p - w @ tables[2]).sum()
  assert tvd["balanced"] <= 2 * k * 4 / (2 * n)
  assert tvd["balanced"] < tvd["iid"]


def _pair_loss(codes, weights, tables):
  """sum over column pairs and cells of (count - N * model probability)^2, by brute force."""
  n, d = codes.shape
  loss = 0.0
  for i in range(d):
    for j in range(i + 1, d):
      ci, cj = tables[i].shape[1], tables[j].shape[1]
      got = np.bincount(codes[:, i] * cj + codes[:, j], minlength=ci * cj).reshape(ci, cj)
      loss += np.sum((got - n * np.einsum("k,ka,kb->ab", weights, tables[i], tables[j]))**2)
  return loss


def _component_rows(rng, weights, tables, n):
  per = balanced.allocate(float(n), weights, 0.5)
  comp = np.repeat(np.arange(len(weights)), per)
  codes = np.stack([(rng.random(n)[:, None] > np.cumsum(t[comp], 1)).sum(1) for t in tables], 1)
  return np.minimum(codes, [t.shape[1] - 1 for t in tables]), per


def test_pair_tables_count_like_bincount():
  rng = np.random.default_rng(0)
  sizes = [3, 5, 2, 4]
  codes = np.stack([rng.integers(0, s, 500) for s in sizes], 1)
  pairs = swaps.pair_layout(sizes)
  flat = swaps.table_counts(pairs, codes)
  assert flat.sum() == 500 * 6
  for i in range(4):
    for j in range(4):
      if i != j:
        want = np.bincount(codes[:, i] * sizes[j] + codes[:, j], minlength=sizes[i] * sizes[j])
        base, s_i, s_j = swaps.pair_strides(pairs)
        x_i, x_j = np.meshgrid(np.arange(sizes[i]), np.arange(sizes[j]), indexing="ij")
        got = flat[base[j, i] + x_i * s_i[j, i] + x_j * s_j[j, i]].ravel()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k,n", [(3, 400), (20, 3000)])
def test_refine_lowers_the_pair_loss_and_keeps_each_components_values(k, n):
  rng = np.random.default_rng(k)
  weights = rng.dirichlet(np.ones(k))
  tables = [rng.dirichlet(np.full(c, 0.7), k) for c in (4, 2, 6, 3)]
  codes, per = _component_rows(rng, weights, tables, n)
  out = balanced.refine(rng, codes, per, weights, tables, sweeps=10)
  assert _pair_loss(out, weights, tables) < 0.6 * _pair_loss(codes, weights, tables)
  ends = np.cumsum(per)
  for start, end in zip(ends - per, ends):       # a component's rows keep their values
    for j in range(codes.shape[1]):
      np.testing.assert_array_equal(np.sort(out[start:end, j]), np.sort(codes[start:end, j]))
  unchanged = balanced.refine(rng, codes, per, weights, tables, sweeps=0)
  np.testing.assert_array_equal(unchanged, codes)


def test_balanced_rows_swaps_toward_the_model_pairs():
  k, n = 10, 4000
  _, _, w, tables = _model_tables(k, seed=11)
  missing = [f.missing for f in FEATURES]
  loss = {}
  for sweeps in (0, 10):
    v, o = balanced.balanced_rows(np.random.default_rng(4), w, tables, missing, n, sweeps=sweeps)
    codes = v.astype(int)
    codes[:, 0] = np.where(o[:, 0], codes[:, 0], tables[0].shape[1] - 1)
    loss[sweeps] = _pair_loss(codes, w, tables)
  assert loss[10] < 0.7 * loss[0]
