"""Exact accounting of composed Gaussian mechanisms (mu-GDP) against scipy."""
import math

import numpy as np
import pytest
from scipy import stats

from jtwin.accounting import gaussian, zcdp


def _delta(epsilon, mu):
  """delta(epsilon) of mu-GDP (Dong, Roth & Su 2022), straight from scipy."""
  return stats.norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * stats.norm.cdf(
      -epsilon / mu - mu / 2)


@pytest.mark.parametrize("epsilon,delta", [(0.3, 3e-6), (1.0, 1e-5), (1.0, 3.07e-6),
                                           (3.0, 1e-6), (8.0, 1e-9)])
def test_composed_rho_spends_exactly_the_target(epsilon, delta):
  rho = gaussian.composed_rho(epsilon, delta)
  mu = math.sqrt(2 * rho)
  assert _delta(epsilon, mu) <= delta * (1 + 1e-6)
  assert _delta(epsilon, mu * 1.001) > delta          # no slack left
  # more than zCDP allows for the same (epsilon, delta): zCDP is not exact here
  assert rho > zcdp.cdp_rho(epsilon, delta) * 1.05
  assert gaussian.composed_epsilon(rho, delta) == pytest.approx(epsilon, rel=1e-6)
  assert gaussian.composed_epsilon(rho, delta) >= epsilon * (1 - 1e-9)


def test_composition_of_several_gaussians_is_one_gaussian():
  # k releases with noise sds sigma_i (sensitivity 1 each) spend sum 1/(2 sigma_i^2);
  # the composed privacy loss is N(mu^2/2, mu^2) with mu^2 = sum 1/sigma_i^2: check the
  # claimed delta against the privacy-loss distribution computed by simulation
  sigmas = np.array([3.0, 5.0, 8.0, 8.0, 13.0])
  rho = float(np.sum(1 / (2 * sigmas**2)))
  eps = gaussian.composed_epsilon(rho, 1e-3)
  rng = np.random.default_rng(0)
  z = rng.standard_normal((400_000, len(sigmas)))
  # log-likelihood ratio of each release at the shifted world, summed over releases
  loss = np.sum((z * sigmas + 0.5) / sigmas**2, axis=1)   # x = 1 + sigma z against mean 0
  simulated = np.mean(np.maximum(0.0, 1 - np.exp(eps - loss)))
  assert simulated == pytest.approx(1e-3, rel=0.15)


def test_bad_inputs():
  with pytest.raises(ValueError):
    gaussian.composed_epsilon(0.0, 1e-5)
  with pytest.raises(ValueError):
    gaussian.composed_rho(1.0, 1.5)
