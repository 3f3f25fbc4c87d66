"""DP-SGD mechanics: per-example clipping of a summed gradient, and Gaussian noise.

The mechanism (what `jtwin.accounting` accounts for, add/remove-one relation):

  1. a Poisson batch: every row joins independently with probability q
     (`jtwin.batching`), padded to a static shape with a mask;
  2. each example's gradient g_i of its log-likelihood term is clipped to
     global L2 norm C over the whole variational-parameter pytree, and the
     clipped gradients are SUMMED (sensitivity C: adding or removing one row
     changes the sum by at most C; replacing one row by at most 2C);
  3. N(0, (sigma C)^2) noise is added to every coordinate of the sum;
  4. the result is multiplied by the public constant 1/q (an unbiased
     estimate of the full-data gradient). Nothing divides by the realised
     batch size.

Only the data term passes through 2-4; the gradients of the log-prior and of
the entropy do not touch the data and are added exactly afterwards.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtwin._wide_normal import wide_normal
from jtwin.models.interface import ClipInfo

Array = jax.Array
PyTree = Any


# ------------------------------------------------------------------ clipping
def global_norms(per_example: PyTree, coord_weights: PyTree | None = None) -> Array:
  """Per-example L2 norms over a pytree with a leading batch axis: -> [B]."""
  if coord_weights is None:
    coord_weights = jax.tree.map(lambda g: jnp.ones(g.shape[1:], g.dtype), per_example)
  scaled = [(g * jnp.sqrt(w)).reshape(g.shape[0], -1)
            for g, w in zip(jax.tree.leaves(per_example), jax.tree.leaves(coord_weights))
            if g.size]
  if not scaled:
    return jnp.zeros(jax.tree.leaves(per_example)[0].shape[:1])
  plain = jnp.sqrt(sum(jnp.sum(x * x, -1) for x in scaled))
  # Squaring overflows float32 above ~1e19: rescale by the largest entry there,
  # so every finite gradient gets a finite norm (and is clipped, not dropped).
  big = jnp.max(jnp.stack([jnp.max(jnp.abs(x), -1) for x in scaled]), 0)
  safe = jnp.where((big > 0) & jnp.isfinite(big), big, 1.0)
  rescaled = safe * jnp.sqrt(sum(jnp.sum((x / safe[:, None]) ** 2, -1) for x in scaled))
  return jnp.where(jnp.isinf(plain) & jnp.isfinite(big), rescaled, plain)


# A relative margin of 2^-16 absorbs float rounding between the norm that sets
# c_i and the contribution c_i g_i that is summed (the same margin as the
# mixture's closed-form path): every contribution is <= C, never C (1 + 1e-7).
CLIP_MARGIN = 1.0 - 2.0**-16


def clip_factors(norms: Array, mask: Array, clip: float) -> tuple[Array, Array]:
  """c_i = min(1, C'/||g_i||), C' = C (1 - 2^-16), for real finite rows, exactly 0 otherwise.

  Returns:
    (factors [B], finite [B]).
  """
  finite = jnp.isfinite(norms)
  target = clip * CLIP_MARGIN
  factor = jnp.where(norms > target, target / jnp.where(norms > 0, norms, 1.0), 1.0)
  return jnp.where(mask & finite, factor, 0.0), finite


def vmap_clipped_grad_sum(log_likelihood: Callable, theta: PyTree, coord_weights: PyTree,
                          values: Array, observed: Array, mask: Array, clip: float,
                          *, return_norms: bool = False):
  """Reference/generic clipped sum via `vmap(grad)` of a per-example log-likelihood.

  Same contract as `Model.clipped_grad_sum`: returns (sum_i c_i g_i, ClipInfo)
  with g_i = d log_likelihood(theta, x_i, o_i) / d theta and the norm of
  example i weighted by `coord_weights` (see `posterior.reparam_weights`).
  Non-finite examples are zeroed with `where` (never multiplied by 0).
  """
  ell, grads = jax.vmap(jax.value_and_grad(log_likelihood), in_axes=(None, 0, 0))(
      theta, values, observed)
  norms = global_norms(grads, coord_weights)
  c, finite = clip_factors(norms, mask & jnp.isfinite(ell), clip)
  use = c > 0
  summed = jax.tree.map(
      lambda g: jnp.sum(jnp.where(use.reshape((-1,) + (1,) * (g.ndim - 1)),
                                  c.reshape((-1,) + (1,) * (g.ndim - 1)) * g, 0.0), 0),
      grads)
  finite = finite & jnp.isfinite(ell)
  info = ClipInfo(num_clipped=jnp.sum(mask & finite & (norms > clip)),
                  num_nonfinite=jnp.sum(mask & ~finite),
                  log_lik_sum=jnp.sum(jnp.where(mask & finite, ell, 0.0)))
  return (summed, info, norms) if return_norms else (summed, info)


# ------------------------------------------------------------------ noise
class DPAggregateState(NamedTuple):
  """State of `dp_aggregate`: the noise key, split at every update."""
  key: Array


def privatize(clipped_sum: PyTree, std_normal: PyTree, noise_std: float,
              scale: float) -> PyTree:
  """scale * (clipped_sum + noise_std * std_normal), leafwise."""
  return jax.tree.map(lambda g, z: scale * (g + noise_std * z.astype(g.dtype)),
                      clipped_sum, std_normal)


def dp_aggregate(noise_std: float, scale: float,
                 key: Array) -> optax.GradientTransformationExtraArgs:
  """Adds N(0, noise_std^2) to every coordinate of a clipped SUM, then scales.

  Args:
    noise_std: sigma * C, the noise standard deviation on the sum.
    scale: a public constant multiplying (sum + noise); 1/q gives an unbiased
      estimate of the full-data gradient.
    key: noise PRNG key (required: there is no default key). It is split at
      every update and never reused.

  Returns:
    An `optax.GradientTransformationExtraArgs` whose
    `update(clipped_sum, state, params=None, *, noise=None)` returns
    `(scale * (clipped_sum + noise_std * z), new_state)` with z ~ N(0, I)
    drawn by `wide_normal` from the state's key, or, if `noise` is given,
    z = noise (standard normals the caller drew from an independent key for
    this step only, e.g. a whole chunk's worth drawn at once with
    `wide_normal`; the state is then returned unchanged). The input must already be a sum of per-example
    gradients clipped to C, padding rows contributing zero.
  """
  if noise_std < 0 or not math.isfinite(noise_std):
    raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")

  def init_fn(params):
    del params
    return DPAggregateState(key)

  def update_fn(updates, state, params=None, *, noise=None, **extra):
    del params, extra
    if noise is not None:
      return privatize(updates, noise, noise_std, scale), state
    next_key, noise_key = jax.random.split(state.key)
    if True:
      leaves, treedef = jax.tree.flatten(updates)
      keys = jax.random.split(noise_key, max(len(leaves), 1))
      noise = jax.tree.unflatten(treedef, [wide_normal(k, g.shape) for g, k in zip(leaves, keys)])
    return privatize(updates, noise, noise_std, scale), DPAggregateState(next_key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
