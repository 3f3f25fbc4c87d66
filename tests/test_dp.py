"""DP mechanics, Tier 1 of dp_engines.md §5.3: clip bound, neighbour
sensitivity, per-example isolation, noise distribution and purity, one trace.

The sensitivity tests run on both clipping paths: the closed-form mixture
fast path (`model.clipped_grad_sum`) and the generic `vmap(grad)` path
(`dp.vmap_clipped_grad_sum`); norms are the weighted norms sqrt(sum w g^2)
that the trainer clips (coord_weights).
"""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jtwin import dp
from jtwin.models.interface import Feature
from jtwin.models.mixture import make_mixture_model
from jtwin.models.mixture_grads import group_unscale


def _wnorm(tree, w=None):
  total = 0.0
  for k in tree:
    g = np.asarray(tree[k], np.float64)
    total += np.sum((1.0 if w is None else np.asarray(w[k], np.float64)) * g * g)
  return math.sqrt(total)


def _diff(a, b):
  return {k: np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64) for k in a}


# ------------------------------------------------------------------ clip bound
def _toy_ell(theta, x, observed):
  """A linear log-likelihood: its gradient is x itself (as a pytree)."""
  del observed
  return theta["a"] @ x[:3] + jnp.sum(theta["b"] * x[3:7].reshape(2, 2))


TOY_THETA = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}


def _toy_rows():
  rng = np.random.default_rng(0)
  rows = [rng.normal(0, s, 7) for s in (0.01, 0.3, 1.0, 3.0, 100.0)]
  rows += [np.full(7, 1e15), np.zeros(7), np.full(7, 1e-30)]
  nan_row = rng.normal(size=7); nan_row[2] = np.nan
  inf_row = rng.normal(size=7); inf_row[5] = np.inf
  ninf_row = rng.normal(size=7); ninf_row[0] = -np.inf
  rows += [nan_row, inf_row, ninf_row]
  unit = rng.normal(size=7)
  rows += [unit / np.linalg.norm(unit)]          # norm exactly 1 (the clip below)
  return np.asarray(rows, np.float32), np.array([0] * 8 + [1, 1, 1] + [0], bool)


def _split(x):
  return {"a": x[:, :3], "b": x[:, 3:7].reshape(-1, 2, 2)}


@pytest.mark.parametrize("clip", [1e-3, 1.0, 50.0])
@pytest.mark.parametrize("jit", [False, True])
def test_clip_factors_bound_norms_and_zero_nonfinite(clip, jit):
  x, nonfinite = _toy_rows()
  per_example = _split(jnp.asarray(x))
  rng = np.random.default_rng(1)
  w = {"a": jnp.float32(rng.uniform(0.5, 3, (3,))), "b": jnp.float32(rng.uniform(0.5, 3, (2, 2)))}
  mask = jnp.ones(len(x), bool).at[3].set(False)
  norms_fn = jax.jit(dp.global_norms) if jit else dp.global_norms
  factors_fn = jax.jit(dp.clip_factors) if jit else dp.clip_factors
  norms = norms_fn(per_example, w)
  c, finite = factors_fn(norms, mask, clip)
  c, finite, norms = np.asarray(c), np.asarray(finite), np.asarray(norms)
  np.testing.assert_array_equal(finite, ~nonfinite)
  assert np.all(c[nonfinite] == 0.0) and c[3] == 0.0       # non-finite and padding
  want_norms = np.sqrt([sum(np.sum(np.asarray(w[k], np.float64) * np.asarray(per_example[k][i],
                                                                              np.float64) ** 2)
                            for k in w) for i in range(len(x))])
  np.testing.assert_allclose(norms[~nonfinite], want_norms[~nonfinite], rtol=1e-6,
                             atol=1e-18)  # (1e-30)^2 underflows in float32
  for i in range(len(x)):
    clipped = {k: c[i] * np.asarray(per_example[k][i], np.float64) for k in w}
    if c[i] == 0.0:
      continue
    n_i = _wnorm(clipped, w)
    # the float32 contribution never exceeds C (margin 2^-16 absorbs rounding)
    assert n_i <= clip, (i, n_i, clip)
    np.testing.assert_allclose(n_i, min(want_norms[i], clip), rtol=2e-5)
  assert c[6] == 1.0                                        # zero gradient: factor 1


