"""Decoding a merged numeric run: the smooth fit's sensitivity, SURE, and the choice."""
import numpy as np
import pytest
from scipy.optimize import minimize

from jtwin.marginals import histogram
from jtwin.marginals import run_decoding as rd


def _tight_fit(y, var, width, weight, start):
  """The smooth fit's optimum to high precision (for finite differences)."""
  w = width / width.mean()
  coef = histogram._second_differences(w)
  out = minimize(histogram._objective, np.log(np.maximum(start, 1e-3) / w),
                 args=(y, var, w, weight, histogram.SCALE, coef), jac=True, method="L-BFGS-B",
                 options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-11})
  return w * np.exp(out.x)


@pytest.mark.parametrize("unequal", [False, True])
def test_fit_sensitivity_matches_finite_differences(unequal):
  rng = np.random.default_rng(0)
  k = 14
  truth = 400.0 * np.exp(-np.arange(k) / 3.0) + 5.0
  y = truth + rng.normal(0.0, 40.0, k)
  var = np.full(k, 1600.0)
  width = rng.uniform(1.0, 3.0, k) if unequal else np.ones(k)
  fit = _tight_fit(y, var, width, 10.0, np.maximum(y, 40.0))
  sens = histogram.fit_sensitivity(fit, y, var, width, weight=10.0)
  h = 0.5
  numeric = np.stack([(_tight_fit(y + h * e, var, width, 10.0, fit)
                       - _tight_fit(y - h * e, var, width, 10.0, fit)) / (2 * h)
                      for e in np.eye(k)], axis=1)
  np.testing.assert_allclose(sens, numeric, atol=2e-3)
  assert 0.5 < np.trace(sens) < k                 # a smoother: few degrees of freedom


def test_fit_sensitivity_is_nan_away_from_a_minimum():
  y = np.array([50.0, 60.0, 55.0, 40.0])
  var = np.full(4, 100.0)
  # a start far from the optimum has an indefinite Hessian (the data term's
  # curvature x^2 - (y - x) x is negative where x is much below y / 2)
  bad = np.array([1.0, 1.0, 1.0, 1.0])
  assert np.all(np.isnan(histogram.fit_sensitivity(bad, y, var, np.ones(4), weight=10.0)))


def test_sure_is_unbiased_for_the_clip_and_the_smooth_estimate():
  """Over noise draws, the mean SURE equals the mean squared error."""
  rng = np.random.default_rng(1)
  k, sd = 12, 30.0
  truth = np.concatenate([[240.0, 150.0, 90.0, 50.0, 25.0], np.zeros(k - 5)])
  var = np.full(k, sd * sd)
  sure_clip, err_clip, sure_smooth, err_smooth = [], [], [], []
  for _ in range(300):
    y = truth + rng.normal(0.0, sd, k)
    clip = np.maximum(y, 0.0)
    sure_clip.append(rd._sure(clip, y, var, (y > 0).astype(float)))
    err_clip.append(np.sum((clip - truth) ** 2))
    fit = histogram.smooth_histogram(y, var, np.ones(k), weight=10.0, newton=True)
    slope = np.diag(histogram.fit_sensitivity(fit.counts, y, var, np.ones(k), weight=10.0))
    if np.all(np.isfinite(slope)):
      sure_smooth.append(rd._sure(fit.counts, y, var, slope))
      err_smooth.append(np.sum((fit.counts - truth) ** 2))
  assert len(sure_smooth) > 250
  # standard errors of the means are about 4% of them here
  np.testing.assert_allclose(np.mean(sure_clip), np.mean(err_clip), rtol=0.12)
  np.testing.assert_allclose(np.mean(sure_smooth), np.mean(err_smooth), rtol=0.15)
  assert np.mean(err_smooth) < np.mean(err_clip)    # a smooth tail: the fit is better


def _tvd(w, truth):
  return 0.5 * np.abs(w / w.sum() - truth / truth.sum()).sum()


def test_a_noisy_sparse_tail_is_decoded_smoothly_and_closer_to_the_truth():
  """The loans-like case: a long run whose real rows sit in its first cells."""
  rng = np.random.default_rng(2)
  k, sd = 60, 75.0
  truth = 500.0 * np.exp(-np.arange(k) / 4.0)
  var, width = np.full(k, sd * sd), np.ones(k)
  shares, tvd_clip, tvd_out = [], [], []
  for _ in range(20):
    y = truth + rng.normal(0.0, sd, k)
    out = rd.decode_run(y, var, width, np.maximum(y, 0.0), weight=10.0)
    shares.append(out.share)
    assert out.sure <= out.sure_clip
    tvd_clip.append(_tvd(np.maximum(y, 0.0), truth))
    tvd_out.append(_tvd(out.weights, truth))
  assert np.mean(shares) > 0.7
  assert np.mean(tvd_out) < 0.6 * np.mean(tvd_clip)


