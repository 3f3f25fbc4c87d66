"""Data-parallel DP-SGD over a one-axis mesh of devices.

Rows are sharded over the devices of a `jax.sharding.Mesh` (axis "data"),
parameters are replicated. Every step:

  1. the host draws the step's Poisson batch over all N rows exactly as on one
     device (`jtwin.batching`: every row joins independently with probability
     q) and hands each shard the rows it holds, padded to a common static
     width (`split_batches`). Each shard's batch is therefore the Bernoulli(q)
     draw of its own rows, and their union is exactly the accounted Poisson
     batch. A shard whose batch exceeds the width is re-padded at a larger
     width (one recompilation), never truncated;
  2. every shard computes the clipped sum of its own rows with the model's
     closed-form or `vmap` path (padding slots contribute exactly zero and
     read a dedicated padding row);
  3. one `psum` adds the shards' sums: the sum over the whole batch, whose
     sensitivity is C as on one device;
  4. the Gaussian noise N(0, (sigma C)^2 I) is added ONCE, after the psum,
     from one key shared by every device (each replica computes the same
     bits), then the 1/q scaling and the rest of the step run replicated.

Because the batches are drawn from the same host sampler as on one device, a
run on D devices uses the same batches and noise as on one device for the
same key and differs only by the rounding of the sum's order.

On a CPU, D devices need `XLA_FLAGS=--xla_force_host_platform_device_count=D`
(or `configure_cpu_devices(D)`) before JAX starts its backend. Several hosts:
call `jax.distributed.initialize(...)` in every process, then fit with
`devices=jax.device_count()`; every process runs the same seeded host
sampler (same key, same data) and feeds only its own devices' rows.
"""
from __future__ import annotations

import math
import os
from typing import Callable, NamedTuple, Optional

import numpy as np

from jtwin.errors import JtwinInputError

AXIS = "data"
# What the padding rows of a shard hold (tests set it to NaN: it must not matter).
_PAD_FILL = 0.0


def configure_cpu_devices(num_devices: int) -> None:
  """Asks for `num_devices` host-platform (CPU) devices before JAX starts.

  Sets `--xla_force_host_platform_device_count` in `XLA_FLAGS` unless it is
  already there. Effective only before JAX initialises its backend (the first
  computation or `jax.devices()` call); on a GPU/TPU machine it only affects
  the CPU backend.
  """
  if num_devices <= 1:
    return
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = (
        f"{flags} --xla_force_host_platform_device_count={int(num_devices)}").strip()


def make_mesh(num_devices: int):
  """A one-axis mesh ("data") over the first `num_devices` devices of `jax.devices()`.

  Raises:
    JtwinInputError: fewer devices than asked for (with how to get them on a CPU).
  """
  import jax
  if not isinstance(num_devices, (int, np.integer)) or num_devices < 1:
    raise JtwinInputError(f"devices must be a positive integer, got {num_devices!r}")
  available = jax.devices()
  if len(available) < num_devices:
    raise JtwinInputError(
        f"{num_devices} devices asked for but JAX sees {len(available)} "
        f"({available[0].platform}); on a CPU set "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before JAX starts "
        "(the jtwin command line does this for --devices)")
  return jax.sharding.Mesh(np.asarray(available[:num_devices]), (AXIS,))


def rows_per_shard(num_examples: int, num_shards: int) -> int:
  """Real rows per shard: ceil(N / D) (the last shard may hold fewer)."""
  return int(math.ceil(num_examples / num_shards))


class ShardedTable(NamedTuple):
  """The encoded table sharded by rows over the mesh.

  Shard d holds rows [d R, (d + 1) R) of the table (R = `rows`) in local
  rows [0, R), then padding up to R + 1 local rows. Local row R is always
  padding: the padding slots of a batch point to it.
  """
  values: object      # jax.Array [D (R + 1), F], sharded over "data"
  observed: object    # jax.Array [D (R + 1), F]
  rows: int           # R


def shard_table(values: np.ndarray, observed: np.ndarray, mesh) -> ShardedTable:
  """Pads each shard's rows to R + 1 and places shard d on device d.

  Only each process's own devices' rows are materialised (multi-host safe).
  """
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  n, f = values.shape
  d = mesh.size
  rows = rows_per_shard(n, d)
  local = rows + 1
  sharding = NamedSharding(mesh, P(AXIS))

  def block(array, fill):
    def callback(index):
      start = index[0].start or 0
      shard = start // local
      lo, hi = shard * rows, min(n, (shard + 1) * rows)
      out = np.full((local, f), fill, array.dtype)
      out[:max(hi - lo, 0)] = array[lo:hi]
      return out[:, index[1]] if len(index) > 1 else out
    return jax.make_array_from_callback((d * local, f), sharding, callback)

  return ShardedTable(block(np.asarray(values, np.float32), np.float32(_PAD_FILL)),
                      block(np.asarray(observed, bool), True), rows)


