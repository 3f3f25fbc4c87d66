"""The (non-subsampled) Gaussian mechanism, accounted exactly.

Releasing f(D) + N(0, sigma^2 I) where f has L2 sensitivity 1 (divide the
noise by the sensitivity first) is (epsilon, delta)-DP exactly when

  delta(epsilon) = Phi(-epsilon s + 1/(2 s)) - e^epsilon Phi(-epsilon s - 1/(2 s)),  s = sigma

(Balle & Wang 2018, the analytic Gaussian mechanism; it holds for add/remove
and replace neighbours alike, given the sensitivity under that relation).
jtwin uses it for the DP marginals that warm-start the mixture, composed with
DP-SGD by basic composition (epsilons and deltas add), a valid upper bound.
"""
from __future__ import annotations

import math

from scipy import optimize
from scipy.special import log_ndtr

from jtwin.accounting import _validate


def gaussian_delta(epsilon: float, noise_multiplier: float) -> float:
  """Exact delta of the Gaussian mechanism at `epsilon` (sensitivity 1)."""
  s = float(noise_multiplier)
  a = log_ndtr(-epsilon * s + 0.5 / s)
  b = epsilon + log_ndtr(-epsilon * s - 0.5 / s)
  return max(0.0, math.exp(a) - math.exp(b)) if a > b else 0.0


def gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
  """Smallest epsilon with delta(epsilon) <= delta (an exact bound, rounded up)."""
  sigma = _validate.positive("noise_multiplier", noise_multiplier)
  delta = _validate.delta(delta)
  if gaussian_delta(0.0, sigma) <= delta:
    return 0.0
  hi = 1.0
  while gaussian_delta(hi, sigma) > delta:
    hi *= 2.0
  eps = optimize.brentq(lambda e: gaussian_delta(e, sigma) - delta, 0.0, hi, xtol=1e-12)
  return eps * (1 + 1e-9) + 1e-12


def gaussian_noise_multiplier(epsilon: float, delta: float) -> float:
  """Smallest sigma (sensitivity 1) whose exact delta at `epsilon` is <= delta."""
  epsilon = _validate.positive("epsilon", epsilon)
  delta = _validate.delta(delta)
  f = lambda s: gaussian_delta(epsilon, s) - delta
  lo, hi = 1e-3, 1.0
  while f(hi) > 0:
    hi *= 2.0
    if hi > 1e8:
      from jtwin.errors import JtwinInputError
      raise JtwinInputError(f"epsilon = {epsilon:g} is too small for delta = {delta:g}: no "
                            "Gaussian noise level reaches it; raise epsilon (or delta)")
  sigma = optimize.brentq(f, lo, hi, xtol=1e-12) * (1 + 1e-9)
  assert gaussian_delta(epsilon, sigma) <= delta
  return sigma


def composed_rho(epsilon: float, delta: float) -> float:
  """The most rho that Gaussian mechanisms alone may spend for (epsilon, delta)-DP.

  Gaussian mechanisms with sensitivities Delta_i and noise sds sigma_i, composed
  (adaptively, in any order), are exactly one Gaussian mechanism with noise
  multiplier 1 / mu, mu^2 = sum Delta_i^2 / sigma_i^2 = 2 rho (mu-GDP composes
  as sqrt(sum mu_i^2): Dong, Roth & Su 2022), whose (epsilon, delta) curve is the analytic
  Gaussian one above. So rho = 1 / (2 sigma^2), sigma =
  `gaussian_noise_multiplier(epsilon, delta)`: about 16% more than zCDP's
  `cdp_rho` at epsilon = 1, whose conversion must hold for every rho-zCDP
  mechanism, not only Gaussian ones. It does not apply once another
  mechanism (an exponential mechanism) joins the composition.
  """
  return 0.5 / gaussian_noise_multiplier(epsilon, delta)**2


def composed_epsilon(rho: float, delta: float) -> float:
  """Certified epsilon of Gaussian mechanisms alone that spent `rho` in all."""
  rho = _validate.positive("rho", rho)
  return gaussian_epsilon(1.0 / math.sqrt(2.0 * rho), delta)
