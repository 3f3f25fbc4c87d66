"""Posterior-predictive sampling of synthetic rows, jit-compiled and chunked."""
from __future__ import annotations

import functools
import math
import os
import warnings

import jax
import numpy as np

from jtwin.models import posterior as post
from jtwin.models.interface import Model

DEFAULT_CHUNK = 1 << 13   # measured fastest on CPU (smaller chunks stay in cache)
# bytes per synthetic cell held at once: the float32 value and its mask, the
# decoded frame's cell (float64 or an object pointer) and headroom for pandas
BYTES_PER_CELL = 32


def check_output_size(num_rows: int, num_columns: int, flag: str) -> None:
  """Refuses a twin too large for this machine's memory, before it is drawn.

  The twin is held in memory before it is written: `num_rows` x
  `num_columns` cells at about `BYTES_PER_CELL` bytes each. Only a twin
  larger than the physical memory is refused (where the OS reports it).

  Raises:
    JtwinInputError: it would need more memory than the machine has.
  """
  from jtwin.errors import JtwinInputError
  need = int(num_rows) * max(int(num_columns), 1) * BYTES_PER_CELL
  try:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):
    return
  if total > 0 and need > total:
    raise JtwinInputError(
        f"{flag} {num_rows:,} rows x {num_columns} columns would need about "
        f"{need / 2**30:,.0f} GiB of memory, more than this machine's {total / 2**30:,.0f} GiB; "
        "draw fewer rows per run (several 'jtwin sample' runs with different --seed "
        "give more)")


def whole_draws(num_rows: int, records_per_draw: int, flag: str, m_flag: str = "--m") -> int:
  """Rows a command writes: `num_rows` rounded up to whole draws of `records_per_draw`
  rows, as twinify does (ceil(n / m) parameter draws, m rows each), so that
  every draw (every `--separate_output` file) has m rows; says so when it
  rounds. The library's samplers draw exactly `num_rows`."""
  m = int(records_per_draw)
  rounded = -(-int(num_rows) // m) * m
  if rounded != num_rows:
    warnings.warn(f"{flag} {num_rows} is not a multiple of {m_flag} {m}: writing "
                  f"{rounded} rows ({rounded // m} posterior draws of {m} rows), as twinify does")
  return rounded


def _generic_predictive(model: Model, key, posterior: post.MeanFieldParams, n: int):
  """A fresh theta ~ q per row, then one row from `model.sample`."""
  def one(k):
    k_theta, k_x = jax.random.split(k)
    values, observed = model.sample(k_x, post.sample(k_theta, posterior), 1)
    return values[0], observed[0]
  return jax.vmap(one)(jax.random.split(key, n))


def _grouped_predictive(model: Model, m: int, key, posterior: post.MeanFieldParams, n: int):
  """n parameter draws theta ~ q, m rows from each: [n * m, D]."""
  def one(k):
    k_theta, k_x = jax.random.split(k)
    return model.sample(k_x, post.sample(k_theta, posterior), m)
  values, observed = jax.vmap(one)(jax.random.split(key, n))
  return values.reshape((n * m,) + values.shape[2:]), observed.reshape((n * m,) + observed.shape[2:])


def predictive_fn(model: Model, records_per_draw: int = 1):
  """`(key, posterior, n) -> (values, observed)` for this model.

  With records_per_draw = m > 1, n is the number of parameter draws and the
  result has n * m rows (twinify's --num_synthetic_records_per_parameter_sample).
  """
  if records_per_draw > 1:
    return functools.partial(_grouped_predictive, model, records_per_draw)
  if model.sample_predictive is not None:
    return model.sample_predictive
  return functools.partial(_generic_predictive, model)


def sample_synthetic(key: jax.Array, model: Model, posterior: post.MeanFieldParams,
                     num_rows: int, *, chunk_size: int = DEFAULT_CHUNK,
                     records_per_draw: int = 1):
  """Draws `num_rows` synthetic rows from the posterior predictive.

  Each row gets its own parameter draw theta ~ q (twinify's default). Rows
  are drawn in chunks of a fixed size (the last one trimmed), so memory stays
  bounded for any `num_rows` and the sampler compiles once per chunk size.
  Sampling is post-processing of the DP posterior: it never reads the data.

  Args:
    key: PRNG key (split once per chunk), or an int seed.
    model: the fitted model.
    posterior: its variational parameters (refused with a ValueError when
      their shapes are not the model's, e.g. another K).
    num_rows: rows to draw (>= 0).
    chunk_size: rows per compiled call.
    records_per_draw: rows per parameter draw (default 1: a fresh theta per
      row); rows of one draw are consecutive.

  Returns:
    numpy (values float32 [num_rows, D], observed bool [num_rows, D]).
  """
  from jtwin._validate import as_key, check_posterior, count
  key = as_key(key)
  num_rows = count("num_rows", num_rows)
  m = count("records_per_draw", records_per_draw, minimum=1)
  check_posterior(model, posterior)
  num_draws = int(math.ceil(num_rows / m))
  size = int(max(1, min(max(chunk_size // m, 1), num_draws)))
  draw = jax.jit(predictive_fn(model, m), static_argnums=2)
  num_chunks = int(math.ceil(num_draws / size))
  keys = jax.random.split(key, max(num_chunks, 1))
  vals, obs = [], []
  for c in range(num_chunks):
    v, o = draw(keys[c], posterior, size)
    vals.append(np.asarray(v))
    obs.append(np.asarray(o))
  if not vals:
    d = len(model.features) if model.features else 0
    return np.zeros((0, d), np.float32), np.zeros((0, d), bool)
  return (np.concatenate(vals)[:num_rows], np.concatenate(obs)[:num_rows])
