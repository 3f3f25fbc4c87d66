"""Centred (residual) marginal tables: the projection, its sensitivity, the fit's R."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jtwin.marginals import fit as mfit
from jtwin.marginals import mixture_marginals as mm
from jtwin.marginals import residual as rs
from jtwin.marginals.measure import Measurement
from test_mixture_marginals import _cells   # 3 columns: 3 cats + missing, 2 cats, 4 numeric + missing

CASES = [((3,), (0,)), ((2, 5), (0, 1)), ((4, 3), (1,)), ((2, 3, 4), (0, 1, 2)),
         ((3, 2, 2), (2,)), ((5, 1, 3), (0, 2)), ((2, 2), ())]


def _matrix(shape, axes):
  """R = kron over axes of (I - J/a) (identity on the other axes), explicitly."""
  out = np.ones((1, 1))
  for i, a in enumerate(shape):
    f = np.eye(a) - np.full((a, a), 1.0 / a) if i in axes else np.eye(a)
    out = np.kron(out, f)
  return out


@pytest.mark.parametrize("shape,axes", CASES)
def test_centre_is_the_kronecker_projection(shape, axes):
  rng = np.random.default_rng(0)
  t = rng.normal(size=(2, int(np.prod(shape))))
  r = _matrix(shape, axes)
  np.testing.assert_allclose(rs.centre(t, shape, axes), t @ r.T, atol=1e-12)
  np.testing.assert_allclose(r @ r, r, atol=1e-12)          # a projection
  np.testing.assert_allclose(r, r.T, atol=1e-12)            # orthogonal


@pytest.mark.parametrize("shape,axes", CASES)
def test_sensitivity_is_the_largest_column_norm(shape, axes):
  # one added or removed row moves the table by a one-hot vector e, R T by R e
  r = _matrix(shape, axes)
  worst = np.linalg.norm(r, axis=0).max()
  assert rs.sensitivity(shape, axes) == pytest.approx(worst, rel=1e-12)
  expected = math.sqrt(np.prod([1 - 1 / shape[a] for a in axes])) if axes else 1.0
  assert rs.sensitivity(shape, axes) == pytest.approx(expected, rel=1e-12)


def test_centred_release_needs_less_noise_for_the_same_rho():
  # a binary column halves the squared sensitivity: same rho with sigma / sqrt(2)
  s = rs.sensitivity((7, 2), (0, 1))
  assert s**2 == pytest.approx((6 / 7) * 0.5)
  sigma = 10.0
  assert s**2 / (2 * (s * sigma)**2) == pytest.approx(1 / (2 * sigma**2))


def _theta(index, seed):
  rng = np.random.default_rng(seed)
  k = index.layout.num_components
  return {"mix": jnp.asarray(rng.normal(size=k - 1), jnp.float32),
          "cat_logits": jnp.asarray(rng.normal(size=(k, len(index.layout.flat_free))),
                                    jnp.float32),
          "missing_logit": jnp.asarray(rng.normal(size=(k, 2)), jnp.float32)}


SPECS = {
    # every lower-order margin is a measured cell or a 1-way cell
    "measured margins": [((0,), ()), ((0, 1), (0, 1)), ((0, 1, 2), (0, 1, 2)), ((1, 2), ()),
                         ((0, 1, 2), (1,)), ((0, 2), (1,))],
    # the triple's (1, 2) and (0, 2) margins are not measured: gathered on their own
    "unmeasured margins": [((2,), ()), ((0, 1, 2), (0, 1, 2)), ((0, 1), ())],
}


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("case", sorted(SPECS))
def test_fit_loss_of_centred_tables_is_their_gaussian_likelihood(case, use_jit):
  # plain and centred tables mixed: the fit's loss changes between two thetas exactly
  # as sum_m w_m / 2 ||R_m x_m - z_m||^2 does (x: n times the model's table)
  index = mm.make_index(_cells(), num_components=3, cond_cols=[1])
  specs = SPECS[case]
  rng = np.random.default_rng(3)
  n = 500.0
  ms = []
  for clique, axes in specs:
    shape = tuple(int(index.sizes[v]) for v in clique)
    z = rng.normal(size=int(np.prod(shape))) * 20 + n / np.prod(shape)
    var = np.full(len(z), rng.uniform(4.0, 30.0))
    ms.append(Measurement(clique, rs.centre(z, shape, axes) if axes else z, var, axes, shape))
  targets = mfit.make_targets(index, ms, n)
  assert (targets.far_positions is None) == (case == "measured margins")
  joint = lambda th: mfit._neg_log_joint(index, 0.0, th, targets)
  joint = jax.jit(joint) if use_jit else joint

  def reference(theta):
    vector = np.asarray(mm.marginal_vector(index, theta), np.float64)
    out = 0.0
    for m in ms:
      x = n * vector[mm.clique_positions(index, m.clique)]
      rx = rs.centre(x, m.shape, m.centred) if m.centred else x
      out += 0.5 * np.sum((rx - m.noisy)**2 / m.variance)
    return out

  t0, t1 = _theta(index, 0), _theta(index, 1)
  got = float(joint(t1)) - float(joint(t0))
  want = reference(t1) - reference(t0)
  assert got == pytest.approx(want, rel=2e-3, abs=0.05)
  assert abs(want) > 1.0      # the two thetas' losses differ: the test can fail


def test_centred_loss_is_the_gaussian_likelihood_within_the_range():
  # ||R x - z||^2 == (x - z)' R (x - z) when z = R(...): the fit's loss is the exact
  # log-likelihood of the released R (T + noise), up to a constant
  rng = np.random.default_rng(2)
  shape, axes = (3, 4), (0, 1)
  r = _matrix(shape, axes)
  z = r @ rng.normal(size=12)
  x = rng.normal(size=12)
  assert np.sum((r @ x - z)**2) == pytest.approx((x - z) @ r @ (x - z), rel=1e-10)


@pytest.mark.parametrize("shape,axes", CASES)
def test_lower_order_terms_give_the_removed_energy(shape, axes):
  # x'(I - R)x = sum_S c_S ||sum of x over S||^2, plus the squared grand total when
  # the centred axes cover the whole table (a constant for a fixed n, left out)
  rng = np.random.default_rng(4)
  x = rng.normal(size=int(np.prod(shape))) + 3.0
  r = _matrix(shape, axes)
  want = x @ (np.eye(len(x)) - r) @ x
  t = x.reshape(shape)
  got = 0.0
  for c, kept in rs.lower_order_terms(shape, axes):
    summed = tuple(a for a in range(len(shape)) if a not in kept)
    got += c * np.sum(t.sum(axis=summed)**2)
  if axes and len(set(axes)) == len(shape):
    got += (-1.0) ** (len(shape) + 1) * x.sum()**2 / np.prod(shape)
  assert got == pytest.approx(want, rel=1e-10, abs=1e-10)
