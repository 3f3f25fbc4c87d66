"""`calibrate_noise`: the certified contract, tightness, fallback, errors."""

import pytest

from jtwin import accounting
from jtwin.accounting import calibrate, prv, rdp


@pytest.mark.parametrize("eps,q,steps", [
    (1.0, 0.01, 1000),
    (0.5, 0.01, 1000),
    (4.0, 0.1, 200),
    (1.0, 1.0, 100),  # full batch: Gaussian mechanism
])
def test_certified_and_tight(eps, q, steps):
  cal = accounting.calibrate_noise(eps, 1e-5, q, steps)
  sigma, b = cal
  assert b.accountant == "prv"
  assert b.upper <= eps
  # The reported bounds are those of the returned sigma, recomputed independently.
  again = accounting.epsilon(sigma, q, steps, 1e-5,
                             eps_error=calibrate.fine_eps_error(eps))
  assert again.upper == pytest.approx(b.upper, abs=1e-9)
  # Tight: 2% less noise already spends more than the target.
  assert accounting.epsilon(0.98 * sigma, q, steps, 1e-5, eps_error=0.1).estimate > eps
  # And PRV beats the RDP-calibrated sigma.
  assert sigma < calibrate._rdp_sigma(eps, 1e-5, q, steps)


def test_matches_prv_accountant_reference():
  # dp_engines.md §3.2: find_noise_multiplier(eps_error=0.01) returns 3.8408
  # (eps_upper 0.9967 at eps_error 0.005); the RDP answer is 4.1258.
  sigma = accounting.calibrate_noise(1.0, 1e-5, 0.01, 10_000).noise_multiplier
  assert 3.8408 <= sigma <= 3.8408 * 1.005
  assert calibrate._rdp_sigma(1.0, 1e-5, 0.01, 10_000) == pytest.approx(4.1258, abs=1e-3)


@pytest.mark.parametrize("eps", [45.0, 60.0])
def test_high_epsilon_falls_back_to_rdp(eps):
  # prv-accountant 0.2.0 raises "Discrete mean differs ..." for q = 0.2,
  # T = 500 at every sigma in the search range of these targets.
  for sigma in (0.6, 0.8):
    with pytest.raises(prv.PRVError, match="Discrete mean"):
      prv.prv_epsilon(sigma, 0.2, 500, 1e-5, 0.25)
  sigma, b = accounting.calibrate_noise(eps, 1e-5, 0.2, 500)
  assert b.accountant == "rdp" and b.lower == 0.0
  assert b.upper <= eps
  assert b.upper == pytest.approx(rdp.rdp_epsilon(sigma, 0.2, 500, 1e-5))
  assert rdp.rdp_epsilon(sigma * 0.999, 0.2, 500, 1e-5) > eps  # smallest RDP sigma


def test_large_epsilon_uses_prv_where_it_works():
  sigma, b = accounting.calibrate_noise(50.0, 1e-5, 0.1, 1000)
  assert b.accountant == "prv" and b.upper <= 50.0
  assert sigma < calibrate._rdp_sigma(50.0, 1e-5, 0.1, 1000)


def test_forced_prv_failure_falls_back_to_rdp(monkeypatch):
  def fail(*args, **kwargs):
    raise prv.PRVError("forced")
  monkeypatch.setattr(calibrate._prv, "prv_epsilon", fail)
  calibrate._calibrate.cache_clear()
  try:
    sigma, b = accounting.calibrate_noise(1.0, 1e-5, 0.01, 1000)
  finally:
    calibrate._calibrate.cache_clear()
  assert b.accountant == "rdp" and b.upper <= 1.0
  assert sigma == calibrate._rdp_sigma(1.0, 1e-5, 0.01, 1000)


@pytest.mark.slow
def test_impossible_target_fails_with_clear_error():
  # (the search is bounded by sigma <= 1e4: it ends with an error, never hangs)
  with pytest.raises(ValueError, match="not reachable"):
    accounting.calibrate_noise(1e-4, 1e-5, 1.0, 10**6)


def test_cached():
  a = accounting.calibrate_noise(2.0, 1e-5, 0.02, 500)
  assert accounting.calibrate_noise(2.0, 1e-5, 0.02, 500) is a


@pytest.mark.parametrize("kwargs,name", [
    (dict(epsilon=0.0), "epsilon"),
    (dict(epsilon=-1.0), "epsilon"),
    (dict(epsilon=float("inf")), "epsilon"),
    (dict(delta=0.0), "delta"),
    (dict(delta=1.5), "delta"),
    (dict(sampling_prob=0.0), "sampling_prob"),
    (dict(sampling_prob=2.0), "sampling_prob"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
])
def test_validation(kwargs, name):
  args = dict(epsilon=1.0, delta=1e-5, sampling_prob=0.01, steps=100)
  with pytest.raises(ValueError, match=name):
    accounting.calibrate_noise(**{**args, **kwargs})
