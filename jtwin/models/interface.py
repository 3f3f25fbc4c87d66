"""The model interface every jtwin model implements, and the feature description.

A jtwin model is a `Model`: a NamedTuple of pure functions over a pytree of
*unconstrained* parameters `theta`. The automatic mixture model
(`jtwin.models.make_mixture_model`) is one instance; a researcher can write
their own with plain `jax.numpy` and give it to `jtwin.fit` unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax

Array = jax.Array
PyTree = Any

FAMILIES = ("normal", "bernoulli", "categorical", "poisson")


class Feature(NamedTuple):
  """One modelled column, as the model sees it (public information only).

  Attributes:
    name: column name.
    family: one of "normal", "bernoulli", "categorical", "poisson".
    num_categories: number of categories (categorical), 2 for bernoulli, else 0.
    missing: whether the column may be missing (adds a per-component
      missingness probability to the model).
  """
  name: str
  family: str
  num_categories: int = 0
  missing: bool = False


class Model(NamedTuple):
  """A probabilistic model in unconstrained parameter space.

  Data are two arrays: `values` float32 [N, D] (categorical codes stored as
  floats; any finite placeholder where a cell is missing) and `observed`
  bool [N, D].

  Attributes:
    init: `init(key) -> theta`, a parameter pytree (its structure and shapes
      define the parameter space; the values are a draw used as a template).
    log_prior: `log_prior(theta) -> scalar`, the prior density of the
      unconstrained parameters, including log|det J| of the constraining map.
    log_likelihood: `log_likelihood(theta, x, observed) -> scalar` for ONE
      example, `x` float [D], `observed` bool [D].
    sample: `sample(key, theta, n) -> (values [n, D], observed [n, D])`, n
      rows drawn given one parameter value.
    log_likelihood_batch: optional `(theta, X, O) -> [N]`; defaults to a
      `vmap` of `log_likelihood`.
    clipped_grad_sum: optional fast path for DP training,
      `(theta, coord_weights, X, O, mask, clip) -> (grad_sum, ClipInfo)`; see
      `jtwin.dp.clipped_grad_sum` for the contract. Defaults to `vmap(grad)`.
    sample_predictive: optional `(key, posterior, n) -> (values, observed)`:
      posterior-predictive rows, each from a fresh theta ~ q. Defaults to a
      `vmap` over rows of a posterior draw followed by `sample(key, theta, 1)`.
    features: optional tuple of `Feature` describing the columns.
    warm_start: optional `(key, values, observed, noise_multiplier) -> dict`
      of arrays added to the initial posterior locations, computed from the
      data with Gaussian noise of `noise_multiplier` times its L2
      sensitivity (0: exact, for non-private runs). `jtwin.fit` accounts
      for it (see `infer.privacy_plan`).
    grad_log_prior: optional closed form of `jax.grad(log_prior)`.
    grad_unscale: optional `grad_unscale(clip) -> pytree` shaped like theta of
      public per-coordinate factors s_j >= 1. When given, `clipped_grad_sum`
      returns the clipped sum in scaled coordinates, sum_i clip(g_i / s)
      (sensitivity `clip` as always), and `jtwin.fit` multiplies the noisy
      sum by s (post-processing). None: all ones.
  """
  init: Callable[[Array], PyTree]
  log_prior: Callable[[PyTree], Array]
  log_likelihood: Callable[[PyTree, Array, Array], Array]
  sample: Callable[[Array, PyTree, int], tuple]
  log_likelihood_batch: Optional[Callable] = None
  clipped_grad_sum: Optional[Callable] = None
  sample_predictive: Optional[Callable] = None
  features: Optional[tuple] = None
  warm_start: Optional[Callable] = None
  grad_log_prior: Optional[Callable] = None
  grad_unscale: Optional[Callable] = None


class ClipInfo(NamedTuple):
  """Diagnostics of one clipped gradient sum (non-private: for the data holder).

  Attributes:
    num_clipped: examples whose gradient norm exceeded the threshold.
    num_nonfinite: examples whose gradient or log-likelihood was non-finite
      (they contribute exactly zero).
    log_lik_sum: sum of the finite per-example log-likelihoods in the batch.
  """
  num_clipped: Array
  num_nonfinite: Array
  log_lik_sum: Array
