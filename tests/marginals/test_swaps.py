"""Swap refinement (`jtwin.marginals.swaps`): tables, targets and the herding itself."""
import itertools

import numpy as np
import pytest

from jtwin.marginals import balanced, swaps


def _table_loss(codes, weights, tables, order):
  """sum over column subsets of `order` and their cells of (count - N P_model)^2, brute force."""
  n, d = codes.shape
  loss = 0.0
  for cols in itertools.combinations(range(d), order):
    sizes = [tables[c].shape[1] for c in cols]
    flat = np.ravel_multi_index(tuple(codes[:, c] for c in cols), sizes)
    got = np.bincount(flat, minlength=int(np.prod(sizes))).reshape(sizes)
    probs = np.zeros(sizes)
    for k, w in enumerate(weights):
      outer = w
      for c in cols:
        outer = np.multiply.outer(outer, tables[c][k])
      probs += outer
    loss += np.sum((got - n * probs) ** 2)
  return loss


def _coarse_view(tables, coarse):
  return [np.stack([np.bincount(m, weights=row, minlength=m.max() + 1) for row in t])
          for t, m in zip(tables, coarse)]


def _model(k, sizes, seed):
  rng = np.random.default_rng(seed)
  weights = rng.dirichlet(np.ones(k))
  tables = [rng.dirichlet(np.full(c, 0.7), k) for c in sizes]
  return rng, weights, tables


def _component_rows(rng, weights, tables, n):
  per = balanced.allocate(float(n), weights, 0.5)
  comp = np.repeat(np.arange(len(weights)), per)
  codes = np.stack([(rng.random(n)[:, None] > np.cumsum(t[comp], 1)).sum(1) for t in tables], 1)
  return np.minimum(codes, [t.shape[1] - 1 for t in tables]), per


@pytest.mark.parametrize("order", [2, 3])
def test_table_counts_match_bincount(order):
  rng = np.random.default_rng(order)
  sizes = [3, 5, 2, 4]
  codes = np.stack([rng.integers(0, s, 700) for s in sizes], 1)
  layout = swaps.pair_layout(sizes) if order == 2 else swaps.triple_layout(sizes)
  flat = swaps.table_counts(layout, codes)
  assert flat.shape == (layout.total,)
  assert flat.sum() == 700 * len(layout.tables)
  for cols in itertools.combinations(range(4), order):
    size = int(np.prod([sizes[c] for c in cols]))
    want = np.bincount(np.ravel_multi_index(tuple(codes[:, c] for c in cols),
                                            [sizes[c] for c in cols]), minlength=size)
    start = layout.offset[cols]
    np.testing.assert_array_equal(flat[start:start + size], want)


def test_strides_find_the_cell_whatever_the_column_order():
  rng = np.random.default_rng(0)
  sizes = [3, 5, 2, 4, 3]
  codes = np.stack([rng.integers(0, s, 50) for s in sizes], 1)
  pairs, triples = swaps.pair_layout(sizes), swaps.triple_layout(sizes)
  base, s_i, s_j = swaps.pair_strides(pairs)
  for i, j in itertools.permutations(range(5), 2):
    cols = tuple(sorted((i, j)))
    want = pairs.offset[cols] + np.ravel_multi_index(tuple(codes[:, c] for c in cols),
                                                     [sizes[c] for c in cols])
    got = base[j, i] + codes[:, i] * s_i[j, i] + codes[:, j] * s_j[j, i]
    np.testing.assert_array_equal(got, want)
  base, s_i, s_l, s_j = swaps.triple_strides(triples)
  for m, (i, l) in enumerate(zip(*np.triu_indices(5, 1))):
    for j in set(range(5)) - {i, l}:
      cols = tuple(sorted((i, l, j)))
      want = triples.offset[cols] + np.ravel_multi_index(
          tuple(codes[:, c] for c in cols), [sizes[c] for c in cols])
      got = (base[j, m] + codes[:, i] * s_i[j, m] + codes[:, l] * s_l[j, m] +
             codes[:, j] * s_j[j, m])
      np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("order", [2, 3])
def test_expected_counts_are_the_mixtures_tables(order):
  _, weights, tables = _model(4, (3, 2, 4, 2), seed=1)
  layout = (swaps.pair_layout if order == 2 else swaps.triple_layout)([3, 2, 4, 2])
  got = swaps.expected_counts(layout, 1000, weights, tables)
  np.testing.assert_allclose(got.sum(), 1000 * len(layout.tables))
  # one cell by brute-force enumeration of the components
  cols = layout.tables[-1]
  cell = (1,) * order
  want = 1000 * sum(w * np.prod([tables[c][k, 1] for c in cols]) for k, w in enumerate(weights))
  index = layout.offset[cols] + np.ravel_multi_index(cell, [layout.sizes[c] for c in cols])
  np.testing.assert_allclose(got[index], want, rtol=1e-12)


