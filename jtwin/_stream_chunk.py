"""Training from a table that stays on the host (a memory map): batches gathered per step.

`make_streamed_runner` has the interface of `jtwin.infer.make_chunk_runner`'s
result, `run_chunk(state, (indices, mask, active), key_eps, key_noise, values,
observed)`, but `values` and `observed` are host arrays (e.g. the memory maps
of a `jtwin.table_store.TableStore`) that never go to the device whole. For
each group of steps it gathers the steps' Poisson batches on the host
(`values[indices]`, indices ascending within a step, so the memory map is read
front to back) and hands the compiled scan only those rows, [S', W, D]: device
memory is O(S' W D), not O(N D). S' is the chunk's steps, reduced so that the
gathered rows stay under `cap_bytes` (at least one step: a step's batch is
never cut, it is re-padded wider by the caller if it overflows).

The chunk's posterior draws and DP noise are drawn from its keys exactly as in
`jtwin._chunk.chunk_body` and sliced per group, and each step sees exactly the
rows (and padding) it would see on the in-memory path, so for the same key the
result equals the in-memory run's up to float rounding.
"""
from __future__ import annotations

import math
import mmap
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jtwin import dp

__all__ = ["DEFAULT_CAP_BYTES", "make_sharded_streamed_runner", "make_streamed_runner",
           "steps_per_gather"]

DEFAULT_CAP_BYTES = 64 << 20     # gathered rows per compiled call (values + observed)