@pytest.mark.parametrize("clip", [1e-3, 1.0, 50.0])
def test_vmap_clipped_grad_sum_toy_linear(clip):
  x, nonfinite = _toy_rows()
  values = jnp.asarray(x)
  observed = jnp.ones(values.shape, bool)
  w = jax.tree.map(lambda t: jnp.full(t.shape, 2.0), TOY_THETA)
  mask = jnp.ones(len(x), bool).at[3].set(False)
  run = jax.jit(lambda m: dp.vmap_clipped_grad_sum(_toy_ell, TOY_THETA, w, values, observed,
                                                   m, clip, return_norms=True))
  g, info, norms = run(mask)
  # float64 oracle: sum_i min(1, C/||x_i||_w) x_i over finite real rows.
  x64 = x.astype(np.float64)
  use = np.asarray(mask) & ~nonfinite
  n64 = np.sqrt(2.0 * np.sum(np.where(use[:, None], x64, 0.0) ** 2, 1))
  f = np.where(use, np.minimum(1.0, dp.CLIP_MARGIN * clip / np.where(n64 > 0, n64, 1.0)), 0.0)
  want = np.sum(f[:, None] * np.where(use[:, None], x64, 0.0), 0)
  got = np.concatenate([np.asarray(g["a"]), np.asarray(g["b"]).ravel()])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * clip)
  assert np.all(np.isfinite(got))
  assert int(info.num_nonfinite) == 3
  assert int(info.num_clipped) == int(np.sum(use & (n64 > clip * (1 + 1e-6))))
  # Each row alone: its clipped contribution is within C, non-finite rows give exactly 0.
  for i in range(len(x)):
    gi, info_i, _ = run(jnp.asarray(np.arange(len(x)) == i))
    n_i = _wnorm(gi, w)
    assert n_i <= clip * (1 + 1e-6), (i, n_i)
    if nonfinite[i]:
      assert n_i == 0.0 and int(info_i.num_nonfinite) == 1


def test_huge_finite_gradient_is_clipped_not_dropped():
  per_example = {"a": jnp.full((1, 3), 1e20), "b": jnp.ones((1, 2, 2))}
  norms = dp.global_norms(per_example)
  c, finite = dp.clip_factors(norms, jnp.ones(1, bool), 1.0)
  assert bool(finite[0]) and float(c[0]) > 0.0


# ------------------------------------------------------------------ the real mixture
FEATURES = (Feature("x", "normal", missing=True), Feature("n", "poisson"),
            Feature("c", "categorical", 4, missing=True), Feature("b", "bernoulli"),
            Feature("y", "normal"))
MODEL = make_mixture_model(FEATURES, 3, group_clip=False)
B = 16


def _fast(theta, w, values, observed, mask, clip):
  return MODEL.clipped_grad_sum(theta, w, values, observed, mask, clip)


def _vmap(theta, w, values, observed, mask, clip):
  return dp.vmap_clipped_grad_sum(MODEL.log_likelihood, theta, w, values, observed, mask, clip)


GROUPED = make_mixture_model(FEATURES, 3, group_clip=True)


def _grouped(theta, w, values, observed, mask, clip):
  return GROUPED.clipped_grad_sum(theta, w, values, observed, mask, clip)


PATHS = {"fast": jax.jit(_fast), "vmap": jax.jit(_vmap), "grouped": jax.jit(_grouped)}


def _batch(seed):
  k_th, k_x = jax.random.split(jax.random.key(seed))
  theta = jax.jit(MODEL.init)(k_th)
  values, observed = jax.jit(MODEL.sample, static_argnums=2)(k_x, theta, B)
  rng = np.random.default_rng(seed)
  w = {k: jnp.float32(rng.uniform(1.0, 2.5, v.shape)) for k, v in theta.items()}
  return theta, w, values, observed