@pytest.mark.parametrize("k,n", [(3, 600), (12, 3000)])
def test_refine_with_triples_lowers_both_losses_and_keeps_each_components_values(k, n):
  rng, weights, tables = _model(k, (4, 2, 6, 3, 5), seed=k)
  coarse = [np.arange(4), np.arange(2), np.array([0, 0, 1, 1, 2, 2]), np.arange(3),
            np.array([0, 1, 1, 2, 2])]
  codes, per = _component_rows(rng, weights, tables, n)
  out = swaps.refine(np.random.default_rng(1), codes, per, weights, tables, coarse=coarse)
  pairs_only = swaps.refine(np.random.default_rng(1), codes, per, weights, tables,
                            coarse=coarse, triple_weight=0.0)
  view = lambda c: np.stack([m[c[:, j]] for j, m in enumerate(coarse)], 1)
  coarse_tables = _coarse_view(tables, coarse)
  before3 = _table_loss(view(codes), weights, coarse_tables, 3)
  assert _table_loss(out, weights, tables, 2) < 0.6 * _table_loss(codes, weights, tables, 2)
  assert _table_loss(view(out), weights, coarse_tables, 3) < 0.7 * before3
  # the triples' term is what lowers their loss beyond what pair swaps do
  assert (_table_loss(view(out), weights, coarse_tables, 3) <
          _table_loss(view(pairs_only), weights, coarse_tables, 3))
  ends = np.cumsum(per)
  for start, end in zip(ends - per, ends):
    for j in range(codes.shape[1]):
      np.testing.assert_array_equal(np.sort(out[start:end, j]), np.sort(codes[start:end, j]))


def test_refine_falls_back_to_pairs_when_the_triples_are_too_big(monkeypatch):
  rng, weights, tables = _model(3, (4, 2, 6), seed=5)
  coarse = [np.arange(4), np.arange(2), np.arange(6)]
  codes, per = _component_rows(rng, weights, tables, 500)
  assert swaps._plan(tables, coarse, 1.0).triples is not None
  monkeypatch.setattr(swaps, "MAX_TRIPLE_CELLS", 47)            # 4 * 2 * 6 = 48 cells
  assert swaps._plan(tables, coarse, 1.0).triples is None
  out = swaps.refine(np.random.default_rng(0), codes, per, weights, tables, coarse=coarse)
  pairs = swaps.refine(np.random.default_rng(0), codes, per, weights, tables)
  np.testing.assert_array_equal(out, pairs)
  assert swaps._plan(tables, coarse, 0.0).triples is None


def test_refine_rejects_coarse_maps_that_do_not_fit():
  _, weights, tables = _model(2, (3, 2, 2), seed=0)
  with pytest.raises(ValueError, match="one map per column"):
    swaps._plan(tables, [np.arange(3), np.arange(2)], 1.0)
  with pytest.raises(ValueError, match="one entry per cell"):
    swaps._plan(tables, [np.arange(3), np.arange(2), np.arange(3)], 1.0)


def test_refine_is_reproducible_and_leaves_small_inputs_alone():
  rng, weights, tables = _model(3, (3, 3), seed=2)
  codes, per = _component_rows(rng, weights, tables, 300)
  a = swaps.refine(np.random.default_rng(9), codes, per, weights, tables)
  b = swaps.refine(np.random.default_rng(9), codes, per, weights, tables)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(swaps.refine(rng, codes, per, weights, tables, sweeps=0), codes)
  one = codes[:1]
  np.testing.assert_array_equal(swaps.refine(rng, one, [1, 0, 0], weights, tables), one)


def test_refine_herds_triples_only_while_their_work_allows(monkeypatch):
  rng, weights, tables = _model(3, (4, 2, 6), seed=6)
  coarse = [np.arange(4), np.arange(2), np.arange(6)]
  codes, per = _component_rows(rng, weights, tables, 400)
  pairs = swaps.refine(np.random.default_rng(0), codes, per, weights, tables)
  # 400 rows x 3 column pairs: 2 sweeps' worth is below MIN_TRIPLE_SWEEPS, so pairs only
  monkeypatch.setattr(swaps, "TRIPLE_WORK", 2 * 400 * 3)
  np.testing.assert_array_equal(
      swaps.refine(np.random.default_rng(0), codes, per, weights, tables, coarse=coarse), pairs)
  monkeypatch.setattr(swaps, "TRIPLE_WORK", 5 * 400 * 3)
  some = swaps.refine(np.random.default_rng(0), codes, per, weights, tables, coarse=coarse)
  assert not np.array_equal(some, pairs)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 400, 32561, 32768, 10**6 + 1])
def test_bucket_is_at_least_the_size_and_at_most_a_fifth_more(size):
  got = swaps._bucket(size)
  assert size <= got <= max(1.19 * size + 1, 2)


def test_row_counts_in_one_bucket_share_the_compiled_scan():
  rng, weights, tables = _model(4, (3, 2, 4), seed=8)
  coarse = [np.arange(3), np.arange(2), np.array([0, 0, 1, 1])]
  assert swaps._bucket(2990) == swaps._bucket(3000)
  before = swaps._herd._cache_size()
  for n in (3000, 2990):
    codes, per = _component_rows(rng, weights, tables, n)
    out = swaps.refine(np.random.default_rng(n), codes, per, weights, tables, coarse=coarse)
    assert out.shape == codes.shape
  assert swaps._herd._cache_size() - before <= 1     # one program for both sizes


def test_coarse_maps_of_results_without_cells_are_none():
  from jtwin.marginals.cells import CellColumn, coarse_maps
  assert coarse_maps(None) is None and coarse_maps([]) is None
  column = CellColumn(name="x", kind="category", labels=("a", "b", "c"),
                      groups=((0,), (1,), (2,)), weights=((1.0,), (1.0,), (1.0,)))
  from_dict = coarse_maps([column.to_dict()])
  np.testing.assert_array_equal(from_dict[0], np.arange(3))
  np.testing.assert_array_equal(coarse_maps([column])[0], from_dict[0])
