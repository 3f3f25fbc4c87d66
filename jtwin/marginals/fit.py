"""Fitting the mixture to noisy marginals: MAP, then a noise-aware posterior.

Every measured cell is y = n * P_theta(cell) + e with e ~ N(0, v) and the
noise variance v known (it is the mechanism's), so the likelihood of the
measurements is explicit:

  log p(y | theta) = -1/2 sum_cells (y - n P_theta(cell))^2 / v + const.

A centred table (`jtwin.marginals.residual`) is z = R (T + e): its term is
-1/2 ||R x - z||^2 / v with x = n P_theta(table), computed as the plain term
minus x' (I - R) x / (2 v), a signed sum of squared lower-order margins
(`Targets.quad` and `Targets.low_*`).

`fit_map` maximises log p(y | theta) + log p(theta) by Adam (a point estimate,
used while selecting); `fit_posterior` fits a mean-field Gaussian posterior
q(theta) = N(loc, softplus(raw_scale)^2) by maximising the ELBO with the
reparameterisation trick, so synthetic data sets drawn from different theta ~ q
reflect the uncertainty that the DP noise leaves. Both are post-processing of
the noisy measurements: they never see the data.

Measurements are padded to a power-of-two number of cells (padding has zero
weight), so a growing set of measurements compiles only a few times.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtwin.marginals import mixture_marginals as mm
from jtwin.models.posterior import MeanFieldParams, raw_scale_for, scale_of

Array = jax.Array

__all__ = ["Fitter", "Targets", "initial_theta", "make_fitter", "make_targets"]


class Targets(NamedTuple):
  """The measurements as padded arrays (all public).

  Attributes:
    positions: int32 [M] positions in the marginal vector.
    noisy: float32 [M] noisy counts.
    precision: float32 [M] 1 / noise variance (0 for padding).
    total: float32 [] n, the (noisy) number of rows.
    quad: float32 [M] or None: for centred measurements
      (`jtwin.marginals.residual`), the summed signed weight of each measured
      cell's position among the lower-order margins in their likelihood
      (those margins are mostly measured tables themselves); None when all
      measurements are plain. The centred tables' loss is the plain one
      minus 1/2 sum weight * (n * marginal)^2 over those margins.
    low_positions: int32 [L] or None: the margins' positions that no
      measured cell has and that are 1-way cells (e.g. of coarse views).
    low_weight: float32 [L] or None: their weights (0: padding).
    far_positions, far_weight: the same for any other such position (a pair
      whose table was not measured), or None (then the fit never gathers
      from the whole marginal vector twice, which costs a copy of it).
  """
  positions: Array
  noisy: Array
  precision: Array
  total: Array
  quad: Array = None
  low_positions: Array = None
  low_weight: Array = None
  far_positions: Array = None
  far_weight: Array = None


def make_targets(index: mm.MarginalIndex, measurements, total: float) -> Targets:
  """Stacks measurements into `Targets`, padded to a power of two."""
  pos = np.concatenate([mm.clique_positions(index, m.clique) for m in measurements])
  y = np.concatenate([m.noisy for m in measurements])
  prec = np.concatenate([1.0 / m.variance for m in measurements])
  size = 1 << int(np.ceil(np.log2(max(len(pos), 2))))
  pad = size - len(pos)
  extra = ()
  if any(m.centred for m in measurements):
    extra = _lower_order_terms(index, measurements, pos, size)
  return Targets(jnp.asarray(np.pad(pos, (0, pad)), jnp.int32),
                 jnp.asarray(np.pad(y, (0, pad)), jnp.float32),
                 jnp.asarray(np.pad(prec, (0, pad)), jnp.float32),
                 jnp.asarray(total, jnp.float32), *extra)


def _lower_order_terms(index: mm.MarginalIndex, measurements, measured: np.ndarray,
                       size: int):
  """The centred tables' lower-order margins as weights on marginal positions.

  A centred measurement z = R (T + e) with precision w has log-likelihood
  -w/2 ||R x - z||^2 = -w/2 (||x - z||^2 - x' (I - R) x) (z = R z), and
  x' (I - R) x = sum_S c_S ||margin_S(x)||^2 (`residual.lower_order_terms`):
  each margin cell enters with weight w * c_S. Weights are summed per
  position; a position that a measured cell also has (`measured`, the
  unpadded positions) goes to that cell's `quad` entry, so the fit gathers it
  once; the rest are returned as extra (positions, weights), padded: 1-way
  cells apart from the others.

  Returns:
    (quad [size], 1-way positions, their weights, other positions, their
    weights), jax arrays; the last two None when there are none.
  """
  from jtwin.marginals import residual
  pos, weight = [], []
  for m in measurements:
    if not m.centred:
      continue
    w = 1.0 / float(np.max(m.variance))
    for c, kept in residual.lower_order_terms(m.shape, m.centred):
      p = mm.clique_positions(index, tuple(m.clique[a] for a in kept))
      pos.append(p)
      weight.append(np.full(len(p), w * c))
  unique, inverse = np.unique(np.concatenate(pos), return_inverse=True)
  summed = np.bincount(inverse, weights=np.concatenate(weight), minlength=len(unique))
  first = {}
  for i, p in enumerate(measured.tolist()):
    first.setdefault(p, i)
  quad = np.zeros(size)
  near, far = ([], []), ([], [])
  for p, w in zip(unique.tolist(), summed.tolist()):
    if p in first:
      quad[first[p]] += w
    else:
      part = near if p < index.num_theta else far
      part[0].append(p)
      part[1].append(w)

  def padded(part):
    n = 1 << int(np.ceil(np.log2(max(len(part[0]), 2))))
    return (jnp.asarray(np.pad(np.asarray(part[0], np.int64), (0, n - len(part[0]))), jnp.int32),
            jnp.asarray(np.pad(np.asarray(part[1], float), (0, n - len(part[0]))), jnp.float32))

  return (jnp.asarray(quad, jnp.float32), *padded(near),
          *(padded(far) if far[0] else (None, None)))


def _neg_log_joint(index, concentration, theta, targets: Targets, smoothness=0.0) -> Array:
  vector = mm.marginal_vector(index, theta)
  x = targets.total * vector[targets.positions]
  r = targets.noisy - x
  out = 0.5 * jnp.sum(targets.precision * r * r) - mm.log_prior(index, theta, concentration)
  if targets.quad is not None:     # centred tables (`_lower_order_terms`)
    low = targets.total * vector[:index.num_theta][targets.low_positions]   # 1-way cells
    out = out - 0.5 * (jnp.sum(targets.quad * x * x) + jnp.sum(targets.low_weight * low * low))
    if targets.far_positions is not None:
      far = targets.total * vector[targets.far_positions]
      out = out - 0.5 * jnp.sum(targets.far_weight * far * far)
  return out + smoothness * mm.roughness(index, theta) if smoothness else out


def initial_theta(index: mm.MarginalIndex, key: Array, one_way: list, spread: float,
                  peak: float = 0.0) -> dict:
  """Components near the noisy 1-way marginals, each with a random "peak".

  Every component starts at the noisy 1-way marginals; with `peak` > 0 each
  component also gets, in every column, one cell drawn from those marginals
  whose log-probability is raised by `peak` (so components start as distinct
  prototypes, and rare categories get components of their own, as k-means++
  seeds do); N(0, spread^2) noise is added to every logit. Post-processing of
  the noisy 1-way tables and public randomness.

  Args:
    one_way: per column, noisy counts of its cells (missing cell last).
  """
  layout = index.layout
  k = layout.num_components
  k_peak, k_noise = jax.random.split(key)
  rng = np.random.default_rng(np.asarray(jax.random.key_data(k_peak)).astype(np.uint64).tolist())
  ct = len(layout.flat_feature)
  flat = np.zeros((k, ct + len(layout.missing_idx)))      # fine cells only
  for j, y in enumerate(one_way):
    p = np.maximum(np.asarray(y, float), 0.5)
    flat[:, index.cell_pos[j]] = np.log(p / p.sum())
    if peak > 0:
      c = layout.cat_sizes[j]
      chosen = rng.choice(c, size=k, p=p[:c] / p[:c].sum())
      flat[np.arange(k), index.cell_pos[j][chosen]] += peak
  theta = {"mix": np.zeros(k - 1)}
  # ALR: log p of observed cells relative to the column's reference (last observed) cell
  ref = flat[:, [layout.pad_index[j, layout.cat_sizes[j] - 1] for j in range(len(layout.cat_idx))]]
  pc = len(layout.flat_free)
  theta["cat_logits"] = flat[:, :pc] - ref[:, layout.flat_feature[:pc]]
  if len(layout.missing_idx):
    miss = flat[:, ct:]
    theta["missing_logit"] = miss - np.log(np.maximum(1e-12, -np.expm1(miss)))
  keys = jax.random.split(k_noise, len(theta))
  return {name: jnp.asarray(v, jnp.float32) + spread * jax.random.normal(kk, np.shape(v))
          for kk, (name, v) in zip(keys, sorted(theta.items()))}


def _schedule(lr: float, steps: int):
  return optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.02)


def _map_run(joint, theta, targets, steps, lr):
  opt = optax.adam(_schedule(1.0, steps))
  grad = jax.grad(joint)

  def step(carry, _):
    params, state = carry
    updates, state = opt.update(grad(params, targets), state, params)
    updates = jax.tree.map(lambda u: lr * u, updates)
    return (optax.apply_updates(params, updates), state), None

  (theta, _), _ = jax.lax.scan(step, (theta, opt.init(theta)), None, length=steps)
  return theta, joint(theta, targets)


class Fitter(NamedTuple):
  """The compiled fitting functions of one model (see `make_fitter`)."""
  fit_map: object
  fit_posterior: object


def make_fitter(index: mm.MarginalIndex, concentration: float,
                smoothness: float = 0.0) -> Fitter:
  """Jit-compiled MAP and posterior fits for this index and prior.

  The prior is Dirichlet(concentration) on every component's cells and the
  weights, times exp(-smoothness * `mm.roughness`) (0: off).

  fit_map(theta, targets, steps, learning_rate) -> (theta, loss): Adam on
    -(log p(y | theta) + log p(theta)) from `theta`.
  fit_posterior(theta, targets, key, steps, learning_rate, init_scale=0.01)
    -> MeanFieldParams: the mean-field Gaussian posterior over theta given the
    noisy measurements (ELBO, Adam), starting at loc = theta (the MAP
    estimate) with scale `init_scale`.
  """
  joint = functools.partial(_neg_log_joint, index, float(concentration),
                            smoothness=float(smoothness))
  run_map = jax.jit(functools.partial(_map_run, joint), static_argnums=2)
  run_vi = jax.jit(functools.partial(_vi_run, joint), static_argnums=3)

  def fit_map(theta, targets, steps, learning_rate):
    theta, loss = run_map(theta, targets, int(steps), jnp.float32(learning_rate))
    return theta, float(loss)

  def fit_posterior(theta, targets, key, steps, learning_rate, init_scale=0.01):
    raw = jax.tree.map(lambda x: jnp.full_like(x, raw_scale_for(init_scale)), theta)
    return run_vi(MeanFieldParams(theta, raw), targets, key, int(steps),
                  jnp.float32(learning_rate))

  return Fitter(fit_map, fit_posterior)


def _vi_run(joint, post, targets, key, steps, lr):
  opt = optax.adam(_schedule(1.0, steps))

  def neg_elbo(params, eps):
    theta = jax.tree.map(lambda m, r, e: m + scale_of(r) * e, params.loc, params.raw_scale, eps)
    entropy = sum(jnp.sum(jnp.log(scale_of(r))) for r in jax.tree.leaves(params.raw_scale))
    return joint(theta, targets) - entropy

  leaves, treedef = jax.tree.flatten(post.loc)

  def step(carry, k):
    params, state = carry
    ks = jax.random.split(k, len(leaves))
    eps = jax.tree.unflatten(treedef, [jax.random.normal(kk, x.shape) for kk, x in zip(ks, leaves)])
    updates, state = opt.update(jax.grad(neg_elbo)(params, eps), state, params)
    updates = jax.tree.map(lambda u: lr * u, updates)
    return (optax.apply_updates(params, updates), state), None

  (post, _), _ = jax.lax.scan(step, (post, opt.init(post)), jax.random.split(key, steps))
  return post
