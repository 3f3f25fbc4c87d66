"""Cells: building, encoding, decoding and compression."""
import numpy as np
import pandas as pd
import pytest

from jtwin import data as jdata
from jtwin.marginals import cells as cl
from jtwin.spec import parse_model_text

MODEL = """
color : Categorical ; categories = blue, green, red ; missing
hours : Categorical ; bins = 0, 10, 20, 40 ; integer ; missing = no
big   : Categorical ; bins = 0, 1000, 5000, 100000 ; integer ; missing = no
score : Normal
count : Poisson ; bounds = 0, 9
"""


def _frame(n=400, seed=0):
  rng = np.random.default_rng(seed)
  color = rng.choice(["blue", "green", "red", None], n, p=[0.5, 0.3, 0.15, 0.05])
  return pd.DataFrame({
      "color": color, "hours": rng.integers(0, 41, n), "big": rng.integers(0, 100000, n),
      "score": rng.normal(size=n), "count": rng.poisson(2.0, n).clip(0, 9)})


def _build(frame):
  spec = parse_model_text(MODEL)
  domain = jdata.resolve_domain(frame, spec)
  return cl.build_cells(frame, spec, domain, num_bins=8), domain


def test_cells_per_column_kind():
  cells, _ = _build(_frame())
  color, hours, big, score, count = cells
  assert color.kind == "category" and color.num_cells == 3 and color.size == 4
  assert hours.num_cells == 41 and all(hours.point)          # one cell per integer 0..40
  assert big.num_cells == 12 and not any(big.point)          # declared bins cut in 4
  assert big.bins == (0.0, 1000.0, 5000.0, 100000.0)
  assert score.num_cells == 8 + 6 and "quantile" in " ".join(score.from_data)  # + tail bins
  assert count.num_cells == 10 and all(count.point)         # declared bounds 0..9


def test_encode_decode_round_trip_of_exact_cells():
  frame = _frame()
  cells, domain = _build(frame)
  codes = cl.encode_cells(frame, cells, domain)
  out = cl.decode_cells(codes, np.ones_like(codes, bool), cells, np.random.default_rng(0))
  same = (out["color"] == frame["color"]) | (out["color"].isna() & frame["color"].isna())
  assert same.all()
  np.testing.assert_array_equal(out["hours"].to_numpy(), frame["hours"].to_numpy())
  np.testing.assert_array_equal(out["count"].to_numpy(), frame["count"].to_numpy())
  # binned: the value lies in the same bin
  edges = np.array(cells[2].edges)
  same = np.searchsorted(edges, out["big"], "right") == np.searchsorted(edges, frame["big"], "right")
  assert same.all()
  assert out["color"].isna().sum() == frame["color"].isna().sum()


def test_compress_merges_rare_categories_and_runs():
  cells, _ = _build(_frame())
  color, hours = cells[0], cells[1]
  y_color = np.array([100.0, 5.0, 3.0, 7.0])         # green, red rare; missing cell last
  y_hours = np.r_[np.full(20, 1.0), np.full(21, 50.0)]
  new, maps = cl.compress([color, hours], [y_color, y_hours], threshold=10.0)
  assert new[0].groups == ((0,), (1, 2))
  assert maps[0].shape == (3, 4) and maps[0][-1, -1] == 1  # missing cell stays
  np.testing.assert_allclose(maps[0] @ y_color, [100.0, 8.0, 7.0])
  assert sum(len(g) for g in new[1].groups) == 41
  assert all(len(g) == 1 for g in new[1].groups[-20:])     # dense cells stay alone
  # within a merged cell, members are drawn by their noisy counts
  w = np.asarray(new[0].weights[1])
  np.testing.assert_allclose(w, [5 / 8, 3 / 8], atol=1e-4)
  draws = cl._draw_members(np.ones(20000, int), new[0], np.random.default_rng(1))
  assert abs(np.mean(draws == 1) - 5 / 8) < 0.02


def test_compress_keeps_two_cells():
  cells, _ = _build(_frame())
  new, _ = cl.compress([cells[0]], [np.array([1.0, 1.0, 1.0, 0.0])], threshold=10.0)
  assert new[0].num_cells >= 2


