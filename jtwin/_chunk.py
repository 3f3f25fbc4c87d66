"""A chunk of DP-SGD steps as one `lax.scan`, shared by `jtwin.infer` and `jtwin.parallel`."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jtwin import dp


def chunk_body(step: Callable, flat_size: int) -> Callable:
  """The (uncompiled) chunk of steps shared by one device and many (`jtwin.parallel`).

  `body(state, (indices, mask, active), key_eps, key_noise, values, observed)`
  runs the chunk as a `lax.scan`; its posterior draws and DP noise are drawn
  inside from the chunk's keys. Returns `(state, StepInfo of [S] arrays, all
  params finite)`.
  """
  def body(state, xs, key_eps, key_noise, values, observed):
    num = xs[0].shape[0]
    eps = jax.random.normal(key_eps, (num, flat_size), jnp.float32)
    noise = dp.wide_normal(key_noise, (num, flat_size))
    state, info = jax.lax.scan(lambda s, x: step(s, x, values, observed), state,
                               xs + (eps, noise))
    return state, info, jnp.all(jnp.isfinite(state.params))

  return body
