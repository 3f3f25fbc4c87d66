"""Feature families: log-densities, priors and samplers in unconstrained form.

All functions broadcast: a data block x of shape [B, 1, D] against parameters
of shape [K, D] gives [B, K, D], so one call evaluates every example against
every mixture component for all features of one family at once.

Unconstrained parameterisation (twinify's priors, twinify.md §2.3):

| family      | unconstrained         | constrained          | prior (constrained)  |
|-------------|-----------------------|----------------------|----------------------|
| Normal      | loc, u = log scale    | loc, scale = e^u     | N(0, 10), LogN(0, 2) |
| Poisson     | eta = log rate        | rate = e^eta         | Exponential(1)       |
| Categorical | a in R^{C-1} (ALR)    | p = softmax([a, 0])  | Dirichlet(1, ..., 1) |
| Bernoulli   | as Categorical, C = 2 | p = (p_0, p_1)       | Beta(1, 1)           |
| missingness | zeta = logit q        | q = sigmoid(zeta)    | Beta(2, 2)           |
| weights     | a in R^{K-1} (ALR)    | pi = softmax([a, 0]) | Dirichlet(1_K)       |

The prior log-densities below are of the *unconstrained* parameters, i.e. the
constrained prior plus log|det J| (see `jtwin.models.constraints`).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
NORMAL_LOC_PRIOR_SCALE = 10.0
NORMAL_LOG_SCALE_PRIOR_SCALE = 2.0


# ---------------------------------------------------------------- Normal
def normal_log_prob(x: Array, loc: Array, log_scale: Array) -> Array:
  """log N(x | loc, exp(log_scale)), broadcasting."""
  z = (x - loc) * jnp.exp(-log_scale)
  return -0.5 * z * z - log_scale - _HALF_LOG_2PI


def normal_log_prior(loc: Array, log_scale: Array) -> Array:
  """Sum of log N(loc | 0, 10) + log LogNormal(e^u | 0, 2) + u (Jacobian).

  LogNormal(0, 2) on the scale with the exp map is N(u | 0, 2) on u.
  """
  s1, s2 = NORMAL_LOC_PRIOR_SCALE, NORMAL_LOG_SCALE_PRIOR_SCALE
  lp_loc = -0.5 * (loc / s1) ** 2 - math.log(s1) - _HALF_LOG_2PI
  lp_u = -0.5 * (log_scale / s2) ** 2 - math.log(s2) - _HALF_LOG_2PI
  return jnp.sum(lp_loc) + jnp.sum(lp_u)


def normal_sample(key: Array, loc: Array, log_scale: Array) -> Array:
  return loc + jnp.exp(log_scale) * jax.random.normal(key, jnp.shape(loc))


# ---------------------------------------------------------------- Poisson
def poisson_log_prob(x: Array, log_rate: Array) -> Array:
  """log Poisson(x | exp(log_rate)), broadcasting; x non-negative integers."""
  return x * log_rate - jnp.exp(log_rate) - gammaln(x + 1.0)


def poisson_log_prior(log_rate: Array) -> Array:
  """Exponential(1) on the rate plus the exp Jacobian: sum(eta - e^eta)."""
  return jnp.sum(log_rate - jnp.exp(log_rate))


def poisson_sample(key: Array, log_rate: Array) -> Array:
  return jax.random.poisson(key, jnp.exp(log_rate)).astype(jnp.float32)


# ---------------------------------------------------------------- Categorical
def categorical_log_probs(a: Array) -> Array:
  """log p for p = softmax([a, 0]): [..., C-1] -> [..., C]."""
  full = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (1,), a.dtype)], -1)
  return jax.nn.log_softmax(full, axis=-1)


def categorical_log_prob(x: Array, a: Array) -> Array:
  """log Categorical(x | softmax([a, 0])), broadcasting x [...] against a [..., C-1]."""
  logp = categorical_log_probs(a)
  hit = jnp.asarray(x)[..., None].astype(jnp.int32) == jnp.arange(logp.shape[-1])
  return jnp.sum(jnp.where(hit, logp, 0.0), -1)


def dirichlet_ones_log_prior(log_p: Array, num_categories: Array | int) -> Array:
  """Dirichlet(1,...,1) on p plus the ALR Jacobian, given log p [..., C].

  log Dir(p | 1) = log Gamma(C); log|det J| = sum_c log p_c. Entries of log_p
  that are -inf padding must be masked by the caller (pass 0 there).
  """
  return jnp.sum(gammaln(jnp.asarray(num_categories, jnp.float32))) + jnp.sum(log_p)


# ---------------------------------------------------------------- Missingness
def missing_log_prob(observed: Array, zeta: Array) -> Array:
  """log Bernoulli(missing | q = sigmoid(zeta)): log q if missing else log(1-q)."""
  return jnp.where(observed, -jax.nn.softplus(zeta), -jax.nn.softplus(-zeta))


def missing_log_prior(zeta: Array) -> Array:
  """Beta(2, 2) on q plus the sigmoid Jacobian: sum(log 6 + 2 log q + 2 log(1-q))."""
  log_q = -jax.nn.softplus(-zeta)
  log_1mq = -jax.nn.softplus(zeta)
  return jnp.sum(math.log(6.0) + 2.0 * log_q + 2.0 * log_1mq)