def _adversarial(values, observed, j):
  """Row j -> an outlier with a large gradient (finite log-likelihood)."""
  v = values.at[j].set(jnp.array([40.0, 60.0, 3.0, 1.0, -30.0]))
  return v, observed.at[j].set(True)


@pytest.mark.parametrize("path", ["fast", "vmap", "grouped"])
@pytest.mark.parametrize("clip", [0.3, 5.0])
def test_neighbour_sensitivity(path, clip):
  fn = PATHS[path]
  theta, w, values, observed = _batch(1)
  mask = jnp.ones(B, bool).at[B - 1].set(False)       # one padding row at the end
  s_d, info = fn(theta, w, values, observed, mask, clip)
  assert int(info.num_nonfinite) == 0
  worst = {"remove": 0.0, "pad": 0.0, "replace": 0.0}
  for j in (0, 5, B - 2):
    # remove row j: shift the rest up, the freed slot becomes padding.
    order = np.r_[np.arange(j), np.arange(j + 1, B), j]
    s_rm, _ = fn(theta, w, values[order], observed[order], mask[order].at[B - 1].set(False),
                 clip)
    worst["remove"] = max(worst["remove"], _wnorm(_diff(s_d, s_rm), w))
    s_pad, _ = fn(theta, w, values, observed, mask.at[j].set(False), clip)
    worst["pad"] = max(worst["pad"], _wnorm(_diff(s_d, s_pad), w))
    v2, o2 = _adversarial(values, observed, j)
    s_rep, info_rep = fn(theta, w, v2, o2, mask, clip)
    assert int(info_rep.num_nonfinite) == 0
    worst["replace"] = max(worst["replace"], _wnorm(_diff(s_d, s_rep), w))
  assert worst["remove"] <= clip * (1 + 1e-5), worst
  assert worst["pad"] <= clip * (1 + 1e-5), worst
  assert worst["replace"] <= 2 * clip * (1 + 1e-5), worst
  # The bounds are nearly attained: the test can tell C from 2C (global clipping;
  # with group clipping an outlier saturates only some groups' shares).
  if path != "grouped":
    assert worst["replace"] > 1.05 * clip


@pytest.mark.parametrize("path", ["fast", "vmap", "grouped"])
def test_padding_slot_content_is_irrelevant(path):
  fn = PATHS[path]
  theta, w, values, observed = _batch(2)
  mask = jnp.asarray(np.arange(B) < B - 3)
  base = fn(theta, w, values, observed, mask, 1.0)
  v2, o2 = _adversarial(values, observed, B - 1)
  v2 = v2.at[B - 2].set(1e30)
  out = fn(theta, w, v2, o2.at[B - 3].set(False), mask, 1.0)
  chex.assert_trees_all_equal(base, out)


@pytest.mark.parametrize("path", ["fast", "vmap"])
@pytest.mark.parametrize("clip", [0.3, 5.0])
def test_per_example_isolation(path, clip):
  """S(D') - S(D) = clip(g_j') - clip(g_j) when only example j changes."""
  fn = PATHS[path]
  theta, w, values, observed = _batch(3)
  mask = jnp.ones(B, bool)
  s_d, _ = fn(theta, w, values, observed, mask, clip)
  j = 7
  v2, o2 = _adversarial(values, observed, j)
  s_d2, _ = fn(theta, w, v2, o2, mask, clip)
  only_j = jnp.asarray(np.arange(B) == j)
  c_old, _ = fn(theta, w, values, observed, only_j, clip)
  c_new, _ = fn(theta, w, v2, o2, only_j, clip)
  lhs, rhs = _diff(s_d2, s_d), _diff(c_new, c_old)
  for k in lhs:
    np.testing.assert_allclose(lhs[k], rhs[k], rtol=1e-4, atol=3e-6 * B * clip, err_msg=k)