def steps_per_gather(steps: int, width: int, columns: int, cap_bytes: int) -> int:
  """Steps per compiled call: the chunk's `steps` in equal groups of at most `cap_bytes`.

  A step's gathered batch takes width x columns x 5 bytes (float32 values and
  bool flags); at least one step per call.
  """
  per_step = max(1, width * columns * 5)
  most = max(1, min(steps, int(cap_bytes // per_step)))
  parts = math.ceil(steps / most)
  return math.ceil(steps / parts)


def _draws(key_eps, key_noise, num: int, flat_size: int):
  """The chunk's posterior draws and DP noise, as `chunk_body` draws them."""
  eps = jax.random.normal(key_eps, (num, flat_size), jnp.float32)
  noise = dp.wide_normal(key_noise, (num, flat_size))
  return eps, noise


def _group_body(step: Callable) -> Callable:
  def body(state, xs, eps, noise):
    rows_v, rows_o, mask, active = xs
    local = jnp.arange(rows_v.shape[1], dtype=jnp.int32)    # row j of the batch is slot j

    def one(s, x):
      v, o, m, a, e, n = x
      return step(s, (local, m, a, e, n), v, o)

    state, info = jax.lax.scan(one, state, (rows_v, rows_o, mask, active, eps, noise))
    return state, info, jnp.all(jnp.isfinite(state.params))

  return body


def _drop_pages(array) -> None:
  """Unmaps a memory map's resident pages (they stay in the page cache): RSS stays flat."""
  m = getattr(array, "_mmap", None)
  if m is None or not hasattr(m, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
    return
  try:
    m.madvise(mmap.MADV_DONTNEED)
  except (OSError, ValueError):
    pass


def make_streamed_runner(step: Callable, flat_size: int,
                         cap_bytes: int = DEFAULT_CAP_BYTES) -> Callable:
  """`run_chunk` for a host-resident table (see the module docstring).

  Args:
    step: the step function (`jtwin.infer.make_step`, one device).
    flat_size: P, the flat parameter size.
    cap_bytes: the most bytes of gathered rows per compiled call.

  Returns:
    `run_chunk(state, (indices int [S, W], mask bool [S, W], active bool [S]),
    key_eps, key_noise, values [N, D], observed [N, D]) -> (state, StepInfo
    of [S] arrays, finite)`.
  """
  draws = jax.jit(_draws, static_argnums=(2, 3))
  body = jax.jit(_group_body(step), donate_argnums=(0,))

  def run_chunk(state, xs, key_eps, key_noise, values, observed):
    indices, mask, active = (np.asarray(x) for x in xs)
    steps, width = indices.shape
    group = steps_per_gather(steps, width, values.shape[1], cap_bytes)
    eps, noise = draws(key_eps, key_noise, steps, flat_size)
    infos, finite = [], None
    for a in range(0, steps, group):
      b = min(a + group, steps)
      rows = indices[a:b]
      # the host gather of this group overlaps the device's previous group
      state, info, finite = body(state, (values[rows], observed[rows], mask[a:b],
                                         active[a:b]), eps[a:b], noise[a:b])
      infos.append(info)
    return state, _finish(infos, values, observed), finite

  return run_chunk


def _finish(infos: list, values, observed):
  """A chunk's step diagnostics in one tree; the table's pages released."""
  _drop_pages(values)
  _drop_pages(observed)
  return jax.tree.map(lambda *x: jnp.concatenate(x), *infos) if len(infos) > 1 else infos[0]


def make_sharded_streamed_runner(step: Callable, flat_size: int, mesh, shard_rows: int,
                                 cap_bytes: int = DEFAULT_CAP_BYTES) -> Callable:
  """`run_chunk` for a host-resident table over a data-parallel mesh (`jtwin.parallel`).

  Shard d holds global rows [d R, (d + 1) R) (R = `shard_rows`, as
  `parallel.shard_table`), and `xs` holds the chunk's batches already split
  per shard (`parallel.split_batches`: local indices [S, D W'], padding slots
  pointing to local row R). For each group of steps, every shard's rows are
  gathered from the host table by that shard's own callback
  (`jax.make_array_from_callback`: in a multi-host run a process gathers only
  its own devices' rows) and placed on its device; the posterior draws and
  the DP noise are drawn inside from the replicated chunk keys, as in
  `jtwin._chunk.chunk_body`, and sliced at the group's offset; `step` (made
  with `axis_name`) psums the clipped sums and adds the noise once.
  """
  from jax.sharding import NamedSharding, PartitionSpec as P
  from jtwin.parallel import AXIS
  by_shard = NamedSharding(mesh, P(None, AXIS))
  replicated = NamedSharding(mesh, P())
  compiled = {}

  def runner(chunk: int):
    if chunk not in compiled:
      def body(state, xs, key_eps, key_noise, offset):
        rows_v = xs[0]
        eps, noise = _draws(key_eps, key_noise, chunk, flat_size)
        eps = jax.lax.dynamic_slice_in_dim(eps, offset, rows_v.shape[0])
        noise = jax.lax.dynamic_slice_in_dim(noise, offset, rows_v.shape[0])
        return _group_body(step)(state, xs, eps, noise)

      sharded = jax.shard_map(
          body, mesh=mesh,
          in_specs=(P(), (P(None, AXIS), P(None, AXIS), P(None, AXIS), P()), P(), P(), P()),
          out_specs=(P(), P(), P()))
      compiled[chunk] = jax.jit(sharded, donate_argnums=(0,))
    return compiled[chunk]

  def run_chunk(state, xs, key_eps, key_noise, values, observed):
    indices, mask, active = (np.asarray(x) for x in xs)
    steps, slots = indices.shape
    width = slots // mesh.size
    shard = np.arange(slots) // width                       # the shard of each slot
    rows = np.where(mask, indices + shard[None, :] * shard_rows, 0)   # global rows
    group = steps_per_gather(steps, width, values.shape[1], cap_bytes)
    body = runner(steps)
    infos, finite = [], None
    for a in range(0, steps, group):
      b = min(a + group, steps)
      g = rows[a:b]

      def gathered(table, g=g):
        return jax.make_array_from_callback(
            g.shape + table.shape[1:], by_shard,
            lambda index: table[g[index[0], index[1]]])

      m = mask[a:b]
      placed = (gathered(values), gathered(observed),
                jax.make_array_from_callback(m.shape, by_shard, lambda index, m=m: m[index]),
                jax.make_array_from_callback((b - a,), replicated,
                                             lambda index, x=active[a:b]: x[index]))
      offset = jax.make_array_from_callback((), replicated,
                                            lambda index, a=a: np.int32(a))
      state, info, finite = body(state, placed, key_eps, key_noise, offset)
      infos.append(info)
    return state, _finish(infos, values, observed), finite

  return run_chunk
