"""The automatic mixture model: likelihood, prior, exact clipping and sampling.

Oracles: a float64 NumPy/scipy loop over rows, components and columns for the
likelihood and prior; `jtwin.dp.vmap_clipped_grad_sum` (plain `vmap(grad)`)
for the closed-form clipped gradient sum; the known mixture's moments for
the samplers.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jtwin import dp, sampling
from jtwin.models import posterior as post
from jtwin.models.interface import Feature
from jtwin.models.mixture import make_mixture_model

FEATURES = (
    Feature("n1", "normal", missing=True),
    Feature("p1", "poisson", missing=True),
    Feature("c1", "categorical", 3, missing=True),
    Feature("b1", "bernoulli"),
    Feature("n2", "normal"),
    Feature("c2", "categorical", 4),
    Feature("p2", "poisson"),
)
K = 3
MODEL = make_mixture_model(FEATURES, K, group_clip=False)
N_DATA = 24        # one batch shape throughout: every jitted function compiles once
_INIT = jax.jit(MODEL.init)
_SAMPLE = jax.jit(MODEL.sample, static_argnums=2)
LLB = jax.jit(MODEL.log_likelihood_batch)
GARBAGE = (1e30, -1e30, 12345.5, -7.25, 3.0e8)


# ------------------------------------------------------------------ oracles
def _as64(theta):
  return {k: np.asarray(v, np.float64) for k, v in theta.items()}


def _alr_probs(a):
  return special.softmax(np.append(a, 0.0))


def oracle_log_lik(features, theta, values, observed):
  """Brute force log p(x_i | theta): loop over rows and columns (components as
  a length-K vector of scipy densities)."""
  th = _as64(theta)
  log_pi = np.log(_alr_probs(th["mix"]))
  out = np.zeros(len(values))
  for i, (x, o) in enumerate(zip(np.asarray(values, np.float64), np.asarray(observed))):
    lp = log_pi.copy()                                   # [K]
    jn = jp = jm = off = 0
    for d, f in enumerate(features):
      if f.family == "normal":
        if o[d]:
          lp += stats.norm.logpdf(x[d], th["normal_loc"][:, jn],
                                  np.exp(th["normal_log_scale"][:, jn]))
        jn += 1
      elif f.family == "poisson":
        if o[d]:
          lp += stats.poisson.logpmf(x[d], np.exp(th["poisson_log_rate"][:, jp]))
        jp += 1
      else:
        c = 2 if f.family == "bernoulli" else f.num_categories
        if o[d]:
          for k in range(len(lp)):
            p = _alr_probs(th["cat_logits"][k, off:off + c - 1])   # explicit probs
            lp[k] += np.log(p[int(x[d])])
        off += c - 1
      if f.missing:
        q = special.expit(th["missing_logit"][:, jm])
        lp += stats.bernoulli.logpmf(0 if o[d] else 1, q)
        jm += 1
    out[i] = special.logsumexp(lp)
  return out


def _data(seed, n=N_DATA, missing_rate=0.3, placeholders=GARBAGE):
  """Rows from the model at a random theta, random missing cells, garbage there."""
  k_th, k_x = jax.random.split(jax.random.key(seed))
  theta = _INIT(k_th)
  values, _ = _SAMPLE(k_x, theta, n)
  values = np.array(values)
  rng = np.random.default_rng(seed)
  observed = np.ones(values.shape, bool)
  for d, f in enumerate(FEATURES):
    if f.missing:
      observed[:, d] = rng.random(n) >= missing_rate
  observed[0, [d for d, f in enumerate(FEATURES) if f.missing]] = False  # all missing
  garbage = rng.choice(np.asarray(placeholders, np.float32), size=values.shape)
  values = np.where(observed, values, garbage).astype(np.float32)
  return theta, jnp.asarray(values), jnp.asarray(observed)


# ------------------------------------------------------------------ log-likelihood
class LogLikelihoodTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_batch_matches_bruteforce_oracle(self):
    for seed in (0, 1):
      theta, values, observed = _data(seed)
      got = self.variant(MODEL.log_likelihood_batch)(theta, values, observed)
      want = oracle_log_lik(FEATURES, theta, values, observed)
      self.assertEqual(got.shape, (values.shape[0],))
      self.assertTrue(np.all(np.isfinite(np.asarray(got))))
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_per_example_equals_batch(self):
    theta, values, observed = _data(2)
    batch = LLB(theta, values, observed)
    one = self.variant(MODEL.log_likelihood)
    per = np.array([one(theta, values[i], observed[i]) for i in range(0, N_DATA, 3)])
    batch = batch[::3]
    np.testing.assert_allclose(per, batch, rtol=1e-6, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_placeholders_in_missing_cells_are_ignored(self):
    theta, values, observed = _data(3)
    zeroed = jnp.where(observed, values, 0.0)
    fn = self.variant(MODEL.log_likelihood_batch)
    a, b = fn(theta, values, observed), fn(theta, zeroed, observed)
    self.assertTrue(np.all(np.isfinite(np.asarray(a))))
    np.testing.assert_array_equal(a, b)


_GRAD_LL = jax.jit(jax.grad(lambda th, v, o: jnp.sum(MODEL.log_likelihood_batch(th, v, o))))


@pytest.mark.parametrize("placeholder", [
    0.0, 1e30, -1e30, 12345.5,
    3.4e38])
def test_gradients_finite_with_missing_cells(placeholder):
  theta, values, observed = _data(4, placeholders=(placeholder,))
  grad = _GRAD_LL(theta, values, observed)
  for name, g in grad.items():
    assert np.all(np.isfinite(np.asarray(g))), name
  ref = _GRAD_LL(theta, jnp.where(observed, values, 0.0), observed)
  chex.assert_trees_all_close(grad, ref, rtol=1e-5, atol=1e-5)


def test_far_outlier_gives_minus_inf_not_nan():
  """An observed value far outside every component gives -inf, not NaN."""
  theta, values, observed = _data(5, missing_rate=0.0)
  values = values.at[1, 4].set(1e30)
  ll = np.asarray(LLB(theta, values, observed))
  assert np.isfinite(ll[0]) and ll[1] == -np.inf


# ------------------------------------------------------------------ prior
def test_log_prior_matches_scipy_by_hand():
  features = (Feature("x", "normal"), Feature("n", "poisson"),
              Feature("c", "categorical", 3, missing=True), Feature("b", "bernoulli"))
  model = make_mixture_model(features, 2, group_clip=False)
  rng = np.random.default_rng(0)
  theta = {"mix": jnp.float32([0.7]),
           "normal_loc": jnp.float32(rng.normal(0, 5, (2, 1))),
           "normal_log_scale": jnp.float32(rng.normal(0, 1, (2, 1))),
           "poisson_log_rate": jnp.float32(rng.normal(0, 1, (2, 1))),
           "cat_logits": jnp.float32(rng.normal(0, 2, (2, 3))),
           "missing_logit": jnp.float32(rng.normal(0, 2, (2, 1)))}
  th = _as64(theta)
  pi = _alr_probs(th["mix"])
  want = stats.dirichlet.logpdf(pi, np.ones(2)) + np.sum(np.log(pi))
  for k in range(2):
    loc, u = th["normal_loc"][k, 0], th["normal_log_scale"][k, 0]
    want += stats.norm.logpdf(loc, 0, 10) + stats.lognorm(s=2).logpdf(np.exp(u)) + u
    eta = th["poisson_log_rate"][k, 0]
    want += stats.expon.logpdf(np.exp(eta)) + eta
    p = _alr_probs(th["cat_logits"][k, :2])
    want += stats.dirichlet.logpdf(p, np.ones(3)) + np.sum(np.log(p))
    pb = _alr_probs(th["cat_logits"][k, 2:])
    want += stats.beta(1, 1).logpdf(pb[1]) + np.log(pb[0]) + np.log(pb[1])
    z = th["missing_logit"][k, 0]
    q = special.expit(z)
    want += stats.beta(2, 2).logpdf(q) + np.log(q) + np.log1p(-q)
  for fn in (model.log_prior, jax.jit(model.log_prior)):
    np.testing.assert_allclose(float(fn(theta)), want, rtol=1e-5, atol=1e-4)


def test_param_shapes_of_init():
  theta = _INIT(jax.random.key(0))
  shapes = {k: v.shape for k, v in theta.items()}
  assert shapes == {"mix": (K - 1,), "normal_loc": (K, 2), "normal_log_scale": (K, 2),
                    "poisson_log_rate": (K, 2), "cat_logits": (K, 2 + 1 + 3),
                    "missing_logit": (K, 3)}


# ------------------------------------------------------------------ exact clipping
def _fast(theta, w, values, observed, mask, clip):
  return MODEL.clipped_grad_sum(theta, w, values, observed, mask, clip, return_norms=True)


def _ref(theta, w, values, observed, mask, clip):
  return dp.vmap_clipped_grad_sum(MODEL.log_likelihood, theta, w, values, observed, mask,
                                  clip, return_norms=True)


FAST, REF = jax.jit(_fast), jax.jit(_ref)
MARGIN = 1.0 - 2.0**-16


def _weights(theta, seed):
  rng = np.random.default_rng(seed)
  return {k: jnp.float32(rng.uniform(0.5, 3.0, v.shape)) for k, v in theta.items()}


def _wnorm(tree, w):
  return float(np.sqrt(sum(np.sum(np.asarray(w[k], np.float64)
                                  * np.asarray(tree[k], np.float64) ** 2) for k in tree)))


@pytest.mark.parametrize("clip", [0.1, 1.0, 1e9])
@pytest.mark.parametrize("seed", [0, 1])
def test_clipped_grad_sum_matches_vmap_reference(clip, seed):
  theta, values, observed = _data(10 + seed)
  w = _weights(theta, seed)
  mask = jnp.asarray(np.random.default_rng(seed).random(N_DATA) < 0.7)
  g, info, norms = FAST(theta, w, values, observed, mask, clip)
  g_ref, info_ref, norms_ref = REF(theta, w, values, observed, mask, clip)
  m = np.asarray(mask)   # padding rows' norms are not defined (they are zeroed first)
  np.testing.assert_allclose(np.asarray(norms)[m], np.asarray(norms_ref)[m], rtol=1e-5, atol=1e-6)
  # Same clip as the fast path (which clips to clip * (1 - 2^-16)) -> tight;
  g_tight, _, _ = REF(theta, w, values, observed, mask, clip * MARGIN)
  scale = float(np.sum(np.minimum(np.asarray(norms_ref), clip) * np.asarray(mask)))
  for k in g:
    np.testing.assert_allclose(g[k], g_tight[k], rtol=2e-5, atol=2e-6 * scale, err_msg=k)
    np.testing.assert_allclose(g[k], g_ref[k], rtol=1e-4, atol=2e-6 * scale, err_msg=k)
  assert int(info.num_clipped) == int(info_ref.num_clipped)
  assert int(info.num_nonfinite) == int(info_ref.num_nonfinite) == 0
  np.testing.assert_allclose(info.log_lik_sum, info_ref.log_lik_sum, rtol=1e-5)
  if clip == 1e9:   # no clipping: the plain gradient of the masked log-likelihood sum
    plain = jax.jit(jax.grad(lambda th: jnp.sum(jnp.where(
        mask, MODEL.log_likelihood_batch(th, values, observed), 0.0))))(theta)
    chex.assert_trees_all_close(g, plain, rtol=1e-4, atol=1e-4)
    assert int(info.num_clipped) == 0
  if clip == 0.1:
    assert int(info.num_clipped) > 0


def test_padding_rows_contribute_exactly_zero():
  theta, values, observed = _data(20)
  w = _weights(theta, 20)
  mask = jnp.asarray(np.arange(N_DATA) < 11)
  base = FAST(theta, w, values, observed, mask, 1.0)
  rng = np.random.default_rng(0)
  for fill in (1e30, -3.0, 7.0, 123456.0):
    v2 = np.array(values)
    v2[11:] = fill * rng.uniform(0.5, 2.0, size=v2[11:].shape)
    o2 = np.array(observed)
    o2[11:] = rng.random(o2[11:].shape) < 0.5
    out = FAST(theta, w, jnp.asarray(v2, jnp.float32), jnp.asarray(o2), mask, 1.0)
    for k in base[0]:
      np.testing.assert_array_equal(out[0][k], base[0][k], err_msg=k)
    for a, b in zip(base[1], out[1]):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_padding_rows_with_nonfinite_values_contribute_zero(bad):
  theta, values, observed = _data(21, missing_rate=0.0)
  w = _weights(theta, 21)
  mask = jnp.asarray(np.arange(N_DATA) < 16)
  base = FAST(theta, w, values, observed, mask, 1.0)
  out = FAST(theta, w, values.at[16:].set(bad), observed, mask, 1.0)
  for k in base[0]:
    np.testing.assert_array_equal(out[0][k], base[0][k], err_msg=k)


@pytest.mark.parametrize("clip", [0.1, 1.0])
def test_each_clipped_contribution_within_clip(clip):
  theta, values, observed = _data(30)
  theta = dict(theta, normal_log_scale=theta["normal_log_scale"] - 1.5)  # big gradients
  w = _weights(theta, 30)
  _, _, norms = FAST(theta, w, values, observed, jnp.ones(N_DATA, bool), clip)
  assert np.sum(np.asarray(norms) > clip) >= N_DATA // 2   # most rows are really clipped
  for i in range(N_DATA):
    one = jnp.asarray(np.arange(N_DATA) == i)
    g, info, _ = FAST(theta, w, values, observed, one, clip)
    n_i = _wnorm(g, w)
    assert n_i <= clip, (i, n_i)
    np.testing.assert_allclose(n_i, min(float(norms[i]), clip), rtol=1e-4)
    assert int(info.num_clipped) == int(float(norms[i]) > clip * MARGIN)


def test_nonfinite_row_contributes_zero_and_is_counted():
  theta, values, observed = _data(40)
  w = _weights(theta, 40)
  mask = jnp.ones(N_DATA, bool)
  bad = values.at[3, 4].set(1e30)          # an observed normal cell: ell = -inf
  g, info, norms = FAST(theta, w, bad, observed, mask, 1.0)
  assert int(info.num_nonfinite) == 1
  assert not np.isfinite(float(LLB(theta, bad, observed)[3]))
  for k in g:
    assert np.all(np.isfinite(np.asarray(g[k]))), k
  g_drop, info_drop, _ = FAST(theta, w, values, observed, mask.at[3].set(False), 1.0)
  chex.assert_trees_all_close(g, g_drop, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(info.log_lik_sum, info_drop.log_lik_sum, rtol=1e-6)
  g_ref, info_ref, _ = REF(theta, w, bad, observed, mask, 1.0)
  assert int(info_ref.num_nonfinite) == 1
  chex.assert_trees_all_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_overflowing_component_with_zero_responsibility_is_kept():
  features = (Feature("a", "normal"), Feature("b", "bernoulli"))
  model = make_mixture_model(features, 2, group_clip=False)
  theta = {"mix": jnp.zeros(1), "normal_loc": jnp.zeros((2, 1)),
           "normal_log_scale": jnp.array([[0.0], [50.0]]), "cat_logits": jnp.zeros((2, 1))}
  w = jax.tree.map(jnp.ones_like, theta)
  values = jnp.array([[1e20, 0.0], [0.5, 1.0]])
  observed, mask = jnp.ones((2, 2), bool), jnp.ones(2, bool)
  assert np.all(np.isfinite(np.asarray(jax.jit(model.log_likelihood_batch)(
      theta, values, observed))))
  _, info_ref, n_ref = jax.jit(lambda *a: dp.vmap_clipped_grad_sum(
      model.log_likelihood, *a, return_norms=True))(theta, w, values, observed, mask, 1.0)
  assert int(info_ref.num_nonfinite) == 0 and np.all(np.isfinite(np.asarray(n_ref)))
  _, info, norms = jax.jit(lambda *a: model.clipped_grad_sum(*a, return_norms=True))(
      theta, w, values, observed, mask, 1.0)
  assert int(info.num_nonfinite) == 0
  np.testing.assert_allclose(norms, n_ref, rtol=1e-5)


@pytest.mark.slow
def test_clipped_grad_sum_one_component_and_single_family():
  """Edge layouts: K = 1 (no free weight logits) and a single family."""
  for features, k in (((Feature("x", "normal"),), 1),
                      ((Feature("c", "categorical", 5, missing=True),), 4),
                      ((Feature("p", "poisson", missing=True),), 2)):
    model = make_mixture_model(features, k, group_clip=False)
    theta = jax.jit(model.init)(jax.random.key(1))
    values, observed = jax.jit(model.sample, static_argnums=2)(jax.random.key(2), theta, 9)
    w = jax.tree.map(lambda t: jnp.full(t.shape, 1.5), theta)
    mask = jnp.asarray(np.arange(9) % 3 > 0)
    g, info, n = jax.jit(lambda *a: model.clipped_grad_sum(*a, return_norms=True))(
        theta, w, values, observed, mask, 0.5)
    g_ref, info_ref, n_ref = jax.jit(lambda *a: dp.vmap_clipped_grad_sum(
        model.log_likelihood, *a, return_norms=True))(theta, w, values, observed, mask,
                                                      0.5 * MARGIN)
    m = np.asarray(mask)   # padding rows' norms are not defined
    np.testing.assert_allclose(np.asarray(n)[m], np.asarray(n_ref)[m], rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(g, g_ref, rtol=2e-5, atol=1e-5)
    assert int(info.num_clipped) == int(info_ref.num_clipped)


# ------------------------------------------------------------------ sampling
SMALL = (Feature("n1", "normal", missing=True), Feature("p1", "poisson"),
         Feature("c1", "categorical", 3, missing=True), Feature("b1", "bernoulli"))
SMALL_MODEL = make_mixture_model(SMALL, 2)
PI = np.array([0.3, 0.7])
MU, SD = np.array([-2.0, 3.0]), np.array([0.5, 2.0])
LAM = np.array([1.5, 6.0])
P_C1 = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
P_B1 = np.array([[0.9, 0.1], [0.25, 0.75]])
Q = np.array([[0.1, 0.3], [0.4, 0.05]])          # P(missing) for (n1, c1) per component


def _hand_theta():
  alr = lambda p: np.log(p[..., :-1] / p[..., -1:])
  return {"mix": jnp.float32(alr(PI)),
          "normal_loc": jnp.float32(MU[:, None]),
          "normal_log_scale": jnp.float32(np.log(SD)[:, None]),
          "poisson_log_rate": jnp.float32(np.log(LAM)[:, None]),
          "cat_logits": jnp.float32(np.concatenate([alr(P_C1), alr(P_B1)], 1)),
          "missing_logit": jnp.float32(special.logit(Q))}


def _close(samples, want, label, sigmas=5.0):
  samples = np.asarray(samples, np.float64)
  se = samples.std() / np.sqrt(len(samples)) + 1e-12
  assert abs(samples.mean() - want) < sigmas * se, (label, samples.mean(), want, se)


def _check_known_mixture(values, observed, extra_normal_var=0.0):
  v, o = np.asarray(values, np.float64), np.asarray(observed)
  n1, p1, c1, b1 = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
  # Missingness: per column and jointly (shared z, independent given z).
  _close(~o[:, 0], PI @ Q[:, 0], "missing n1")
  _close(~o[:, 2], PI @ Q[:, 1], "missing c1")
  _close(~o[:, 0] & ~o[:, 2], PI @ (Q[:, 0] * Q[:, 1]), "missing both")
  assert np.all(o[:, 1]) and np.all(o[:, 3])
  assert np.all(v[~o] == 0.0)
  # Normal, among observed rows: weights pi_k (1 - q_k).
  wn = PI * (1 - Q[:, 0]) / (PI @ (1 - Q[:, 0]))
  x = n1[o[:, 0]]
  mean = wn @ MU
  var = wn @ (SD**2 + extra_normal_var + MU**2) - mean**2
  _close(x, mean, "normal mean")
  _close((x - mean) ** 2, var, "normal var")
  # Poisson: mean and variance of a Poisson mixture.
  _close(p1, PI @ LAM, "poisson mean")
  _close((p1 - PI @ LAM) ** 2, PI @ (LAM + LAM**2) - (PI @ LAM) ** 2, "poisson var")
  assert np.all(p1 == np.round(p1)) and np.all(p1 >= 0)
  # Categorical among observed; Bernoulli.
  wc = PI * (1 - Q[:, 1]) / (PI @ (1 - Q[:, 1]))
  for c in range(3):
    _close(c1[o[:, 2]] == c, wc @ P_C1[:, c], f"c1={c}")
  _close(b1 == 1, PI @ P_B1[:, 1], "b1")
  # A cross moment: the same component drives all columns of a row.
  _close(p1 * (b1 == 1), PI @ (LAM * P_B1[:, 1]), "poisson x b1")
  _close(n1 * (b1 == 1) * o[:, 0], PI @ ((1 - Q[:, 0]) * MU * P_B1[:, 1]), "normal x b1")


SAMPLE = jax.jit(SMALL_MODEL.sample, static_argnums=2)
PREDICTIVE = jax.jit(SMALL_MODEL.sample_predictive, static_argnums=2)
N_BIG = 200_000


def test_sample_matches_known_mixture_and_is_deterministic_in_key():
  theta = _hand_theta()
  values, observed = SAMPLE(jax.random.key(0), theta, N_BIG)
  assert values.shape == (N_BIG, 4) and values.dtype == jnp.float32
  assert observed.shape == (N_BIG, 4) and observed.dtype == jnp.bool_
  _check_known_mixture(values, observed)
  again = SAMPLE(jax.random.key(0), theta, N_BIG)
  np.testing.assert_array_equal(values, again[0])
  np.testing.assert_array_equal(observed, again[1])
  other = SAMPLE(jax.random.key(1), theta, N_BIG)
  assert np.mean(np.asarray(other[0]) != np.asarray(values)) > 0.5


def _posterior(raw_scale, overrides=None):
  theta = _hand_theta()
  raw = {k: jnp.full(v.shape, raw_scale, jnp.float32) for k, v in theta.items()}
  raw.update(overrides or {})
  return post.MeanFieldParams(theta, raw)


def test_sample_predictive_with_tiny_scale_is_the_model_at_loc():
  values, observed = PREDICTIVE(jax.random.key(3), _posterior(-30.0), N_BIG)
  _check_known_mixture(values, observed)


def test_sample_predictive_scale_adds_parameter_variance():
  """q(normal_loc) with scale 1: the normal column's variance grows by exactly 1."""
  wide = {"normal_loc": jnp.full((2, 1), post.raw_scale_for(1.0), jnp.float32)}
  values, observed = PREDICTIVE(jax.random.key(4), _posterior(-30.0, wide), N_BIG)
  _check_known_mixture(values, observed, extra_normal_var=1.0)


