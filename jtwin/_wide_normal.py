"""Standard normals with full tails for every Gaussian mechanism in jtwin."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def wide_normal(key: Array, shape: tuple) -> Array:
  """Standard normals in float32 whose tails reach ~9.4 sigma.

  `jax.random.normal` in float32 inverts a uniform on a 2^-24 grid, so its
  support ends near +-5.4 sigma (dp_engines.md §4.1): a truncated Gaussian is
  not the Gaussian the accountant assumes. Here a uniform U in (0, 1) is built
  with a geometric exponent from 64 random bits (U >= 2^-65) and a 23-bit
  mantissa, and Box-Muller turns (U, V) into the independent pair
  sqrt(-2 log U) * (cos 2 pi V, sin 2 pi V): the radius reaches
  sqrt(130 log 2) = 9.5, and the Gaussian mass beyond 9.4 sigma is < 1e-20
  per coordinate. Four 32-bit words make two normals.
  """
  size = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
  pairs = (size + 1) // 2
  k0, k1, k2, k3 = jax.random.split(key, 4)
  bits = lambda k: jax.random.bits(k, (pairs,), jnp.uint32)
  b0, b1, b2, b3 = bits(k0), bits(k1), bits(k2), bits(k3)
  lz = jnp.where(b1 == 0, 32 + jax.lax.clz(b2), jax.lax.clz(b1))     # 0..64, P(j) = 2^-(j+1)
  mant = (b0 >> 9).astype(jnp.float32) * (2.0 ** -23) + 2.0 ** -24   # (0, 1)
  log_u = jnp.log1p(mant) - (lz.astype(jnp.float32) + 1.0) * math.log(2.0)  # U = (1+m) 2^-(lz+1)
  radius = jnp.sqrt(-2.0 * log_u)
  angle = (2.0 * math.pi * 2.0 ** -24) * (b3 >> 8).astype(jnp.float32)
  z = jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)])
  return z[:size].reshape(shape)
