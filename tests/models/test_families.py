"""Feature-family log-densities and priors against scipy.stats oracles.

Every density is evaluated in float32 by jtwin and in float64 by scipy at
random parameters, including extreme ones (tiny/huge scales and rates,
saturated logits). Priors are checked as densities of the UNCONSTRAINED
parameters: the scipy density of the constrained value plus log|det J| of
the constraining map.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jtwin.models import families as fam


def _rng(seed):
  return np.random.default_rng(seed)


def _softmax_ref(a):
  full = np.concatenate([a, np.zeros(a.shape[:-1] + (1,))], -1)
  return special.softmax(full, axis=-1)


# ---------------------------------------------------------------- Normal
@pytest.mark.parametrize("log_scale_range", [(-1.0, 1.0), (-6.0, -3.0), (3.0, 7.0)])
@pytest.mark.parametrize("jit", [False, True])
def test_normal_log_prob_matches_scipy(log_scale_range, jit):
  rng = _rng(0)
  loc = rng.uniform(-100, 100, size=(3, 5))
  log_scale = rng.uniform(*log_scale_range, size=(3, 5))
  scale = np.exp(log_scale)
  # Points near and far (up to ~30 sd) from the location.
  x = loc[None] + scale[None] * rng.normal(0, 10, size=(4, 3, 5))
  fn = jax.jit(fam.normal_log_prob) if jit else fam.normal_log_prob
  got = np.asarray(fn(jnp.float32(x), jnp.float32(loc), jnp.float32(log_scale)))
  x32 = np.float32(x).astype(np.float64)  # the oracle sees the same rounded inputs
  want = stats.norm.logpdf(x32, np.float32(loc).astype(np.float64),
                           np.exp(np.float32(log_scale).astype(np.float64)))
  assert got.shape == (4, 3, 5)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4)


def test_normal_log_prob_broadcasts_batch_against_components():
  rng = _rng(1)
  x = rng.normal(size=(6, 1, 2)).astype(np.float32)
  loc = rng.normal(size=(3, 2)).astype(np.float32)
  ls = rng.normal(size=(3, 2)).astype(np.float32)
  got = np.asarray(fam.normal_log_prob(x, loc, ls))
  assert got.shape == (6, 3, 2)
  np.testing.assert_allclose(got[4, 2], stats.norm.logpdf(x[4, 0], loc[2], np.exp(ls[2])),
                             rtol=1e-5)


@pytest.mark.parametrize("scale", [1.0, 1e-3, 30.0])
def test_normal_log_prior_matches_scipy(scale):
  rng = _rng(2)
  loc = rng.normal(0, 10 * scale, size=(4, 3))
  log_scale = rng.normal(0, 2 * scale, size=(4, 3))
  got = float(fam.normal_log_prior(jnp.float32(loc), jnp.float32(log_scale)))
  loc, log_scale = np.float32(loc).astype(float), np.float32(log_scale).astype(float)
  s = np.exp(log_scale)
  want = (np.sum(stats.norm.logpdf(loc, 0.0, 10.0))
          + np.sum(stats.lognorm(s=2.0).logpdf(s)) + np.sum(log_scale))  # + log|ds/du|
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_normal_sample_moments():
  key = jax.random.key(3)
  loc = jnp.array([-3.0, 0.0, 50.0])
  log_scale = jnp.log(jnp.array([0.5, 1.0, 4.0]))
  x = fam.normal_sample(key, jnp.broadcast_to(loc, (100_000, 3)),
                        jnp.broadcast_to(log_scale, (100_000, 3)))
  x = np.asarray(x, np.float64)
  sd = np.array([0.5, 1.0, 4.0])
  assert np.all(np.abs(x.mean(0) - np.asarray(loc)) < 5 * sd / np.sqrt(len(x)))
  assert np.all(np.abs(x.std(0) / sd - 1) < 5 * np.sqrt(0.5 / len(x)))


# ---------------------------------------------------------------- Poisson
@pytest.mark.parametrize("eta_range", [(-1.0, 2.0), (-12.0, -6.0), (5.0, 9.0)])
@pytest.mark.parametrize("jit", [False, True])
def test_poisson_log_prob_matches_scipy(eta_range, jit):
  rng = _rng(4)
  eta = np.float32(rng.uniform(*eta_range, size=(3, 4)))
  rate = np.exp(eta.astype(np.float64))
  x = np.concatenate([rng.poisson(np.broadcast_to(rate, (3, 3, 4))),
                      rng.integers(0, 20_000, size=(2, 3, 4))]).astype(np.float32)
  fn = jax.jit(fam.poisson_log_prob) if jit else fam.poisson_log_prob
  got = np.asarray(fn(jnp.asarray(x), jnp.asarray(eta)), np.float64)
  want = stats.poisson.logpmf(x.astype(np.float64), rate)
  # float32 rounding of the three terms x*eta, e^eta, lgamma(x+1) each.
  scale = np.abs(x * eta) + rate + special.gammaln(x.astype(np.float64) + 1)
  assert np.all(np.isfinite(got))
  assert np.all(np.abs(got - want) <= 1e-6 * scale + 2e-6), np.max(np.abs(got - want))


def test_poisson_log_prior_matches_scipy():
  rng = _rng(5)
  eta = np.float32(rng.uniform(-8, 3, size=(5, 2)))
  got = float(fam.poisson_log_prior(jnp.asarray(eta)))
  eta64 = eta.astype(np.float64)
  want = np.sum(stats.expon.logpdf(np.exp(eta64)) + eta64)  # Exp(1) + log|d e^eta/d eta|
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_poisson_sample_mean_and_dtype():
  eta = jnp.log(jnp.array([0.3, 4.0, 100.0]))
  x = fam.poisson_sample(jax.random.key(6), jnp.broadcast_to(eta, (20_000, 3)))
  assert x.dtype == jnp.float32
  x = np.asarray(x, np.float64)
  lam = np.array([0.3, 4.0, 100.0])
  assert np.all(x >= 0) and np.all(x == np.round(x))
  assert np.all(np.abs(x.mean(0) - lam) < 5 * np.sqrt(lam / len(x)))


# ---------------------------------------------------------------- Categorical / Bernoulli
@pytest.mark.parametrize("num_categories", [2, 3, 7])
@pytest.mark.parametrize("logit_scale", [1.0, 25.0])
@pytest.mark.parametrize("jit", [False, True])
def test_categorical_log_prob_matches_explicit_probs(num_categories, logit_scale, jit):
  rng = _rng(7)
  a = np.float32(rng.normal(0, logit_scale, size=(4, num_categories - 1)))
  x = rng.integers(0, num_categories, size=(4,))
  fn = jax.jit(fam.categorical_log_prob) if jit else fam.categorical_log_prob
  got = np.asarray(fn(jnp.float32(x), jnp.asarray(a)), np.float64)
  p = _softmax_ref(a.astype(np.float64))                      # [4, C]
  want = np.log(p[np.arange(4), x])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # scipy's multinomial with one trial is the categorical.
  onehot = np.eye(num_categories)[x]
  want_mn = [stats.multinomial(1, p[j]).logpmf(onehot[j]) for j in range(4)]
  np.testing.assert_allclose(got, want_mn, rtol=1e-5, atol=1e-5)
  # The explicit probabilities of categorical_log_probs sum to one.
  lp = np.asarray(fam.categorical_log_probs(jnp.asarray(a)), np.float64)
  np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(lp, np.log(p), rtol=1e-5, atol=1e-5)


def test_categorical_log_prob_broadcasts_batch_against_components():
  rng = _rng(70)
  a = np.float32(rng.normal(size=(3, 2)))                     # K=3 components, C=3
  x = rng.integers(0, 3, size=(5, 1))                         # B=5
  got = np.asarray(fam.categorical_log_prob(jnp.float32(x), jnp.asarray(a)))
  want = np.log(_softmax_ref(a.astype(np.float64)))[np.arange(3)[None, :], x]
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_bernoulli_is_two_category_categorical(jit):
  rng = _rng(8)
  a = np.float32(rng.normal(0, 8, size=(50, 1)))
  x = rng.integers(0, 2, size=(50,))
  fn = jax.jit(fam.categorical_log_prob) if jit else fam.categorical_log_prob
  got = np.asarray(fn(jnp.float32(x), jnp.asarray(a)), np.float64)
  p1 = special.expit(-a[:, 0].astype(np.float64))             # p = softmax([a, 0]) -> p_1
  np.testing.assert_allclose(got, stats.bernoulli.logpmf(x, p1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_categories", [2, 4])
def test_dirichlet_prior_with_alr_jacobian_matches_scipy(num_categories):
  rng = _rng(9)
  for scale in (1.0, 6.0):
    a = rng.normal(0, scale, size=(num_categories - 1,))
    p = _softmax_ref(a)
    log_p = np.log(p)
    got = float(fam.dirichlet_ones_log_prior(jnp.float32(log_p), num_categories))
    want = stats.dirichlet.logpdf(p, np.ones(num_categories)) + np.sum(log_p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    if num_categories == 2:  # Bernoulli: Beta(1, 1) on p_1, Jacobian p_0 p_1.
      want_b = stats.beta(1, 1).logpdf(p[1]) + np.log(p[0] * p[1])
      np.testing.assert_allclose(got, want_b, rtol=1e-5, atol=1e-4)


def test_dirichlet_prior_batched_with_per_row_counts():
  """Batched use passes one category count per row (the constant is per row)."""
  rng = _rng(10)
  a = rng.normal(size=(5, 2))
  p = _softmax_ref(a)
  got = float(fam.dirichlet_ones_log_prior(jnp.float32(np.log(p)), jnp.full((5,), 3)))
  want = sum(stats.dirichlet.logpdf(pk, np.ones(3)) + np.log(pk).sum() for pk in p)
  np.testing.assert_allclose(got, want, rtol=1e-5)


# ---------------------------------------------------------------- Missingness
@pytest.mark.parametrize("jit", [False, True])
def test_missing_log_prob_matches_bernoulli(jit):
  rng = _rng(11)
  zeta = np.float32(rng.uniform(-15, 15, size=(200,)))
  observed = rng.random(200) < 0.5
  fn = jax.jit(fam.missing_log_prob) if jit else fam.missing_log_prob
  got = np.asarray(fn(jnp.asarray(observed), jnp.asarray(zeta)), np.float64)
  q = special.expit(zeta.astype(np.float64))                  # P(missing)
  want = stats.bernoulli.logpmf((~observed).astype(int), q)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_missing_log_prob_is_stable_at_saturated_logits():
  zeta = jnp.array([-90.0, -40.0, 40.0, 90.0])
  for observed in (True, False):
    got = np.asarray(fam.missing_log_prob(jnp.full(4, observed), zeta), np.float64)
    z = np.asarray(zeta, np.float64)
    want = special.log_expit(-z) if observed else special.log_expit(z)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30)


def test_missing_log_prior_matches_scipy():
  rng = _rng(12)
  zeta = np.float32(rng.uniform(-12, 12, size=(3, 4)))
  got = float(fam.missing_log_prior(jnp.asarray(zeta)))
  z = zeta.astype(np.float64)
  q = special.expit(z)
  want = np.sum(stats.beta(2, 2).logpdf(q) + special.log_expit(z) + special.log_expit(-z))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
