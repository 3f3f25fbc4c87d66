"""Mean-field Gaussian posterior against scipy and autodiff oracles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jtwin.models import posterior as post


def _params(seed=0):
  rng = np.random.default_rng(seed)
  loc = {"a": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
         "b": jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)}
  raw = {"a": jnp.asarray([-3.0, 0.0, 2.0], jnp.float32),
         "b": jnp.asarray(rng.uniform(-6, 4, size=(2, 4)), jnp.float32)}
  return post.MeanFieldParams(loc, raw)


def _scale64(raw):
  return np.logaddexp(0.0, np.asarray(raw, np.float64))  # softplus


@pytest.mark.parametrize("jit", [False, True])
def test_entropy_matches_scipy(jit):
  params = _params()
  fn = jax.jit(post.entropy) if jit else post.entropy
  got = float(fn(params))
  want = sum(np.sum(stats.norm(scale=_scale64(r)).entropy())
             for r in jax.tree.leaves(params.raw_scale))
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_log_q_matches_scipy(jit):
  params = _params(1)
  theta = post.sample(jax.random.key(0), params)
  theta = jax.tree.map(lambda t: t + 0.3, theta)  # off the draw, any point works
  fn = jax.jit(post.log_q) if jit else post.log_q
  got = float(fn(params, theta))
  want = sum(np.sum(stats.norm.logpdf(np.asarray(t, np.float64), np.asarray(m, np.float64),
                                      _scale64(r)))
             for t, m, r in zip(jax.tree.leaves(theta), jax.tree.leaves(params.loc),
                                jax.tree.leaves(params.raw_scale)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_sample_mean_and_std():
  params = _params(2)
  draws = jax.vmap(lambda k: post.sample(k, params))(jax.random.split(jax.random.key(1), 20_000))
  for d, m, r in zip(jax.tree.leaves(draws), jax.tree.leaves(params.loc),
                     jax.tree.leaves(params.raw_scale)):
    d = np.asarray(d, np.float64)
    s = _scale64(r)
    n = d.shape[0]
    assert np.all(np.abs(d.mean(0) - np.asarray(m)) < 5 * s / np.sqrt(n))
    assert np.all(np.abs(d.std(0) / s - 1) < 5 * np.sqrt(0.5 / n))


def test_sample_is_transform_of_noise_and_deterministic():
  params = _params(3)
  key = jax.random.key(4)
  a, b = post.sample(key, params), post.sample(key, params)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  eps = post.sample_noise(key, params)
  jax.tree.map(np.testing.assert_array_equal, a, post.transform(params, eps))
  c = post.sample(jax.random.key(5), params)
  assert not np.array_equal(np.asarray(a["b"]), np.asarray(c["b"]))


@pytest.mark.parametrize("radius", [0.5, 2.0])
def test_init_uniform_within_radius_and_scale(radius):
  template = {"x": jnp.zeros((400,)), "y": jnp.zeros((20, 30))}
  params = post.init(jax.random.key(0), template, init_radius=radius)
  for leaf in jax.tree.leaves(params.loc):
    v = np.asarray(leaf)
    assert np.all(np.abs(v) <= radius)
    assert np.max(v) > 0.9 * radius and np.min(v) < -0.9 * radius   # spans the interval
    assert abs(v.mean()) < 5 * radius / np.sqrt(3 * v.size)
  for leaf in jax.tree.leaves(params.raw_scale):
    np.testing.assert_allclose(post.scale_of(leaf), 0.1, rtol=1e-5)
  assert jax.tree.structure(params.loc) == jax.tree.structure(template)
  jax.tree.map(lambda a, b: a.shape == b.shape or pytest.fail("shape"), params.loc, template)


def test_init_other_methods_and_scale():
  template = {"x": jnp.full((3,), 7.0), "y": jnp.full((2, 2), -1.5)}
  z = post.init(jax.random.key(0), template, method="zeros", init_scale=0.5)
  jax.tree.map(lambda l: np.testing.assert_array_equal(l, 0.0), z.loc)
  jax.tree.map(lambda r: np.testing.assert_allclose(post.scale_of(r), 0.5, rtol=1e-5),
               z.raw_scale)
  d = post.init(jax.random.key(0), template, method="prior_draw")
  jax.tree.map(np.testing.assert_array_equal, d.loc, template)


@pytest.mark.parametrize("kwargs", [{"method": "normal"}, {"method": ""},
                                    {"init_scale": 0.0}, {"init_scale": -1.0}])
def test_init_invalid_arguments_raise(kwargs):
  with pytest.raises(ValueError):
    post.init(jax.random.key(0), {"x": jnp.zeros(2)}, **kwargs)


@pytest.mark.parametrize("scale", [1e-3, 0.1, 1.0, 30.0])
def test_raw_scale_for_inverts_softplus(scale):
  np.testing.assert_allclose(float(post.scale_of(jnp.float32(post.raw_scale_for(scale)))),
                             scale, rtol=1e-5)
  np.testing.assert_allclose(np.logaddexp(0.0, post.raw_scale_for(scale)), scale, rtol=1e-12)


def test_reparam_weights_match_jacfwd_of_transform():
  params = _params(6)
  eps = post.sample_noise(jax.random.key(7), params)
  dscale, weights = post.reparam_weights(params, eps)
  # d theta_j / d raw_scale_j is diagonal: theta depends elementwise on raw_scale.
  for name in ("a", "b"):
    def f(raw_leaf):
      raw = dict(params.raw_scale, **{name: raw_leaf})
      return post.transform(post.MeanFieldParams(params.loc, raw), eps)[name]
    r = params.raw_scale[name]
    jac = np.asarray(jax.jacfwd(f)(r)).reshape(r.size, r.size)
    np.testing.assert_allclose(np.diag(jac), np.asarray(dscale[name]).ravel(), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(jac - np.diag(np.diag(jac)), 0.0, atol=0)
    np.testing.assert_allclose(np.asarray(dscale[name]),
                               np.asarray(eps[name]) * special.expit(np.asarray(r)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(weights[name], 1.0 + np.asarray(dscale[name]) ** 2, rtol=1e-6)
    # d theta / d loc = identity.
    jl = jax.jacfwd(lambda m: post.transform(
        post.MeanFieldParams(dict(params.loc, **{name: m}), params.raw_scale), eps)[name])(
            params.loc[name])
    np.testing.assert_array_equal(np.asarray(jl).reshape(r.size, r.size), np.eye(r.size))


def test_reparam_weights_give_the_norm_of_the_variational_gradient():
  """sum_j w_j g_j^2 = |dF/dloc|^2 + |dF/draw|^2 for F(theta) = g . theta."""
  params = _params(8)
  eps = post.sample_noise(jax.random.key(9), params)
  g = jax.tree.map(lambda m: jnp.linspace(-2.0, 3.0, m.size).reshape(m.shape), params.loc)
  _, weights = post.reparam_weights(params, eps)
  def objective(p):
    th = post.transform(p, eps)
    return sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(th)))
  grad = jax.grad(objective)(params)
  want = sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(grad))
  got = sum(float(jnp.sum(w * x * x)) for w, x in zip(jax.tree.leaves(weights),
                                                      jax.tree.leaves(g)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
