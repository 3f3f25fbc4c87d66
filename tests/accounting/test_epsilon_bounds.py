"""`jtwin.accounting.epsilon`: references, sanity relations, fallback."""
import math

import pytest
from scipy import optimize, stats

from jtwin import accounting
from jtwin.accounting import bounds, prv, rdp
from jtwin.errors import JtwinInputError


def _gaussian_epsilon(sigma, steps, delta):
  """Exact epsilon of the T-fold Gaussian mechanism (Balle & Wang 2018)."""
  s = sigma / math.sqrt(steps)

  def excess(eps):
    return (stats.norm.cdf(-eps * s + 1 / (2 * s))
            - math.exp(eps) * stats.norm.cdf(-eps * s - 1 / (2 * s)) - delta)
  return optimize.brentq(excess, 1e-9, 100.0, xtol=1e-12)


def test_exact_gaussian_is_bracketed():
  exact = _gaussian_epsilon(20.0, 1000, 1e-5)
  assert exact == pytest.approx(7.5113, abs=1e-4)
  b = accounting.epsilon(20.0, 1.0, 1000, 1e-5)
  assert b.lower <= exact <= b.upper
  assert b.estimate == pytest.approx(exact, abs=1e-3)
  assert b.accountant == "prv"


# prv-accountant 0.2.0 and dp_accounting PLD agree on these (dp_engines.md §5.3).
@pytest.mark.parametrize("sigma,q,steps,ref", [
    (1.0, 0.01, 10_000, 6.1877),
    (2.0, 0.01, 10_000, 2.1627),
    (1.0, 0.01, 1_000, 1.8282),
    (2.0, 0.5, 50, 9.4736),
])
def test_frozen_reference_values(sigma, q, steps, ref):
  b = accounting.epsilon(sigma, q, steps, 1e-5)
  assert abs(b.estimate - ref) <= 2e-3
  assert b.upper >= ref
  assert b.lower <= ref
  assert b.accountant == "prv"
  assert b.upper <= ref + 2 * bounds.DEFAULT_EPS_ERROR


def test_ordering_and_rdp_is_looser():
  b = accounting.epsilon(1.0, 0.01, 1000, 1e-5)
  r = rdp.rdp_epsilon(1.0, 0.01, 1000, 1e-5)
  assert b.lower <= b.estimate <= b.upper <= r


@pytest.mark.parametrize("arg,values", [
    ("noise_multiplier", (0.8, 1.0, 1.5, 3.0)),
    ("sampling_prob", (0.002, 0.005, 0.01, 0.05)),
    ("steps", (100, 300, 1000, 3000)),
])
def test_monotone(arg, values):
  base = dict(noise_multiplier=1.0, sampling_prob=0.01, steps=1000, delta=1e-5)
  est = [accounting.epsilon(**{**base, arg: v}, eps_error=0.1).estimate for v in values]
  if arg == "noise_multiplier":
    assert all(a > b for a, b in zip(est, est[1:]))
  else:
    assert all(a < b for a, b in zip(est, est[1:]))


def test_full_batch_q1():
  b = accounting.epsilon(20.0, 1, 1000, 1e-5, eps_error=0.05)
  assert b.lower <= _gaussian_epsilon(20.0, 1000, 1e-5) <= b.upper


def test_prv_failure_falls_back_to_rdp():
  # 0.2.0 raises "Discrete mean differs ..." here at every eps_error.
  with pytest.raises(prv.PRVError):
    prv.prv_epsilon(0.6, 0.2, 500, 1e-5, 0.1)
  b = accounting.epsilon(0.6, 0.2, 500, 1e-5)
  r = rdp.rdp_epsilon(0.6, 0.2, 500, 1e-5)
  assert b == (0.0, r, r, "rdp")


def test_prv_failure_at_fine_grid_retries_coarse():
  # Fails at eps_error 0.01 but not at 0.1: still a PRV bound, just wider.
  with pytest.raises(prv.PRVError):
    prv.prv_epsilon(0.7, 0.1, 1000, 1e-5, 0.01)
  b = accounting.epsilon(0.7, 0.1, 1000, 1e-5)
  assert b.accountant == "prv"
  assert b.upper - b.estimate == pytest.approx(0.1, abs=1e-2)
  assert b.upper < rdp.rdp_epsilon(0.7, 0.1, 1000, 1e-5)


def test_rdp_is_reported_when_smaller(monkeypatch):
  monkeypatch.setattr(bounds._prv, "prv_epsilon", lambda *a: (0.5, 0.6, 3.0, 0.01))
  bounds._epsilon.cache_clear()
  try:
    b = accounting.epsilon(2.0, 0.01, 1000, 1e-5)
  finally:
    bounds._epsilon.cache_clear()
  r = rdp.rdp_epsilon(2.0, 0.01, 1000, 1e-5)
  assert 0.6 < r < 3.0
  assert b == (0.5, 0.6, r, "rdp")


@pytest.mark.parametrize("kwargs,name", [
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(noise_multiplier=-1.0), "noise_multiplier"),
    (dict(noise_multiplier=math.nan), "noise_multiplier"),
    (dict(sampling_prob=0.0), "sampling_prob"),
    (dict(sampling_prob=1.5), "sampling_prob"),
    (dict(steps=0), "steps"),
    (dict(steps=10.5), "steps"),
    (dict(steps=True), "steps"),
    (dict(delta=0.0), "delta"),
    (dict(delta=1.0), "delta"),
    (dict(delta="1e-5"), "delta"),
])
def test_validation(kwargs, name):
  args = dict(noise_multiplier=1.0, sampling_prob=0.01, steps=100, delta=1e-5)
  with pytest.raises(ValueError, match=name):
    accounting.epsilon(**{**args, **kwargs})
  with pytest.raises(JtwinInputError):
    accounting.epsilon(**{**args, **kwargs})


def test_integral_float_steps_accepted():
  a = accounting.epsilon(2.0, 0.01, 1e3, 1e-5, eps_error=0.1)
  assert a == accounting.epsilon(2.0, 0.01, 1000, 1e-5, eps_error=0.1)