@pytest.mark.slow
def test_fast_predictive_equals_generic_predictive_in_distribution():
  """Gathering only component z's parameters equals a full theta draw per row."""
  params = _posterior(post.raw_scale_for(0.4))
  generic = SMALL_MODEL._replace(sample_predictive=None)
  n = 100_000
  fast = PREDICTIVE(jax.random.key(5), params, n)
  slow = jax.jit(sampling.predictive_fn(generic), static_argnums=2)(jax.random.key(6),
                                                                   params, n)
  stats_of = lambda v, o: [np.asarray(v[:, j], np.float64) for j in range(4)] + [
      np.asarray(o[:, 0], np.float64), np.asarray(v[:, 0] ** 2, np.float64),
      np.asarray(v[:, 1] ** 2, np.float64), np.asarray(v[:, 1] * v[:, 3], np.float64)]
  for a, b in zip(stats_of(*fast), stats_of(*slow)):
    se = np.sqrt(a.var() / n + b.var() / n)
    assert abs(a.mean() - b.mean()) < 5 * se, (a.mean(), b.mean(), se)


@pytest.mark.parametrize("num_rows,chunk", [(10, 4), (7, 4), (4, 100), (0, 4)])
def test_sample_synthetic_shapes(num_rows, chunk):
  params = _posterior(post.raw_scale_for(0.1))
  v, o = sampling.sample_synthetic(jax.random.key(7), SMALL_MODEL, params, num_rows,
                                   chunk_size=chunk)
  assert isinstance(v, np.ndarray) and isinstance(o, np.ndarray)
  assert v.shape == (num_rows, 4) and o.shape == (num_rows, 4)
  assert v.dtype == np.float32 and o.dtype == np.bool_
  assert np.all(np.isfinite(v))


