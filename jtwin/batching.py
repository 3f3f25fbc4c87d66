"""Poisson subsampling on the host, padded to a static shape.

Every row joins every step's batch independently with probability q (the
sampler the accountant assumes). Rows are drawn as a Bernoulli process via
i.i.d. Geometric(q) gaps in float64 numpy, which is exactly equivalent to N
independent Bernoulli(q) coin flips but costs O(qN) per step instead of O(N).

Batches are padded to `max_batch` with index 0 and mask False. Nothing is ever
truncated: if a step's Poisson batch is larger than `max_batch` (about 1e-8
per step with the default size), `draw` returns a wider chunk and the trainer
re-pads (one extra compilation) instead of dropping rows. The padded shape depends only on the public N and q.

Privacy: the batch indices are secret (amplification by subsampling relies
on it); they are never logged or returned to the user.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


def default_max_batch(num_examples: int, sampling_prob: float) -> int:
  """Padded batch size: mean + 5.5 standard deviations + 4, at most N.

  P[Binomial(N, q) > mean + 5.5 sd + 4] is about 1e-8 per step, so a default
  run (2e4 steps) re-pads (one extra compilation, nothing dropped) with
  probability about 1e-3; padding costs compute on every step, so a tighter
  bound is the better trade.
  """
  mean = num_examples * sampling_prob
  sd = math.sqrt(num_examples * sampling_prob * (1.0 - sampling_prob))
  return int(max(1, min(num_examples, math.ceil(mean + 5.5 * sd + 4.0))))


class Batches(NamedTuple):
  """A chunk of padded Poisson batches.

  Attributes:
    indices: int32 [S, W] row indices (0 where padding), W >= the requested
      `max_batch`; W is larger only if some realised batch was larger (then
      the caller must re-pad to W; nothing is ever dropped or redrawn).
    mask: bool [S, W], True for real rows.
  """
  indices: np.ndarray
  mask: np.ndarray


def draw(rng: np.random.Generator, num_examples: int, sampling_prob: float,
         num_steps: int, max_batch: int) -> Batches:
  """Draws `num_steps` independent Poisson batches, padded to `max_batch`.

  Args:
    rng: a numpy Generator seeded from the run's secret root.
    num_examples: N.
    sampling_prob: q in (0, 1].
    num_steps: S, batches to draw.
    max_batch: B, the padded size.

  Returns:
    `Batches` of width max(B, largest realised batch).
  """
  if sampling_prob >= 1.0:
    width = max(max_batch, num_examples)
    idx = np.broadcast_to(np.arange(num_examples, dtype=np.int32), (num_steps, num_examples))
    pad = width - num_examples
    return Batches(np.pad(idx, ((0, 0), (0, pad))).astype(np.int32),
                   np.pad(np.ones(idx.shape, bool), ((0, 0), (0, pad))))
  width = max_batch + 1
  # positions[s, j] = index of the j-th selected row at step s (0-based).
  gaps = rng.geometric(sampling_prob, size=(num_steps, width))
  positions = np.cumsum(gaps, axis=1) - 1
  overflow = np.nonzero(positions[:, -1] < num_examples)[0]
  rows = [p[p < num_examples] for p in positions[overflow]]
  # A batch larger than B: continue its Bernoulli process to the end (exact).
  for j, row in enumerate(rows):
    extra, last = [], int(row[-1])
    while True:
      last += int(rng.geometric(sampling_prob))
      if last >= num_examples:
        break
      extra.append(last)
    rows[j] = np.concatenate([row, np.asarray(extra, row.dtype)])
  positions = positions[:, :-1]
  if rows:
    new_width = max(max_batch, max(len(r) for r in rows))
    positions = np.pad(positions, ((0, 0), (0, new_width - max_batch)),
                       constant_values=num_examples)
    for j, row in zip(overflow, rows):
      positions[j, :] = num_examples
      positions[j, : len(row)] = row
  mask = positions < num_examples
  return Batches(np.where(mask, positions, 0).astype(np.int32), mask)