def test_cell_column_dict_round_trip():
  cells, _ = _build(_frame())
  for c in cells:
    assert cl.CellColumn.from_dict(c.to_dict()) == c



def test_weak_runs_join_a_neighbour_and_empty_bins_are_not_drawn():
  cells, _ = _build(_frame())
  big = cells[2]                                  # interval (non-point) cells
  assert not any(big.point)
  m = big.num_cells
  # real mass up to cell m - 7; the last 6 cells are empty, but their noise
  # (+10.5 each) adds up to the threshold of 30 every 3 cells
  y = np.zeros(m + int(big.missing))
  y[: m - 6] = 200.0
  y[m - 6: m] = 10.5
  plain, _ = cl.compress([big], [y], threshold=30.0)
  assert plain[0].groups[-2:] == ((m - 6, m - 5, m - 4), (m - 3, m - 2, m - 1))  # noise cells
  new, maps = cl.compress([big], [y], threshold=30.0, noise_sd=10.0)
  assert new[0].groups[-1] == tuple(range(m - 7, m))   # joined to the last real cell
  w = np.asarray(new[0].weights[-1])
  assert w[1:].sum() < 0.02                          # 10.5 - 10 each: rarely drawn
  np.testing.assert_allclose((maps[0] @ y).sum(), y.sum())
  # categories keep their noisy counts as weights
  color = cells[0]
  new, _ = cl.compress([color], [np.array([100.0, 5.0, 3.0, 7.0])], threshold=10.0,
                       noise_sd=4.0)
  np.testing.assert_allclose(new[0].weights[1], [5 / 8, 3 / 8], atol=1e-4)


@pytest.mark.parametrize("runs,y,expected", [
    ([[0], [1], [2]], [50.0, 50.0, 50.0], [[0], [1], [2]]),
    ([[0], [1, 2]], [50.0, 20.0, 20.0], [[0, 1, 2]]),           # 40 < 30 sqrt(2): joins [0]
    ([[0, 1], [2], [3]], [20.0, 20.0, 50.0, 50.0], [[0, 1, 2], [3]]),   # the first joins the next
])
def test_join_weak_runs(runs, y, expected):
  assert cl._join_weak_runs(runs, np.asarray(y), 30.0) == expected


def test_run_weights_replace_a_merged_numeric_runs_weights_only():
  """`compress(run_weights=...)`: the callable's weights for numeric runs (None
  keeps the clip rule); categories never ask it."""
  cells, _ = _build(_frame())
  color, hours = cells[0], cells[1]
  y_hours = np.zeros(hours.size)
  y_hours[:5] = 100.0
  y_hours[5:41] = np.tile([3.0, -2.0, 1.0, 0.0], 9)      # a long rare tail: one merged run
  asked = []

  def choose(j, run, clip):
    asked.append((j, list(run)))
    np.testing.assert_allclose(clip, np.maximum(y_hours[list(run)], 0.0))  # one-value cells
    if j == 1 and len(run) > 5:
      return np.linspace(2.0, 0.0, len(run))              # decreasing, last one 0
    return None

  y_color = np.array([100.0, 5.0, 3.0, 7.0])
  new, _ = cl.compress([color, hours], [y_color, y_hours], threshold=10.0, run_weights=choose)
  assert all(j == 1 for j, _ in asked)                    # categories: never asked
  plain, _ = cl.compress([color, hours], [y_color, y_hours], threshold=10.0)
  tail = [g for g, members in enumerate(new[1].groups) if len(members) > 5]
  assert len(tail) == 1
  members = new[1].groups[tail[0]]
  w = np.asarray(new[1].weights[tail[0]])
  expected = np.linspace(2.0, 0.0, len(members))
  np.testing.assert_allclose(w, expected / expected.sum(), atol=1e-5)
  # the other runs (None) and the category are as without the callable
  for g, members in enumerate(new[1].groups):
    if g != tail[0]:
      np.testing.assert_allclose(new[1].weights[g], plain[1].weights[g])
  assert new[0] == plain[0]