def test_fast_and_vmap_paths_agree_on_the_same_batch():
  theta, w, values, observed = _batch(4)
  mask = jnp.asarray(np.arange(B) % 4 != 0)
  a, ia = PATHS["fast"](theta, w, values, observed, mask, 0.5)
  b, ib = PATHS["vmap"](theta, w, values, observed, mask, 0.5 * (1 - 2.0**-16))
  chex.assert_trees_all_close(a, b, rtol=1e-4, atol=1e-5)
  assert int(ia.num_clipped) == int(ib.num_clipped)


def test_one_trace_for_batches_of_one_shape():
  theta, w, values, observed = _batch(5)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(theta, values, observed, mask):
    return MODEL.clipped_grad_sum(theta, w, values, observed, mask, 1.0)

  try:
    for seed in range(4):
      _, _, v, o = _batch(10 + seed)
      m = jnp.asarray(np.random.default_rng(seed).random(B) < 0.5)
      th = jax.tree.map(lambda t: t + 0.01 * seed, theta)
      step(th, v, o, m)
  finally:
    chex.clear_trace_counter()


# ------------------------------------------------------------------ noise
N_KS = 100_000


@pytest.mark.parametrize("jit", [False, True])
def test_wide_normal_ks_against_standard_normal(jit):
  fn = jax.jit(dp.wide_normal, static_argnums=1) if jit else dp.wide_normal
  z = np.asarray(fn(jax.random.key(0), (N_KS,)), np.float64)
  assert z.dtype == np.float64 and np.all(np.isfinite(z))
  assert stats.kstest(z, "norm").pvalue > 1e-3
  # Negative controls: the same test rejects 2/3 and 3/2 of the scale.
  assert stats.kstest(z * 2 / 3, "norm").pvalue < 1e-3
  assert stats.kstest(z * 1.5, "norm").pvalue < 1e-3
  # The cos and sin halves of the Box-Muller pairs are independent normals too.
  half = N_KS // 2
  for a, b in ((z[:half], z[half:]), (z[:half] ** 2, z[half:] ** 2)):
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(half)


@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 3, 4)])
def test_wide_normal_shapes_and_determinism(shape):
  a = dp.wide_normal(jax.random.key(1), shape)
  assert a.shape == shape and a.dtype == jnp.float32
  np.testing.assert_array_equal(a, dp.wide_normal(jax.random.key(1), shape))
  if np.prod(shape) > 1:
    assert not np.array_equal(np.asarray(a), np.asarray(dp.wide_normal(jax.random.key(2), shape)))
    assert len(np.unique(np.asarray(a))) == a.size


def test_wide_normal_tail_mass():
  z = np.asarray(jax.jit(dp.wide_normal, static_argnums=1)(jax.random.key(2), (2_000_000,)))
  assert np.all(np.isfinite(z))
  n = z.size
  expected = 2 * stats.norm.sf(4.0) * n          # about 127
  count = int(np.sum(np.abs(z) > 4.0))
  assert abs(count - expected) < 5 * math.sqrt(expected), (count, expected)
  expected3 = 2 * stats.norm.sf(3.0) * n
  count3 = int(np.sum(np.abs(z) > 3.0))
  assert abs(count3 - expected3) < 5 * math.sqrt(expected3), (count3, expected3)


def _wide_normal_from_words(monkeypatch, words, size=2):
  """wide_normal with jax.random.bits replaced by fixed 32-bit words (b0..b3)."""
  calls = []

  def fake_bits(key, shape, dtype=jnp.uint32):
    word = words[len(calls)]
    calls.append(shape)
    return jnp.full(shape, word, jnp.uint32)

  monkeypatch.setattr(jax.random, "bits", fake_bits)
  z = np.asarray(dp.wide_normal(jax.random.key(0), (size,)), np.float64)
  monkeypatch.undo()
  assert len(calls) == 4
  return z


