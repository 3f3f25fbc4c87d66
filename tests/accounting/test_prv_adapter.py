"""The prv-accountant adapter reproduces the library's own numbers."""
import warnings

import numpy as np
import prv_accountant
import pytest
from scipy import fft

from jtwin.accounting import prv


@pytest.mark.parametrize("q,sigma", [(0.001, 1.5), (0.2, 1.0), (0.5, 0.6), (0.999, 3.0)])
def test_cdf_and_cell_masses_match_upstream(q, sigma):
  t = np.linspace(-20, 40, 200_001, dtype=np.longdouble)
  ours = prv._SubsampledGaussian(q, sigma)
  ref = prv_accountant.PoissonSubsampledGaussianMechanism(q, sigma)
  with np.errstate(all="ignore"):
    np.testing.assert_allclose(ours.cdf(t), ref.cdf(t), rtol=0, atol=1e-15)
    a, b = t[:-1], t[1:]
    np.testing.assert_allclose(ours.probability(a, b), ref.probability(a, b), rtol=0, atol=1e-15)


@pytest.mark.parametrize("sigma,q,steps", [(2.0, 0.01, 1000), (2.0, 0.5, 50), (20.0, 1.0, 100)])
def test_bounds_match_upstream_accountant(sigma, q, steps):
  eps_error, delta = 0.05, 1e-5
  mech = (prv_accountant.GaussianMechanism(sigma) if q == 1 else
          prv_accountant.PoissonSubsampledGaussianMechanism(q, sigma))
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore")
    ref = prv_accountant.PRVAccountant(
        [mech], eps_error=eps_error, delta_error=delta / 1000,
        max_self_compositions=[steps]).compute_epsilon(delta, [steps])
  ours = prv.prv_epsilon(sigma, q, steps, delta, eps_error)
  # Same mesh; the domain differs a little (FFT-friendly length, own RDP).
  np.testing.assert_allclose(ours[:3], ref, rtol=0, atol=1e-7)
  assert ours[3] == eps_error


@pytest.mark.parametrize("sigma,q,steps,eps_error", [
    (1.0, 0.01, 10_000, 0.1), (3.0, 0.05, 2000, 0.01), (20.0, 1.0, 1000, 0.03)])
def test_grid_length_is_fft_friendly(sigma, q, steps, eps_error):
  n = prv.grid_size(sigma, q, steps, 1e-5, eps_error)
  assert n % 2 == 0 and fft.next_fast_len(n, real=True) == n
  acc = prv.build(sigma, q, steps, 1e-5, eps_error)
  assert len(acc.composer.self_composers[0].domain) == n


def test_library_failure_becomes_prv_error():
  # prv-accountant 0.2.0: "Discrete mean differs from continuous mean".
  with pytest.raises(prv.PRVError, match="Discrete mean"):
    prv.prv_epsilon(0.6, 0.2, 500, 1e-5, 0.1)


def test_huge_grid_is_coarsened_not_built():
  eps_error, _, n = prv._plan(5.0, 0.001, 10**7, 1e-5, 0.001)
  assert eps_error > 0.001
  assert n <= prv.MAX_GRID * 1.1
  with pytest.raises(prv.PRVError, match="too large"):
    prv._plan(5.0, 0.001, 10**9, 1e-5, 0.001)
