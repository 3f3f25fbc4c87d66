"""`steps_for_epsilon`: the inverse of `epsilon` in T."""
import pytest

from jtwin import accounting
from jtwin.accounting import calibrate, rdp, steps


@pytest.mark.parametrize("eps,sigma,q", [
    (1.0, 1.0, 0.01),
    (2.0, 1.0, 0.01),
    (1.0, 20.0, 1.0),
    (4.0, 0.8, 0.1),
])
def test_largest_certified(eps, sigma, q):
  t = accounting.steps_for_epsilon(eps, sigma, q, 1e-5)
  assert isinstance(t, int) and t >= 1
  err = calibrate.fine_eps_error(eps)
  assert accounting.epsilon(sigma, q, t, 1e-5, eps_error=err).upper <= eps
  assert accounting.epsilon(sigma, q, t + 1, 1e-5, eps_error=err).upper > eps
  assert t >= rdp.rdp_max_steps(eps, sigma, q, 1e-5)  # at least the RDP answer


def test_round_trip_with_calibration():
  cal = accounting.calibrate_noise(1.0, 1e-5, 0.01, 2000)
  t = accounting.steps_for_epsilon(1.0, cal.noise_multiplier, 0.01, 1e-5)
  assert 2000 <= t <= 2000 * 1.05


def test_one_step_too_many():
  with pytest.raises(ValueError, match="single step"):
    accounting.steps_for_epsilon(0.1, 1.0, 1.0, 1e-5)


def test_cap():
  assert accounting.steps_for_epsilon(50.0, 1e3, 1e-4, 1e-5) == steps.MAX_STEPS


@pytest.mark.parametrize("kwargs,name", [
    (dict(max_epsilon=0.0), "max_epsilon"),
    (dict(noise_multiplier=0.0), "noise_multiplier"),
    (dict(sampling_prob=-0.1), "sampling_prob"),
    (dict(delta=1.0), "delta"),
])
def test_validation(kwargs, name):
  args = dict(max_epsilon=1.0, noise_multiplier=1.0, sampling_prob=0.01, delta=1e-5)
  with pytest.raises(ValueError, match=name):
    accounting.steps_for_epsilon(**{**args, **kwargs})
