"""The smooth fit to a numeric column's noisy 1-way histogram (jtwin.marginals.histogram)."""
import numpy as np
import pytest
from scipy import optimize, stats

from jtwin.marginals import cells as cl
from jtwin.marginals import histogram
from jtwin.marginals.measure import Measurement

SIGMA = 27.0


def _smooth_counts(cells=74, total=32_000.0):
  """A smooth, skewed density over consecutive cells, like ages 17 to 90."""
  x = (np.arange(cells) + 0.5) / cells
  p = stats.gamma(a=3.0, scale=0.12).pdf(x + 0.1) + 0.05
  return total * p / p.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smooth_fit_removes_most_of_the_noise_of_a_smooth_density(seed):
  truth = _smooth_counts()
  rng = np.random.default_rng(seed)
  noisy = truth + rng.normal(0, SIGMA, truth.shape)
  fit = histogram.smooth_histogram(noisy, np.full_like(noisy, SIGMA**2), np.ones_like(noisy),
                                   weight=10.0)
  assert fit.accepted
  # chi^2 of a fit that follows the truth is about one per cell
  assert 0.3 * len(truth) < fit.chi2 < histogram.ACCEPT * len(truth)
  err_fit = np.sum((fit.counts - truth) ** 2)
  err_noisy = np.sum((noisy - truth) ** 2)
  assert err_fit < 0.35 * err_noisy       # about 0.18 on average over seeds
  # sums over a few cells (what a coarser scorer sees) are no worse
  sums = lambda v: np.add.reduceat(v, np.arange(0, len(v), 4))
  assert np.abs(sums(fit.counts) - sums(truth)).mean() < np.abs(sums(noisy) - sums(truth)).mean()
  assert fit.counts.sum() == pytest.approx(noisy.sum(), rel=0.01)


def _hours_like(cells=99):
  """Spikes at every fifth value over a thin smooth floor, and 40 hours a week."""
  base = _smooth_counts(cells, 8_000.0)
  t = 0.05 * base
  t[4::5] += 4.0 * base[4::5]
  t[39] += 12_000.0
  return t


def test_one_spike_survives_the_robust_penalty():
  truth = _smooth_counts(60, 20_000.0)
  truth[25] += 12_000.0
  noisy = truth + np.random.default_rng(0).normal(0, SIGMA, truth.shape)
  fit = histogram.smooth_histogram(noisy, np.full_like(noisy, SIGMA**2), np.ones_like(noisy),
                                   weight=10.0)
  assert fit.accepted
  assert abs(fit.counts[25] - truth[25]) < 3 * SIGMA


@pytest.mark.parametrize("seed", [0, 1])
def test_a_spiky_histogram_is_rejected(seed):
  truth = _hours_like()
  noisy = truth + np.random.default_rng(seed).normal(0, SIGMA, truth.shape)
  fit = histogram.smooth_histogram(noisy, np.full_like(noisy, SIGMA**2), np.ones_like(noisy),
                                   weight=10.0)
  assert not fit.accepted and fit.chi2 > histogram.ACCEPT * len(truth)


def test_widths_make_the_density_smooth_not_the_counts():
  # equal density over cells of widths 1, 2, 1, 2, ...: counts alternate, density is flat
  width = np.tile([1.0, 2.0], 20)
  truth = 300.0 * width
  fit = histogram.smooth_histogram(truth, np.full_like(truth, SIGMA**2), width, weight=10.0)
  assert fit.accepted
  np.testing.assert_allclose(fit.counts, truth, rtol=0.02)
  assert fit.chi2 < 1.0


@pytest.mark.parametrize("weight, scale", [(10.0, 0.1), (1.0, 0.3)])
def test_objective_gradient_matches_finite_differences(weight, scale):
  rng = np.random.default_rng(3)
  y = _smooth_counts(12) + rng.normal(0, SIGMA, 12)
  var = np.full(12, SIGMA**2) * rng.uniform(1, 3, 12)
  w = rng.uniform(0.5, 2.0, 12)
  l0 = np.log(np.maximum(y, 30.0) / w) + rng.normal(0, 0.3, 12)
  coef = histogram._second_differences(w)
  f = lambda l: histogram._objective(l, y, var, w, weight, scale, coef)[0]
  g = lambda l: histogram._objective(l, y, var, w, weight, scale, coef)[1]
  assert optimize.check_grad(f, g, l0) < 1e-5 * max(1.0, np.linalg.norm(g(l0)))


