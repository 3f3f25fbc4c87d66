"""DP warm start: the Gaussian mechanism's accounting and the mixture's noisy marginals."""
import math

import jax
import numpy as np
import pytest
from scipy import stats

from jtwin import infer
from jtwin.accounting import gaussian
from jtwin.models import Feature, make_mixture_model
from jtwin.models.mixture import make_layout, warm_start


@pytest.mark.parametrize("eps,sigma", [(0.1, 40.0), (1.0, 4.0), (3.0, 1.0)])
def test_gaussian_delta_matches_closed_form(eps, sigma):
  want = stats.norm.cdf(-eps * sigma + 0.5 / sigma) - math.exp(eps) * stats.norm.cdf(-eps * sigma - 0.5 / sigma)
  assert gaussian.gaussian_delta(eps, sigma) == pytest.approx(want, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("eps,delta", [(0.1, 1e-7), (1.0, 1e-5), (0.5, 3e-6)])
def test_gaussian_calibration_is_certified_and_tight(eps, delta):
  sigma = gaussian.gaussian_noise_multiplier(eps, delta)
  assert gaussian.gaussian_delta(eps, sigma) <= delta
  assert gaussian.gaussian_delta(eps, 0.99 * sigma) > delta
  assert gaussian.gaussian_epsilon(sigma, delta) <= eps * (1 + 1e-8)
  # the classic bound sigma = sqrt(2 ln(1.25/delta)) / eps is looser (for eps < 1)
  if eps < 1:
    assert sigma <= math.sqrt(2 * math.log(1.25 / delta)) / eps


def test_gaussian_agrees_with_prv_accountant():
  from prv_accountant import GaussianMechanism, PRVAccountant
  sigma = gaussian.gaussian_noise_multiplier(0.3, 1e-6)
  acc = PRVAccountant(prvs=[GaussianMechanism(noise_multiplier=sigma)], max_self_compositions=[1],
                      eps_error=1e-3, delta_error=1e-10)
  lo, est, hi = acc.compute_epsilon(delta=1e-6, num_self_compositions=[1])
  assert lo <= 0.3 <= hi and est == pytest.approx(0.3, abs=2e-3)


def test_privacy_plan_splits_and_adds_up():
  plain = infer.privacy_plan(10000, epsilon=1.0, delta=1e-5, sampling_ratio=0.01,
                             num_epochs=20, clipping_threshold=1.0)
  warm = infer.privacy_plan(10000, epsilon=1.0, delta=1e-5, sampling_ratio=0.01,
                            num_epochs=20, clipping_threshold=1.0, warm_start=0.2)
  assert warm.epsilon <= 1.0 and warm.delta == 1e-5
  assert warm.warm_start_epsilon == pytest.approx(0.2, rel=1e-6)
  assert warm.warm_start_delta == pytest.approx(2e-6)
  assert warm.noise_multiplier > plain.noise_multiplier          # DP-SGD gets less budget
  assert gaussian.gaussian_delta(warm.warm_start_epsilon, warm.warm_start_noise) <= 2e-6
  assert "basic composition" in warm.accountant
  with pytest.raises(ValueError):
    infer.privacy_plan(100, epsilon=1.0, delta=1e-3, sampling_ratio=0.1, num_epochs=1,
                       clipping_threshold=1.0, warm_start=1.0)


FEATURES = (Feature("a", "categorical", 3, missing=True), Feature("x", "normal"),
            Feature("b", "bernoulli"))


def _data(n=400, seed=0):
  rng = np.random.default_rng(seed)
  values = np.stack([rng.choice(3, n, p=[0.6, 0.3, 0.1]), rng.normal(size=n),
                     rng.choice(2, n, p=[0.2, 0.8])], 1).astype(np.float32)
  observed = np.ones_like(values, bool)
  observed[:40, 0] = False
  return values, observed


def test_noise_free_warm_start_is_the_marginal_alr():
  values, observed = _data()
  layout = make_layout(FEATURES, 4)
  out = warm_start(layout, jax.random.key(0), values, observed, 0.0)["cat_logits"]
  counts_a = np.bincount(values[observed[:, 0], 0].astype(int), minlength=3)
  counts_b = np.bincount(values[:, 2].astype(int), minlength=2)
  want = np.concatenate([np.log(counts_a[:2] / counts_a[2]), np.log(counts_b[:1] / counts_b[1])])
  assert out.shape == (4, 3)
  np.testing.assert_allclose(out, np.broadcast_to(want, (4, 3)), rtol=1e-5)


def test_warm_start_counts_have_sensitivity_sqrt_dcat():
  """Removing a row changes the released counts by an L2 norm <= sqrt(D_cat)."""
  values, observed = _data()
  layout = make_layout(FEATURES, 2)
  def counts(v, o):   # the quantity the mechanism adds noise to, recovered from noise-free logits
    out = []
    for j, col in enumerate(layout.cat_idx):
      out.append(np.bincount(v[o[:, col], col].astype(int), minlength=layout.cat_sizes[j]))
    return np.concatenate(out).astype(float)
  base = counts(values, observed)
  worst = max(np.linalg.norm(base - counts(np.delete(values, i, 0), np.delete(observed, i, 0)))
              for i in range(0, 400, 7))
  assert worst <= math.sqrt(len(layout.cat_idx)) + 1e-12
  assert worst == pytest.approx(math.sqrt(len(layout.cat_idx)))   # attained by a fully observed row


def test_warm_start_noise_has_full_gaussian_tails():
  """The warm start adds sd * wide_normal (tails to ~9.4 sigma), not float32
  jax.random.normal, whose support ends near 5.4 sigma (a formal delta of
  ~D_cat 2^-23, above the budgeted warm-start delta)."""
  from jtwin.dp import wide_normal
  values, observed = _data(4000)
  layout = make_layout(FEATURES, 1)
  key = jax.random.key(3)
  got = warm_start(layout, key, values, observed, 7.0)["cat_logits"][0]
  counts = np.zeros(len(layout.flat_feature))
  for j, col in enumerate(layout.cat_idx):
    codes = values[observed[:, col], col].astype(np.int64)
    counts[layout.pad_index[j, :layout.cat_sizes[j]]] = np.bincount(codes, minlength=layout.cat_sizes[j])
  noisy = counts + 7.0 * math.sqrt(len(layout.cat_idx)) * np.asarray(wide_normal(key, counts.shape), np.float64)
  log_p = np.log(np.maximum(noisy, 1.0))
  pc = len(layout.flat_free)
  want = log_p[:pc] - log_p[pc + layout.flat_feature[:pc]]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # and wide_normal's tails really pass 5.4 sigma where float32 normal stops
  z = np.asarray(wide_normal(jax.random.key(0), (4_000_000,)))
  assert np.sum(np.abs(z) > 4.5) >= 5 and np.isfinite(z).all()


def test_noisy_warm_start_noise_scale():
  values, observed = _data(4000)
  layout = make_layout(FEATURES, 1)
  exact = warm_start(layout, jax.random.key(0), values, observed, 0.0)["cat_logits"][0]
  draws = np.stack([warm_start(layout, jax.random.key(i), values, observed, 5.0)["cat_logits"][0]
                    for i in range(300)])
  # delta method: sd of log(count_c / count_ref) ~ sd * sqrt(1/c^2 + 1/ref^2), sd = 5 sqrt(2)
  counts_a = np.bincount(values[observed[:, 0], 0].astype(int), minlength=3)
  sd = 5.0 * math.sqrt(2)
  want = sd * math.sqrt(1 / counts_a[0] ** 2 + 1 / counts_a[2] ** 2)
  assert np.std(draws[:, 0]) == pytest.approx(want, rel=0.2)
  assert abs(np.mean(draws[:, 0]) - exact[0]) < 4 * want / math.sqrt(300) + 1e-3


def test_fit_records_the_warm_start_and_custom_models_skip_it():
  values, observed = _data()
  model = make_mixture_model(FEATURES, 2)
  res = infer.fit(jax.random.key(0), model, (values, observed), epsilon=2.0,
                  sampling_ratio=0.1, num_epochs=2, delta=1e-4)
  assert res.privacy.warm_start_noise > 0 and res.privacy.epsilon <= 2.0
  custom = model._replace(warm_start=None)
  res = infer.fit(jax.random.key(0), custom, (values, observed), epsilon=2.0,
                  sampling_ratio=0.1, num_epochs=2, delta=1e-4)
  assert res.privacy.warm_start_noise == 0 and res.privacy.warm_start_epsilon == 0