def test_sample_synthetic_determinism_and_chunks():
  params = _posterior(post.raw_scale_for(0.1))
  run = lambda key: sampling.sample_synthetic(key, SMALL_MODEL, params, 10, chunk_size=4)
  a, b, c = run(jax.random.key(8)), run(jax.random.key(8)), run(jax.random.key(9))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.array_equal(a[0], c[0])
  # Chunks use different keys: no chunk repeats another.
  assert not np.array_equal(a[0][:4], a[0][4:8])
  with pytest.raises(ValueError):
    sampling.sample_synthetic(jax.random.key(0), SMALL_MODEL, params, -1)


def test_sample_synthetic_records_per_draw_share_theta():
  """m rows per parameter draw: consecutive rows share theta, draws differ."""
  theta = _hand_theta()
  # One component (pi_0 ~ 1), nothing missing, and a very wide q(normal_loc).
  loc = dict(theta, mix=jnp.full((1,), 30.0), missing_logit=jnp.full((2, 2), -30.0))
  raw = {k: jnp.full(v.shape, -30.0, jnp.float32) for k, v in theta.items()}
  raw["normal_loc"] = jnp.full((2, 1), post.raw_scale_for(1000.0), jnp.float32)
  params = post.MeanFieldParams(loc, raw)
  v, o = sampling.sample_synthetic(jax.random.key(12), SMALL_MODEL, params, 10,
                                   chunk_size=8, records_per_draw=4)
  assert v.shape == (10, 4) and o.shape == (10, 4) and np.all(o)
  groups = [v[0:4, 0], v[4:8, 0], v[8:10, 0]]            # 3 draws, the last one trimmed
  for g in groups:                                       # within a draw: sd 0.5
    assert np.ptp(g) < 5.0, groups
  means = [g.mean() for g in groups]                     # across draws: sd 1000
  assert min(abs(means[0] - means[1]), abs(means[1] - means[2])) > 5.0, means
  with pytest.raises(ValueError):
    sampling.sample_synthetic(jax.random.key(0), SMALL_MODEL, params, 3, records_per_draw=0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.slow
def test_closed_form_prior_gradient_matches_autodiff(seed):
  features = (Feature("a", "normal", missing=True), Feature("b", "categorical", 4, missing=True),
              Feature("c", "poisson"), Feature("d", "bernoulli"), Feature("e", "categorical", 3))
  model = make_mixture_model(features, 5)
  theta = model.init(jax.random.key(seed))
  theta = jax.tree.map(lambda x: 1.5 * x, theta)
  chex.assert_trees_all_close(model.grad_log_prior(theta), jax.grad(model.log_prior)(theta),
                              rtol=1e-5, atol=1e-5)