def default_shard_width(num_examples: int, sampling_prob: float, num_shards: int) -> int:
  """Per-shard padded batch size: `batching.default_max_batch` of one shard's rows."""
  from jtwin import batching
  return batching.default_max_batch(rows_per_shard(num_examples, num_shards), sampling_prob)


def split_batches(indices: np.ndarray, mask: np.ndarray, rows: int, num_shards: int,
                  width: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Hands each shard the rows of a chunk's global Poisson batches that it holds.

  Args:
    indices: int [S, W] global row indices of each step's batch, ascending
      among the real entries (as `batching.draw` returns them).
    mask: bool [S, W], True for real entries.
    rows: R, real rows per shard (shard d holds global rows [d R, (d + 1) R)).
    num_shards: D.
    width: the per-shard padded width wanted.

  Returns:
    (local indices int32 [S, D * W'], mask bool [S, D * W'], W'): shard d's
    slots are columns [d W', (d + 1) W'); padding slots point to local row R
    (always padding). W' = width, or, if some shard's batch at some step is
    larger, that batch's size + 8: nothing is ever dropped.
  """
  indices = np.asarray(indices)
  mask = np.asarray(mask, bool)
  s = indices.shape[0]
  shard = np.where(mask, indices // rows, num_shards)              # [S, W], D = padding
  counts = np.stack([np.sum(shard == k, axis=1) for k in range(num_shards)], 1)   # [S, D]
  largest = int(counts.max()) if counts.size else 0
  if largest > width:                      # re-pad wider; never truncate
    width = largest + 8
  order = np.argsort(shard, axis=1, kind="stable")                  # group by shard
  shard_sorted = np.take_along_axis(shard, order, 1)
  idx_sorted = np.take_along_axis(indices, order, 1)
  first = np.concatenate([np.zeros((s, 1), np.int64), np.cumsum(counts, 1)], 1)  # [S, D+1]
  pos = np.arange(indices.shape[1])[None, :] - np.take_along_axis(
      first, np.minimum(shard_sorted, num_shards), 1)
  real = shard_sorted < num_shards
  local_idx = np.full((s, num_shards, width), rows, np.int32)
  local_msk = np.zeros((s, num_shards, width), bool)
  step_of = np.broadcast_to(np.arange(s)[:, None], shard_sorted.shape)
  local_idx[step_of[real], shard_sorted[real], pos[real]] = (
      idx_sorted[real] - shard_sorted[real] * rows)
  local_msk[step_of[real], shard_sorted[real], pos[real]] = True
  return (local_idx.reshape(s, num_shards * width), local_msk.reshape(s, num_shards * width),
          width)


def place_batches(mesh, indices: np.ndarray, mask: np.ndarray, active: np.ndarray):
  """Puts a chunk's split batches on the mesh: columns sharded over "data"."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  by_shard = NamedSharding(mesh, P(None, AXIS))
  out = []
  for array in (indices, mask):
    out.append(jax.make_array_from_callback(array.shape, by_shard,
                                            lambda index, a=array: a[index]))
  replicated = NamedSharding(mesh, P())
  out.append(jax.make_array_from_callback(active.shape, replicated,
                                          lambda index: active[index]))
  return tuple(out)


def replicate(tree, mesh):
  """Places a pytree of this process's arrays replicated on every mesh device.

  Every process must pass the same values (multi-host: same key, same data).
  Typed PRNG keys are carried as their key data.
  """
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  sharding = NamedSharding(mesh, P())

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def to_host(tree):
  """numpy values of a pytree of replicated arrays (multi-host: this process's copy)."""
  import jax

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(x)

  return jax.tree.map(get, tree)


def make_sharded_chunk_runner(step: Callable, flat_size: int, mesh) -> Callable:
  """The sharded `run_chunk(state, xs, key_eps, key_noise, values, observed)`.

  `step` must be made with `axis_name=AXIS` (it psums the clipped sum and the
  diagnostics over the shards). The posterior draws and the DP noise of the
  chunk are drawn inside from keys that every device holds (replicated), so
  every replica draws the same bits and the noise is added once, after the
  psum. Outputs are replicated.
  """
  import functools
  import jax
  from jax.sharding import PartitionSpec as P
  from jtwin._chunk import chunk_body

  sharded = jax.shard_map(
      chunk_body(step, flat_size), mesh=mesh,
      in_specs=(P(), (P(None, AXIS), P(None, AXIS), P()), P(), P(), P(AXIS), P(AXIS)),
      out_specs=(P(), P(), P()))
  return functools.partial(jax.jit, donate_argnums=(0,))(sharded)
