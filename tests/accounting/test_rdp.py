"""jtwin's own RDP accountant against prv-accountant's (TF-Privacy) RDP."""
import numpy as np
import pytest
from prv_accountant import PoissonSubsampledGaussianMechanism
from prv_accountant.other_accountants import RDP
from prv_accountant.privacy_random_variables.poisson_subsampled_gaussian_mechanism import (
    _compute_log_a,
)

from jtwin.accounting import rdp

_PRV_ORDERS = np.array([1.0 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


@pytest.mark.parametrize("sigma,q,steps", [
    (1.0, 0.01, 10_000), (2.0, 0.01, 10_000), (3.84, 0.01, 10_000),
    (1.0, 0.2, 500), (2.0, 0.5, 50), (0.8, 0.001, 100_000)])
def test_matches_prv_accountant_rdp_on_its_orders(sigma, q, steps):
  ref = RDP([PoissonSubsampledGaussianMechanism(q, sigma)]).compute_epsilon(1e-5, [steps])[2]
  ours = rdp.rdp_epsilon(sigma, q, steps, 1e-5, orders=_PRV_ORDERS)
  assert ours == pytest.approx(ref, rel=1e-9)
  # The default orders are a superset: never looser.
  assert rdp.rdp_epsilon(sigma, q, steps, 1e-5) <= ours + 1e-12


@pytest.mark.parametrize("q", [0.001, 0.01, 0.1, 0.9])
@pytest.mark.parametrize("sigma", [0.6, 1.0, 4.0])
def test_log_a_matches_tf_privacy(q, sigma):
  orders = np.array([1.5, 2.0, 3.0, 3.5, 10.5, 32.0])
  ref = np.array([_compute_log_a(q, sigma, a) for a in orders])
  ours = rdp.rdp(sigma, q, orders) * (orders - 1)
  np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-12)


def test_fractional_series_is_not_stopped_early():
  # TF-Privacy's loop stops at the first term < e^-30, which for q = 0.5 and
  # a large order is the first term, giving log A < 0 (impossible: A >= 1).
  orders = np.array([60.0, 60.5, 61.0])
  assert _compute_log_a(0.5, 20.0, 60.5) < 0
  r = rdp.rdp(20.0, 0.5, orders)
  assert r[0] <= r[1] <= r[2]  # RDP is non-decreasing in the order
  assert r[1] > 0


@pytest.mark.parametrize("sigma,steps", [(20.0, 1000), (1.0, 3)])
def test_full_batch_is_the_gaussian_mechanism(sigma, steps):
  orders = np.array([1.5, 2.0, 8.0])
  np.testing.assert_allclose(rdp.rdp(sigma, 1.0, orders), orders / (2 * sigma**2))
  ref = RDP([PoissonSubsampledGaussianMechanism(1.0, sigma)]).compute_epsilon(1e-5, [steps])[2]
  assert rdp.rdp_epsilon(sigma, 1.0, steps, 1e-5, orders=_PRV_ORDERS) == pytest.approx(ref)


def test_monotone():
  base = rdp.rdp_epsilon(1.0, 0.01, 1000, 1e-5)
  assert rdp.rdp_epsilon(1.1, 0.01, 1000, 1e-5) < base
  assert rdp.rdp_epsilon(1.0, 0.02, 1000, 1e-5) > base
  assert rdp.rdp_epsilon(1.0, 0.01, 2000, 1e-5) > base
  assert rdp.rdp_epsilon(1.0, 0.01, 1000, 1e-6) > base


@pytest.mark.parametrize("eps,sigma,q", [(1.0, 1.0, 0.01), (3.0, 2.0, 0.1), (8.0, 20.0, 1.0)])
def test_max_steps_is_the_inverse(eps, sigma, q):
  t = int(rdp.rdp_max_steps(eps, sigma, q, 1e-5))
  assert t >= 1
  assert rdp.rdp_epsilon(sigma, q, t, 1e-5) <= eps * (1 + 1e-12)
  assert rdp.rdp_epsilon(sigma, q, t + 1, 1e-5) > eps