@pytest.mark.parametrize("words,radius", [
    ((0, 0, 1 << 23, 0), math.sqrt(82 * math.log(2))),        # 40 leading zeros: |z| = 7.54
    ((0, 0, 1, 0), math.sqrt(2 * 64 * math.log(2))),          # 63 leading zeros
    ((0, 0, 0, 0), math.sqrt(130 * math.log(2))),             # 64: the largest radius, 9.49
    ((0, 1, 0, 0), math.sqrt(64 * math.log(2))),              # 31 leading zeros
])
def test_wide_normal_radius_reaches_far_tails(monkeypatch, words, radius):
  z = _wide_normal_from_words(monkeypatch, words)
  # angle 0: (cos, sin) = (1, 0), so z = (radius, 0).
  np.testing.assert_allclose(z[0], radius, rtol=1e-5)
  assert z[0] > 5.5 and z[1] == 0.0


def test_wide_normal_near_unit_uniform_is_not_nan(monkeypatch):
  """U = (1 + m)/2 with the largest mantissa is ~1 - 2^-25: radius ~0, not NaN."""
  z = _wide_normal_from_words(monkeypatch, (0xFFFFFFFF, 0x80000000, 0, 0xFFFFFFFF))
  assert np.all(np.isfinite(z)) and np.all(np.abs(z) < 1e-3)


def _zeros():
  return {"w": jnp.zeros((250, 200)), "b": jnp.zeros((7,))}


@pytest.mark.parametrize("noise_std,scale", [(1.0, 1.0), (3.0, 0.01), (0.25, 400.0)])
def test_dp_aggregate_zero_gradient_output_is_scaled_standard_normal(noise_std, scale):
  tx = dp.dp_aggregate(noise_std, scale, jax.random.key(3))
  unit = dp.dp_aggregate(1.0, 1.0, jax.random.key(3))
  out, _ = tx.update(_zeros(), tx.init(_zeros()))
  z, _ = unit.update(_zeros(), unit.init(_zeros()))
  # Exactly scale * noise_std * z for the same key: nothing depends on a batch size.
  for k in out:
    np.testing.assert_allclose(out[k], scale * noise_std * np.asarray(z[k], np.float64),
                               rtol=1e-6, atol=0)
  flat = np.concatenate([np.asarray(v, np.float64).ravel() for v in out.values()])
  np.testing.assert_allclose(flat.std(), noise_std * scale, rtol=5 * math.sqrt(0.5 / flat.size))
  assert stats.kstest(flat / (noise_std * scale), "norm").pvalue > 1e-3
  # Linear in the clipped sum: same noise, the input passes through (times scale).
  g = jax.tree.map(lambda t: jnp.full(t.shape, 0.5), _zeros())
  out_g, _ = tx.update(g, tx.init(g))
  for k in out:
    np.testing.assert_allclose(np.asarray(out_g[k]) - np.asarray(out[k]), 0.5 * scale,
                               rtol=1e-4, atol=1e-5 * noise_std * scale)


@pytest.mark.slow
def test_dp_aggregate_state_advances_and_is_pure():
  tx = dp.dp_aggregate(1.0, 1.0, jax.random.key(4))
  params = {"w": jnp.zeros((40, 30)), "b": jnp.zeros((9,))}
  s0 = tx.init(params)
  o1, s1 = tx.update(params, s0)
  o2, s2 = tx.update(params, s1)
  o1b, s1b = tx.update(params, s0)                          # same state -> same noise
  chex.assert_trees_all_equal(o1, o1b)
  np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(s1b.key))
  assert not np.array_equal(jax.random.key_data(s0.key), jax.random.key_data(s1.key))
  assert not np.array_equal(jax.random.key_data(s1.key), jax.random.key_data(s2.key))
  values = np.concatenate([np.asarray(v).ravel() for o in (o1, o2) for v in o.values()])
  assert len(np.unique(values)) == values.size              # distinct across leaves and steps
  # Jitted update gives the same noise.
  o1j, s1j = jax.jit(tx.update)(params, s0)
  chex.assert_trees_all_close(o1, o1j, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(s1j.key))