def _numeric_cell(values, missing=False, merged=()):
  edges = tuple(float(v) for v in values) + (float(values[-1]) + 1,)
  groups = [(i,) for i in range(len(values))]
  for run in merged:                 # merge consecutive base cells into one group
    groups = [g for g in groups if g[0] not in run] + [tuple(run)]
  groups.sort()
  return cl.CellColumn(name="age", kind="numeric", edges=edges, point=(True,) * len(values),
                       integer=True, missing=missing, groups=tuple(groups),
                       weights=tuple((1.0 / len(g),) * len(g) for g in groups))


def test_smooth_one_way_touches_only_accepted_numeric_columns():
  rng = np.random.default_rng(0)
  age = _numeric_cell(list(range(17, 57)), missing=True, merged=[(36, 37, 38, 39)])
  width = histogram._widths(age)
  assert width.tolist() == [1.0] * 36 + [4.0]
  truth = _smooth_counts(40)
  smooth = np.concatenate([truth[:36], [truth[36:].sum()], [500.0]])
  noisy_age = smooth + rng.normal(0, SIGMA, smooth.shape) * np.sqrt([1.0] * 36 + [4.0, 1.0])
  var_age = SIGMA**2 * np.array([1.0] * 36 + [4.0, 1.0])
  hours = _numeric_cell(list(range(1, 100)))
  spiky = _hours_like() + rng.normal(0, SIGMA, 99)
  few = _numeric_cell(list(range(5)))
  cat = cl.CellColumn(name="sex", kind="category", labels=("F", "M"), groups=((0,), (1,)),
                      weights=((1.0,), (1.0,)))
  ms = [Measurement((0,), noisy_age, var_age), Measurement((1,), spiky, np.full(99, SIGMA**2)),
        Measurement((2,), np.array([5.0, -3.0, 40.0, 2.0, 9.0]), np.full(5, SIGMA**2)),
        Measurement((3,), np.array([100.0, -5.0]), np.full(2, SIGMA**2))]
  out, smoothed = histogram.smooth_one_way((age, hours, few, cat), ms, 10.0)
  assert smoothed == ["age"]
  assert out[0].noisy[-1] == noisy_age[-1]                       # the missing cell as it was
  assert not np.allclose(out[0].noisy[:-1], noisy_age[:-1])
  assert np.sum((out[0].noisy[:-1] - smooth[:-1]) ** 2) < np.sum((noisy_age[:-1] - smooth[:-1]) ** 2)
  for a, b in zip(out[1:], ms[1:]):
    assert a is b                                                 # rejected, too few cells, category
  unchanged, none = histogram.smooth_one_way((age, hours, few, cat), ms, 0.0)
  assert none == [] and all(a is b for a, b in zip(unchanged, ms))


@pytest.mark.parametrize("points, eligible", [
    ((True,) * 20, True),
    ((False,) * 4 + (True,) * 16, True),          # DP-domain tail intervals, then one cell per value
    ((False,) * 6 + (True,) * 14, False),
    ((False,) * 20, False),                        # quantile bins
])
def test_only_columns_of_single_values_are_tried(points, eligible):
  cell = cl.CellColumn(name="x", kind="numeric", edges=tuple(float(i) for i in range(21)),
                       point=points, groups=tuple((i,) for i in range(20)),
                       weights=tuple((1.0,) for _ in range(20)))
  assert histogram._one_per_value(cell) is eligible
  truth = _smooth_counts(20, 8_000.0)
  noisy = truth + np.random.default_rng(0).normal(0, SIGMA, 20)
  m = Measurement((0,), noisy, np.full(20, SIGMA**2))
  out, smoothed = histogram.smooth_one_way((cell,), [m], 10.0)
  assert (smoothed == ["x"]) is eligible
  assert (out[0] is m) is not eligible


def test_second_differences_are_plain_for_equal_widths_and_exact_for_quadratics():
  np.testing.assert_allclose(histogram._second_differences(np.full(6, 3.0)),
                             np.tile([[1.0], [-2.0], [1.0]], 4))
  width = np.array([1.0, 1.0, 3.0, 1.0, 7.0, 2.0])
  centre = np.cumsum(width) - width / 2
  coef = histogram._second_differences(width)
  unit = np.median(np.diff(centre)) ** 2
  for f, second in [(lambda t: 2.0 + 0.5 * t, 0.0), (lambda t: 0.3 * t * t - t, 0.6)]:
    v = f(centre)
    d2 = coef[0] * v[:-2] + coef[1] * v[1:-1] + coef[2] * v[2:]
    np.testing.assert_allclose(d2, second * unit, atol=1e-12)