def test_spikes_keep_their_own_counts_and_heaping_keeps_the_clip():
  """Heaped values (every fifth cell) among empty cells: a smooth fit would
  spread them; SURE keeps the clipped counts, and a spike is never flattened."""
  rng = np.random.default_rng(3)
  k, sd = 25, 20.0
  truth = np.where(np.arange(k) % 5 == 0, 300.0, 0.0)
  var, width = np.full(k, sd * sd), np.ones(k)
  kept = 0
  for _ in range(10):
    y = truth + rng.normal(0.0, sd, k)
    out = rd.decode_run(y, var, width, np.maximum(y, 0.0), weight=10.0)
    spike = y > rd.SPIKE_SIGMAS * sd
    np.testing.assert_allclose(out.weights[spike], y[spike])
    assert out.share < 0.5 and out.sure <= out.sure_clip
    kept += out.share == 0.0
  assert kept >= 8                                    # mostly the clip alone


@pytest.mark.parametrize("case", ["weight0", "short"])
def test_without_a_fit_the_clip_is_kept(case):
  y = np.array([120.0, -30.0, 40.0, 10.0]) if case == "weight0" else np.array([120.0, -30.0])
  clip = np.maximum(y - 10.0, 0.0)                       # interval cells: minus sd
  out = rd.decode_run(y, np.full(len(y), 100.0), np.ones(len(y)), clip,
                      weight=0.0 if case == "weight0" else 10.0)
  assert out.share == 0.0 and out.sure == out.sure_clip
  np.testing.assert_allclose(out.weights, clip)
  assert out.sure_clip == pytest.approx(rd._sure(clip, y, np.full(len(y), 100.0),
                                                 (clip > 0).astype(float)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_newton_reaches_a_minimum_no_worse_than_lbfgs(seed):
  rng = np.random.default_rng(seed)
  k = 50
  truth = np.concatenate([600.0 * np.exp(-np.arange(k - 10) / 5.0), np.zeros(10)])
  y = truth + rng.normal(0.0, 70.0, k)
  var, width = np.full(k, 4900.0), np.r_[np.ones(k - 1), 40.0]
  w = width / width.mean()
  coef = histogram._second_differences(w)
  value = lambda counts: histogram._objective(np.log(counts / w), y, var, w, 10.0,
                                              histogram.SCALE, coef)
  newton = histogram.smooth_histogram(y, var, width, weight=10.0, newton=True)
  lbfgs = histogram.smooth_histogram(y, var, width, weight=10.0)
  f_newton, grad = value(newton.counts)
  assert f_newton <= value(lbfgs.counts)[0] + 1e-9
  assert np.max(np.abs(grad)) < 1e-6 * (1.0 + abs(f_newton))
  assert np.all(np.isfinite(histogram.fit_sensitivity(newton.counts, y, var, width,
                                                      weight=10.0)))   # a proper minimum


def test_the_blend_minimises_sure_over_the_share():
  """The closed-form share is the minimiser of SURE over [0, 1] (a grid check)."""
  rng = np.random.default_rng(4)
  k, sd = 30, 50.0
  truth = np.r_[800.0, 300.0 * np.exp(-np.arange(k - 1) / 6.0)]
  y = truth + rng.normal(0.0, sd, k)
  var, width = np.full(k, sd * sd), np.ones(k)
  out = rd.decode_run(y, var, width, np.maximum(y, 0.0), weight=10.0)
  assert 0.0 < out.share <= 1.0
  fit = histogram.smooth_histogram(y, var, width, weight=10.0, newton=True)
  slope = np.diag(histogram.fit_sensitivity(fit.counts, y, var, width, weight=10.0))
  spike = y > rd.SPIKE_SIGMAS * sd
  clip, above = np.maximum(y, 0.0), (y > 0).astype(float)
  smooth = np.where(spike, clip, fit.counts)
  grid = np.linspace(0.0, 1.0, 201)
  sures = [rd._sure(clip + g * (smooth - clip), y, var,
                    above + g * np.where(spike, 0.0, slope - above)) for g in grid]
  assert out.sure <= min(sures) + 1e-6 * abs(min(sures))
  assert abs(out.share - grid[int(np.argmin(sures))]) <= 0.005 + 1e-9
  np.testing.assert_allclose(out.weights, clip + out.share * (smooth - clip))
