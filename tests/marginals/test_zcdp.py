"""zCDP accounting against independent computations."""
import math

import numpy as np
import pytest
from scipy import optimize
from scipy.stats import norm

from jtwin.accounting import zcdp


def _cks_delta_scipy(rho, eps):
  """CKS 2020 Prop. 12 minimised numerically over alpha (an independent route)."""
  f = lambda a: ((a - 1) * (a * rho - eps) + a * math.log1p(-1 / a) - math.log(a - 1))
  res = optimize.minimize_scalar(f, bounds=(1.0001, 1e6), method="bounded",
                                 options={"xatol": 1e-10})
  return math.exp(min(res.fun, f(1.01)))


def _gaussian_exact_delta(mu, eps):
  """Exact delta of a Gaussian mechanism with mu = sensitivity / sigma (Balle & Wang)."""
  return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)


@pytest.mark.parametrize("rho", [1e-3, 0.0306, 0.5, 3.0])
@pytest.mark.parametrize("eps", [0.3, 1.0, 5.0])
def test_delta_matches_scipy_minimisation(rho, eps):
  assert zcdp.cdp_delta(rho, eps) == pytest.approx(min(1.0, _cks_delta_scipy(rho, eps)), rel=1e-4)


@pytest.mark.parametrize("eps,delta", [(0.3, 1e-5), (1.0, 1e-5), (3.0, 3e-6), (10.0, 1e-8)])
def test_epsilon_between_exact_gaussian_and_classical_bound(eps, delta):
  rho = zcdp.cdp_rho(eps, delta)
  certified = zcdp.cdp_epsilon(rho, delta)
  assert certified <= eps
  # a rho-zCDP composition of Gaussians is one Gaussian with mu^2 = 2 rho: its exact
  # epsilon is a lower bound for any valid zCDP conversion
  mu = math.sqrt(2 * rho)
  exact = optimize.brentq(lambda e: _gaussian_exact_delta(mu, e) - delta, 1e-9, 100)
  assert exact <= certified + 1e-9
  assert certified <= rho + 2 * math.sqrt(rho * math.log(1 / delta))
  assert zcdp.cdp_delta(rho, certified) <= delta


def test_known_value_at_delta_1e5():
  assert zcdp.cdp_rho(1.0, 1e-5) == pytest.approx(0.0306, abs=1e-4)


def test_mechanism_rhos():
  assert zcdp.gaussian_rho(1.0, 2.0) == pytest.approx(1 / 8)
  assert zcdp.gaussian_rho(3.0, 1.0) == pytest.approx(4.5)
  assert zcdp.exponential_rho(0.4) == pytest.approx(0.02)


def test_bad_inputs():
  with pytest.raises(ValueError):
    zcdp.cdp_epsilon(0.1, 1.5)
  with pytest.raises(ValueError):
    zcdp.cdp_delta(-1.0, 1.0)
  assert zcdp.cdp_epsilon(0.0, 1e-5) == 0.0
