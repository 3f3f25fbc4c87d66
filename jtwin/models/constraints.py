"""Bijections from unconstrained reals to constrained parameters, with log|det J|.

Each `*_from_unconstrained` returns `(value, log_det_jacobian)` where the log
Jacobian is summed over the last axis for vector bijections and elementwise for
scalar ones, so that a prior density p(value) becomes the density
p(value) * |det J| of the unconstrained parameter.

The maps match numpyro's `biject_to` for positive reals (exp) and the unit
interval (sigmoid). For the simplex jtwin uses the additive log-ratio map
pi = softmax([a, 0]) (a bijection from R^{K-1} onto the open simplex, with
log|det J| = sum_k log pi_k); numpyro uses stick-breaking, which spans the
same distributions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def positive_from_unconstrained(u: Array) -> tuple[Array, Array]:
  """x = exp(u); log|dx/du| = u. Shapes: u [...] -> ([...], [...])."""
  return jnp.exp(u), u


def unit_from_unconstrained(u: Array) -> tuple[Array, Array]:
  """p = sigmoid(u); log|dp/du| = log p + log(1-p). Shapes [...] -> [...]."""
  log_p = -jax.nn.softplus(-u)
  log_1mp = -jax.nn.softplus(u)
  return jnp.exp(log_p), log_p + log_1mp


def simplex_log_probs(a: Array) -> Array:
  """log pi for pi = softmax([a, 0]). Shapes: a [..., K-1] -> [..., K]."""
  full = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (1,), a.dtype)], -1)
  return jax.nn.log_softmax(full, axis=-1)


def simplex_from_unconstrained(a: Array) -> tuple[Array, Array]:
  """pi = softmax([a, 0]); log|det d(pi_1..pi_{K-1})/da| = sum_k log pi_k.

  Args:
    a: [..., K-1] additive log-ratios (the last category is the reference).

  Returns:
    (pi [..., K], log_det [...]).
  """
  log_pi = simplex_log_probs(a)
  return jnp.exp(log_pi), jnp.sum(log_pi, axis=-1)


def simplex_to_unconstrained(pi: Array) -> Array:
  """Inverse of `simplex_from_unconstrained`: [..., K] -> [..., K-1]."""
  log_pi = jnp.log(pi)
  return log_pi[..., :-1] - log_pi[..., -1:]
