"""Bijections and their log-Jacobians against autodiff and distrax."""
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from jtwin.models import constraints as con


def _autodiff_scalar_log_det(f, u):
  """log |f'(u)| elementwise via jax.grad of the forward map."""
  return jnp.log(jnp.abs(jax.vmap(jax.grad(lambda t: f(t)[0]))(u)))


@pytest.mark.parametrize("jit", [False, True])
def test_positive_log_det_matches_autodiff(jit):
  u = jnp.linspace(-30.0, 30.0, 61)
  fn = jax.jit(con.positive_from_unconstrained) if jit else con.positive_from_unconstrained
  x, log_det = fn(u)
  np.testing.assert_allclose(x, np.exp(np.asarray(u, np.float64)), rtol=1e-6)
  np.testing.assert_allclose(log_det, _autodiff_scalar_log_det(con.positive_from_unconstrained, u),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_unit_log_det_matches_autodiff_and_distrax(jit):
  u = jnp.concatenate([jnp.linspace(-60.0, 60.0, 49), jnp.array([0.0, 1e-3, -1e-3])])
  fn = jax.jit(con.unit_from_unconstrained) if jit else con.unit_from_unconstrained
  p, log_det = fn(u)
  np.testing.assert_allclose(p, special.expit(np.asarray(u, np.float64)), rtol=1e-5, atol=1e-30)
  bij = distrax.Sigmoid()
  np.testing.assert_allclose(log_det, bij.forward_log_det_jacobian(u), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(p, bij.forward(u), rtol=1e-4, atol=1e-30)
  np.testing.assert_allclose(log_det, _autodiff_scalar_log_det(con.unit_from_unconstrained, u),
                             rtol=1e-5, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(log_det)))


def test_unit_stays_finite_at_extreme_logits():
  p, log_det = con.unit_from_unconstrained(jnp.array([-200.0, 200.0]))
  assert np.all(np.isfinite(np.asarray(log_det)))
  np.testing.assert_allclose(log_det, [-200.0, -200.0], rtol=1e-6)
  assert float(p[0]) == 0.0 or float(p[0]) < 1e-30
  assert float(p[1]) == 1.0


@pytest.mark.parametrize("num_categories", [2, 3, 6])
@pytest.mark.parametrize("scale", [1.0, 4.0])
@pytest.mark.parametrize("jit", [False, True])
def test_simplex_log_det_matches_jacfwd(num_categories, scale, jit):
  """The ALR map R^{K-1} -> first K-1 coordinates of pi has log|det J| = sum log pi."""
  rng = np.random.default_rng(num_categories)
  fn = jax.jit(con.simplex_from_unconstrained) if jit else con.simplex_from_unconstrained
  a = jnp.asarray(rng.normal(0, scale, size=(2, num_categories - 1)), jnp.float32)
  pi, log_det = fn(a)
  np.testing.assert_allclose(np.sum(pi, -1), 1.0, rtol=1e-6)
  assert np.all(np.asarray(pi) > 0)
  for i in range(2):
    # Analytic float64 oracle: d pi_{<K} / da = diag(p) - p p^T with p = pi_{<K}.
    p = special.softmax(np.append(np.asarray(a[i], np.float64), 0.0))[:-1]
    _, want = np.linalg.slogdet(np.diag(p) - np.outer(p, p))
    np.testing.assert_allclose(float(log_det[i]), want, rtol=1e-5, atol=1e-4)
    # ... and the autodiff log|det| of the jtwin forward map itself.
    jac = jax.jacfwd(lambda t: con.simplex_from_unconstrained(t)[0][:-1])(a[i])
    np.testing.assert_allclose(float(log_det[i]), np.linalg.slogdet(np.asarray(jac, float))[1],
                               rtol=1e-4, atol=1e-3)


def test_simplex_batched_shapes_and_single_category():
  a = jnp.zeros((4, 5, 2))
  pi, log_det = con.simplex_from_unconstrained(a)
  assert pi.shape == (4, 5, 3) and log_det.shape == (4, 5)
  np.testing.assert_allclose(pi, 1.0 / 3.0, rtol=1e-6)
  np.testing.assert_allclose(log_det, 3 * np.log(1.0 / 3.0), rtol=1e-6)
  # K = 1 (a one-component mixture): the map from R^0 is the constant [1].
  pi1, ld1 = con.simplex_from_unconstrained(jnp.zeros((0,)))
  np.testing.assert_array_equal(pi1, [1.0])
  assert float(ld1) == 0.0
  np.testing.assert_array_equal(con.simplex_log_probs(jnp.zeros((3, 0))), np.zeros((3, 1)))


@pytest.mark.parametrize("num_categories", [2, 3, 8])
def test_simplex_round_trip(num_categories):
  rng = np.random.default_rng(10 + num_categories)
  a = jnp.asarray(rng.normal(0, 3, size=(7, num_categories - 1)), jnp.float32)
  pi, _ = con.simplex_from_unconstrained(a)
  np.testing.assert_allclose(con.simplex_to_unconstrained(pi), a, rtol=1e-5, atol=1e-4)
  # The other direction: simplex -> R^{K-1} -> simplex.
  p = rng.dirichlet(np.ones(num_categories), size=7).astype(np.float32)
  back, _ = con.simplex_from_unconstrained(con.simplex_to_unconstrained(jnp.asarray(p)))
  np.testing.assert_allclose(back, p, rtol=1e-4, atol=1e-6)
  # simplex_log_probs is the log of the forward map.
  np.testing.assert_allclose(jnp.exp(con.simplex_log_probs(a)), pi, rtol=1e-6)
