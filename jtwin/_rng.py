"""The run's single PRNG root, and deriving a numpy Generator from a JAX key."""
from __future__ import annotations

import secrets

import jax
import numpy as np


def root_key(seed: int | None = None) -> jax.Array:
  """A typed JAX key: from `seed`, or from 64 bits of `secrets` when None."""
  if seed is None:
    words = np.array([secrets.randbits(32), secrets.randbits(32)], np.uint32)
    return jax.random.wrap_key_data(words, impl="threefry2x32")
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  return jax.random.key(int(seed) % (2**63))


def numpy_generator_from_bits(bits) -> np.random.Generator:
  """A numpy Generator seeded by the key data (uint32 words) of a JAX key."""
  words = np.asarray(bits).astype(np.uint64).ravel()
  return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words.tolist())))


def numpy_generator(key: jax.Array) -> np.random.Generator:
  """A numpy Generator seeded by the bits of a JAX key (consumes the key)."""
  return numpy_generator_from_bits(jax.random.key_data(key))
