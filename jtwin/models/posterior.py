"""Mean-field Gaussian variational posterior over an unconstrained pytree.

q(theta) = prod_j N(theta_j | loc_j, scale_j^2), scale = softplus(raw_scale),
as numpyro's AutoDiagonalNormal (twinify's guide). Draws are reparameterised:
theta = loc + scale * eps, eps ~ N(0, I).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any

INIT_METHODS = ("uniform", "zeros", "prior_draw")


class MeanFieldParams(NamedTuple):
  """Variational parameters: two pytrees shaped like theta."""
  loc: PyTree
  raw_scale: PyTree


def scale_of(raw_scale: Array) -> Array:
  """softplus, the positive map of the posterior scale."""
  return jax.nn.softplus(raw_scale)


def raw_scale_for(scale: float) -> float:
  """Inverse softplus of a positive float."""
  return float(scale + math.log(-math.expm1(-scale)))


def init(key: Array, template: PyTree, *, method: str = "uniform",
         init_radius: float = 2.0, init_scale: float = 0.1) -> MeanFieldParams:
  """Initial variational parameters.

  Args:
    key: PRNG key (data-independent initialisation).
    template: a pytree of arrays giving the parameter shapes; with
      method="prior_draw" its values are used as the locations (e.g.
      `model.init(key)`).
    method: "uniform" (twinify: loc ~ U(-init_radius, init_radius)),
      "zeros" or "prior_draw".
    init_radius: half-width of the uniform initialisation.
    init_scale: initial posterior standard deviation (twinify: 0.1).
  """
  if method not in INIT_METHODS:
    raise ValueError(f"init method must be one of {INIT_METHODS}, got {method!r}")
  if not init_scale > 0:
    raise ValueError(f"init_scale must be > 0, got {init_scale}")
  leaves, treedef = jax.tree.flatten(template)
  keys = jax.random.split(key, max(len(leaves), 1))
  if method == "uniform":
    locs = [jax.random.uniform(k, jnp.shape(x), jnp.float32, -init_radius, init_radius)
            for k, x in zip(keys, leaves)]
  elif method == "zeros":
    locs = [jnp.zeros(jnp.shape(x), jnp.float32) for x in leaves]
  else:
    locs = [jnp.asarray(x, jnp.float32) for x in leaves]
  raw = raw_scale_for(init_scale)
  raws = [jnp.full(jnp.shape(x), raw, jnp.float32) for x in leaves]
  return MeanFieldParams(jax.tree.unflatten(treedef, locs), jax.tree.unflatten(treedef, raws))


def sample_noise(key: Array, params: MeanFieldParams) -> PyTree:
  """eps ~ N(0, I) shaped like the parameters."""
  leaves, treedef = jax.tree.flatten(params.loc)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, jnp.shape(x), jnp.float32)
                                      for k, x in zip(keys, leaves)])


def transform(params: MeanFieldParams, eps: PyTree) -> PyTree:
  """theta = loc + softplus(raw_scale) * eps."""
  return jax.tree.map(lambda m, r, e: m + scale_of(r) * e, params.loc, params.raw_scale, eps)


def sample(key: Array, params: MeanFieldParams) -> PyTree:
  """One reparameterised draw theta ~ q."""
  return transform(params, sample_noise(key, params))


def entropy(params: MeanFieldParams) -> Array:
  """H[q] = sum_j log scale_j + 0.5 log(2 pi e) per coordinate."""
  leaves = jax.tree.leaves(params.raw_scale)
  n = sum(int(x.size) for x in leaves)
  return sum(jnp.sum(jnp.log(scale_of(r))) for r in leaves) + 0.5 * n * math.log(2 * math.pi * math.e)


def log_q(params: MeanFieldParams, theta: PyTree) -> Array:
  """log q(theta)."""
  def one(m, r, t):
    s = scale_of(r)
    z = (t - m) / s
    return jnp.sum(-0.5 * z * z - jnp.log(s) - 0.5 * math.log(2 * math.pi))
  return sum(jax.tree.leaves(jax.tree.map(one, params.loc, params.raw_scale, theta)))


def reparam_weights(params: MeanFieldParams, eps: PyTree) -> tuple[PyTree, PyTree]:
  """Chain-rule factors from d/dtheta to d/d(loc, raw_scale).

  d theta / d loc = 1 and d theta / d raw_scale = eps * sigmoid(raw_scale), so a
  per-example gradient g (w.r.t. theta) becomes (g, g * dscale) and its squared
  norm is sum_j g_j^2 * (1 + dscale_j^2).

  Returns:
    (dscale, coord_weights) pytrees shaped like theta.
  """
  dscale = jax.tree.map(lambda r, e: e * jax.nn.sigmoid(r), params.raw_scale, eps)
  weights = jax.tree.map(lambda d: 1.0 + d * d, dscale)
  return dscale, weights