def test_dp_aggregate_with_given_noise_leaves_state_unchanged():
  tx = dp.dp_aggregate(2.0, 0.5, jax.random.key(5))
  g = {"w": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones(2)}
  noise = {"w": dp.wide_normal(jax.random.key(6), (3, 4)), "b": jnp.array([1.0, -1.0])}
  s0 = tx.init(g)
  out, s1 = tx.update(g, s0, noise=noise)
  chex.assert_trees_all_close(out, dp.privatize(g, noise, 2.0, 0.5), rtol=1e-6)
  chex.assert_trees_all_close(out, jax.tree.map(lambda a, z: 0.5 * (a + 2.0 * z), g, noise),
                              rtol=1e-6)
  np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(s0.key))


def test_dp_aggregate_zero_noise_and_validation():
  tx = dp.dp_aggregate(0.0, 4.0, jax.random.key(7))
  g = {"w": jnp.linspace(-1.0, 1.0, 10)}
  out, _ = tx.update(g, tx.init(g))
  np.testing.assert_array_equal(out["w"], 4.0 * g["w"])
  for bad in (-1.0, float("inf"), float("nan")):
    with pytest.raises(ValueError):
      dp.dp_aggregate(bad, 1.0, jax.random.key(0))


def test_dp_aggregate_chains_with_optax():
  import optax
  tx = optax.chain(dp.dp_aggregate(1.0, 2.0, jax.random.key(8)), optax.sgd(1.0))
  params = {"w": jnp.zeros(1000)}
  state = tx.init(params)
  upd, state = tx.update(params, state, params)
  assert np.asarray(upd["w"]).std() == pytest.approx(2.0, rel=0.15)


@pytest.mark.slow
def test_group_clipping_bounds_each_group_and_matches_vmap_reference():
  """Grouped clipping = per-group clipping of the vmap per-example gradients."""
  from jtwin.models.mixture import make_layout
  from jtwin.models.mixture_grads import group_budgets
  theta, w, values, observed = _batch(3)
  values = values.at[0, 0].set(25.0).at[1, 4].set(-40.0)     # numeric outliers
  mask = jnp.ones(B, bool).at[2].set(False)
  clip = 0.7
  g, info = PATHS["grouped"](theta, w, values, observed, mask, clip)
  layout = make_layout(FEATURES, 3)
  budgets = clip * (1 - 2.0**-16) * group_budgets(layout)
  np.testing.assert_allclose(np.sum(budgets**2), (clip * (1 - 2.0**-16))**2, rtol=1e-6)
  # reference: per-example theta-gradients by vmap, split into the same groups
  grads = jax.vmap(jax.grad(MODEL.log_likelihood), in_axes=(None, 0, 0))(theta, values, observed)
  grads = {k: np.asarray(v, np.float64) for k, v in grads.items()}
  wn = {k: np.asarray(v, np.float64) for k, v in w.items()}
  nn = len(layout.normal_idx)
  def group_parts(i):
    parts = [[("mix", np.s_[:])]]
    for d in range(nn):
      parts.append([("normal_loc", np.s_[:, d]), ("normal_log_scale", np.s_[:, d])])
    for d in range(len(layout.poisson_idx)):
      parts.append([("poisson_log_rate", np.s_[:, d])])
    parts.append([("cat_logits", np.s_[:])])
    parts.append([("missing_logit", np.s_[:])])
    return parts
  want = {k: np.zeros(v.shape[1:]) for k, v in grads.items()}
  s_mix = float(group_unscale(layout, clip)[0])   # the weights' score is pre-scaled, never clipped
  for i in range(B):
    if not bool(mask[i]):
      continue
    total = 0.0
    for gi, part in enumerate(group_parts(i)):
      n = np.sqrt(sum(np.sum(wn[k][sl] * grads[k][i][sl] ** 2) for k, sl in part))
      f = ((min(1.0 / s_mix, budgets[0] / n) if gi == 0 else min(1.0, budgets[gi] / n))
           if n > 0 else 1.0)
      for k, sl in part:
        want[k][sl] += f * grads[k][i][sl]
      total += (f * n) ** 2
    assert np.sqrt(total) <= clip * (1 + 1e-6)           # the whole example stays within C
  for k in want:
    np.testing.assert_allclose(np.asarray(g[k]), want[k], rtol=2e-4, atol=2e-5, err_msg=k)
  assert int(info.num_clipped) > 0
