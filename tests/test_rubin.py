"""Rubin's rules for fully synthetic data: formulas, fallbacks and coverage."""
import numpy as np
import pytest
from scipy import stats

from jtwin import rubin


def test_combine_matches_the_formulas():
  q = np.array([1.0, 1.4, 0.8, 1.2])
  u = np.array([0.01, 0.02, 0.015, 0.012])
  r = rubin.combine(q, u)
  m = 4
  b = np.var(q, ddof=1)
  assert r.estimate == pytest.approx(q.mean())
  assert r.between == pytest.approx(b)
  assert r.within == pytest.approx(u.mean())
  assert r.variance == pytest.approx((1 + 1 / m) * b - u.mean())
  assert r.dof == pytest.approx((m - 1) * (1 - u.mean() / ((1 + 1 / m) * b)) ** 2)
  lo, hi = rubin.confidence_interval(q, u, 0.9)
  half = stats.t.ppf(0.95, r.dof) * np.sqrt(r.variance)
  assert (lo, hi) == pytest.approx((q.mean() - half, q.mean() + half))


def test_vectorised_over_coefficients():
  rng = np.random.default_rng(0)
  q, u = rng.normal(size=(5, 3)), rng.uniform(0.001, 0.01, size=(5, 3))
  lo, hi = rubin.confidence_interval(q, u)
  for j in range(3):
    lo_j, hi_j = rubin.confidence_interval(q[:, j], u[:, j])
    assert (lo[j], hi[j]) == pytest.approx((lo_j, hi_j))


def test_negative_variance_fallback():
  q = np.array([1.0, 1.0001, 0.9999])          # tiny between-set variance
  u = np.array([0.5, 0.5, 0.5])
  assert np.isnan(rubin.combine(q, u).variance)
  r = rubin.combine(q, u, n_synthetic=100, n_original=400)
  assert r.variance == pytest.approx(0.25 * 0.5)


def test_bad_inputs():
  with pytest.raises(ValueError, match="at least 2"):
    rubin.combine([1.0], [0.1])
  with pytest.raises(ValueError, match="one shape"):
    rubin.combine([1.0, 2.0], [0.1])
  with pytest.raises(ValueError, match="level"):
    rubin.confidence_interval([1.0, 2.0], [0.1, 0.1], level=1.5)


def test_coverage_of_a_normal_mean():
  """Synthetic sets drawn from the posterior of a normal mean cover it at ~95%."""
  rng = np.random.default_rng(1)
  reps, m, n, mu = 2000, 20, 200, 0.3
  real = rng.normal(mu, 1.0, size=(reps, n))
  post_mean, post_sd = real.mean(1), 1 / np.sqrt(n)
  draws = post_mean[:, None] + post_sd * rng.normal(size=(reps, m))
  synth = draws[..., None] + rng.normal(size=(reps, m, n))
  q, u = synth.mean(-1), synth.var(-1, ddof=1) / n
  lo, hi = rubin.confidence_interval(q.T, u.T, 0.95)
  coverage = np.mean((lo <= mu) & (mu <= hi))
  assert 0.93 <= coverage <= 0.975
