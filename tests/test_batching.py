"""Host-side Poisson subsampling: inclusion law, padding, no truncation."""
import math

import numpy as np
import pytest
from scipy import stats

from jtwin import batching


def _inclusion(batches, num_examples):
  steps = batches.indices.shape[0]
  inc = np.zeros((steps, num_examples), bool)
  rows = np.repeat(np.arange(steps), batches.indices.shape[1])
  sel = batches.mask.ravel()
  inc[rows[sel], batches.indices.ravel()[sel]] = True
  # No index is selected twice in one step.
  assert np.all(inc.sum(1) == batches.mask.sum(1))
  return inc


def _check_structure(batches, num_examples, max_batch):
  idx, mask = batches.indices, batches.mask
  assert idx.dtype == np.int32 and mask.dtype == np.bool_
  assert idx.shape == mask.shape and idx.shape[1] >= max_batch
  assert np.all(idx[~mask] == 0)                      # padding convention
  assert np.all((idx >= 0) & (idx < max(num_examples, 1)))
  # Real rows first, sorted and distinct within a step.
  for i, m in zip(idx, mask):
    k = int(m.sum())
    assert np.all(m[:k]) and not np.any(m[k:])
    assert np.all(np.diff(i[:k]) > 0)


@pytest.mark.parametrize("num_examples,q", [(200, 0.1), (50, 0.5), (300, 0.02)])
def test_inclusion_frequency_is_q_for_every_index(num_examples, q):
  steps = 4000
  rng = np.random.default_rng(0)
  mb = batching.default_max_batch(num_examples, q)
  b = batching.draw(rng, num_examples, q, steps, mb)
  _check_structure(b, num_examples, mb)
  inc = _inclusion(b, num_examples)
  counts = inc.sum(0)
  var = steps * q * (1 - q)
  # Chi-square over all indices, and no index more than 5 sd away.
  chi2 = np.sum((counts - steps * q) ** 2 / var)
  assert stats.chi2.sf(chi2, num_examples) > 1e-3, chi2
  assert np.max(np.abs(counts - steps * q)) < 5 * math.sqrt(var)
  # Pairwise inclusion ~ q^2 (independence), incl. neighbours and the last index.
  for a, c in ((0, 1), (0, num_examples - 1), (num_examples // 2, num_examples // 2 + 1),
               (num_examples - 2, num_examples - 1)):
    both = np.sum(inc[:, a] & inc[:, c])
    p2 = q * q
    assert abs(both - steps * p2) < 5 * math.sqrt(steps * p2 * (1 - p2)), (a, c, both)
  # Batch size ~ Binomial(N, q): mean and variance.
  sizes = b.mask.sum(1).astype(float)
  mean, var_b = num_examples * q, num_examples * q * (1 - q)
  assert abs(sizes.mean() - mean) < 5 * math.sqrt(var_b / steps)
  assert abs(sizes.var() - var_b) < 5 * var_b * math.sqrt(2.0 / steps) + 1e-9


def test_consecutive_steps_are_independent():
  rng = np.random.default_rng(1)
  b = batching.draw(rng, 100, 0.2, 3000, batching.default_max_batch(100, 0.2))
  inc = _inclusion(b, 100).astype(float)
  sizes = inc.sum(1)
  r = np.corrcoef(sizes[:-1], sizes[1:])[0, 1]
  assert abs(r) < 5 / math.sqrt(len(sizes))
  # Row 3 at step t vs step t+1.
  both = np.sum(inc[:-1, 3] * inc[1:, 3])
  n = len(sizes) - 1
  assert abs(both - n * 0.04) < 5 * math.sqrt(n * 0.04 * 0.96)


def test_empty_batches_are_all_false_masks():
  rng = np.random.default_rng(2)
  b = batching.draw(rng, 10, 1e-3, 500, 4)
  _check_structure(b, 10, 4)
  empty = ~b.mask.any(1)
  assert empty.sum() > 400                              # (1 - 1e-3)^10 ~ 0.99
  assert np.all(b.indices[empty] == 0)
  assert b.indices.shape == (500, 4)


@pytest.mark.parametrize("max_batch", [1, 2, 3])
def test_batches_larger_than_max_batch_are_not_truncated(max_batch):
  """A tiny max_batch: every selected row appears, the width grows, and the law is
  still Poisson (the continuation past max_batch is exact)."""
  n, q, steps = 60, 0.5, 2000
  rng = np.random.default_rng(3)
  b = batching.draw(rng, n, q, steps, max_batch)
  sizes = b.mask.sum(1)
  assert b.indices.shape[1] == max(max_batch, sizes.max())
  assert sizes.max() > max_batch
  _check_structure(b, n, max_batch)
  inc = _inclusion(b, n)
  counts = inc.sum(0)
  var = steps * q * (1 - q)
  assert np.max(np.abs(counts - steps * q)) < 5 * math.sqrt(var), counts
  assert abs(sizes.mean() - n * q) < 5 * math.sqrt(n * q * (1 - q) / steps)
  # The tail rows are reached too (not cut at the padded width).
  assert counts[-1] > 0.4 * steps


def test_rare_overflow_with_default_width_only_widens():
  rng = np.random.default_rng(4)
  n, q = 40, 0.3
  b = batching.draw(rng, n, q, 300, 12)                 # mean 12: overflow is common
  sizes = b.mask.sum(1)
  assert b.indices.shape[1] == max(12, sizes.max())
  assert np.sum(sizes > 12) > 50
  _check_structure(b, n, 12)


@pytest.mark.parametrize("max_batch", [5, 10, 20])
def test_q_one_selects_all_rows(max_batch):
  b = batching.draw(np.random.default_rng(5), 10, 1.0, 3, max_batch)
  assert b.indices.shape == (3, max(10, max_batch))
  assert np.all(b.mask[:, :10]) and not np.any(b.mask[:, 10:])
  np.testing.assert_array_equal(b.indices[:, :10], np.broadcast_to(np.arange(10), (3, 10)))
  assert np.all(b.indices[:, 10:] == 0)


@pytest.mark.parametrize("num_examples,q", [(1, 0.5), (10, 1e-4), (1000, 0.01), (60_000, 0.003),
                                            (100, 0.99), (500, 1.0)])
def test_default_max_batch_bounds(num_examples, q):
  m = batching.default_max_batch(num_examples, q)
  mean = num_examples * q
  sd = math.sqrt(num_examples * q * (1 - q))
  assert isinstance(m, int)
  assert 1 <= m <= num_examples
  assert m >= math.ceil(mean) - 1e-9
  # Not wasteful: at most mean + 8 sd + 8 ...
  assert m <= mean + 8 * sd + 8
  # ... and an overflow (re-padding, nothing dropped) is rare: documented ~1e-8/step.
  assert stats.binom.sf(m, num_examples, q) < 1e-7


def test_same_seed_reproduces_and_different_seeds_differ():
  draw = lambda seed: batching.draw(np.random.default_rng(seed), 500, 0.05, 20, 40)
  a, b, c = draw(7), draw(7), draw(8)
  np.testing.assert_array_equal(a.indices, b.indices)
  np.testing.assert_array_equal(a.mask, b.mask)
  assert not np.array_equal(a.mask, c.mask) or not np.array_equal(a.indices, c.indices)
