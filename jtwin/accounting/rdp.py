"""Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism.

A valid (if loose, typically 5-10% high) upper bound on epsilon, used by jtwin
to bracket the noise search and as the fallback when prv-accountant fails.
The computation is vectorised numpy over the RDP orders:

* ``log A_alpha`` of the sampled Gaussian (Mironov, Talwar & Zhang 2019,
  "Rényi Differential Privacy of the Sampled Gaussian Mechanism"): a finite
  log-space binomial sum for integer orders and the two-sided erfc series for
  fractional orders, as in TF-Privacy's ``_compute_log_a``. Unlike TF-Privacy,
  the fractional series is never stopped before it has passed its largest
  terms (index > alpha), which TF-Privacy's "first term < e^-30" rule can do
  when q is large.
* the RDP -> (epsilon, delta) conversion of Balle et al. 2020 / Canonne,
  Kamath & Steinke 2020:
  ``eps = T * rdp(alpha) + log1p(-1/alpha) - (log(delta) + log(alpha)) / (alpha - 1)``
  minimised over the orders.

All inputs are public (sigma, q, T, delta). Mechanism and relation: see
`jtwin.accounting`.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

__all__ = ["DEFAULT_ORDERS", "rdp", "rdp_epsilon", "rdp_max_steps"]

DEFAULT_ORDERS = np.unique(np.concatenate([
    1.0 + np.arange(1, 10) / 100.0,  # 1.01 .. 1.09: very large epsilon
    1.0 + np.arange(1, 100) / 10.0,  # 1.1 .. 10.9
    np.arange(11, 64, dtype=float),
    np.arange(64, 257, 16, dtype=float),
    np.array([384.0, 512.0, 768.0, 1024.0]),
]))

_LOG_TERM_CUTOFF = -30.0  # terms below e^-30 (relative to A >= 1) are dropped
_BLOCK = 256  # series terms evaluated per vectorised block
_MAX_TERMS = 200_000  # a fractional order that needs more is dropped (inf)


def _lse(x: np.ndarray, axis: int = -1) -> np.ndarray:
  """log(sum(exp(x))) along `axis`; -inf for all -inf slices (no warnings)."""
  m = np.max(x, axis=axis, keepdims=True)
  m = np.where(np.isfinite(m), m, 0.0)
  with np.errstate(divide="ignore"):
    return np.log(np.sum(np.exp(x - m), axis=axis)) + np.squeeze(m, axis)


@functools.lru_cache(maxsize=8)
def _int_table(orders: tuple) -> tuple:
  """Order-only parts of the integer-order sum, cached per tuple of orders.

  Returns:
    (a [K, 1], i [1, I], log binom(a, i) [K, I] with -inf where i > a).
  """
  a = np.asarray(orders, float)[:, None]
  i = np.arange(int(max(orders)) + 1, dtype=float)[None, :]
  valid = i <= a
  i_ = np.where(valid, i, 0.0)
  log_comb = special.gammaln(a + 1) - special.gammaln(i_ + 1) - special.gammaln(a - i_ + 1)
  return a, np.where(valid, i, 0.0), np.where(valid, log_comb, -np.inf)


def _log_a_int(q: float, sigma: float, orders: np.ndarray) -> np.ndarray:
  """log A_alpha for integer orders: a finite binomial sum in log space.

  Args:
    q: sampling probability, 0 < q < 1.
    sigma: noise multiplier.
    orders: float[K] integer-valued orders >= 2.

  Returns:
    float[K] log A_alpha.
  """
  if orders.size == 0:
    return np.zeros(0)
  a, i, log_comb = _int_table(tuple(orders.tolist()))
  log_terms = (log_comb + i * math.log(q) + (a - i) * math.log1p(-q)
               + (i * i - i) / (2 * sigma**2))
  return _lse(log_terms, axis=1)


def _log_a_frac(q: float, sigma: float, orders: np.ndarray) -> np.ndarray:
  """log A_alpha for fractional orders (TF-Privacy's two-sided erfc series).

  Args:
    q: sampling probability, 0 < q < 1.
    sigma: noise multiplier.
    orders: float[K] non-integer orders > 1.

  Returns:
    float[K] log A_alpha; +inf where the series did not converge (such an
    order is then simply not used).
  """
  k = orders.size
  pos = np.full((2, k), -np.inf)  # log of the positive / negative parts of
  neg = np.full((2, k), -np.inf)  # the two half-line integrals A0, A1
  z0 = sigma**2 * math.log(1.0 / q - 1.0) + 0.5
  log_q, log_1mq = math.log(q), math.log1p(-q)
  active = np.ones(k, dtype=bool)
  start = 0
  while active.any() and start < _MAX_TERMS:
    a = orders[active][:, None]
    i = np.arange(start, start + _BLOCK, dtype=float)[None, :]
    j = a - i
    log_coef = special.gammaln(a + 1) - special.gammaln(i + 1) - special.gammaln(j + 1)
    sign = special.gammasgn(j + 1)
    log_s0 = (log_coef + i * log_q + j * log_1mq + (i * i - i) / (2 * sigma**2)
              + special.log_ndtr((z0 - i) / sigma))
    log_s1 = (log_coef + j * log_q + i * log_1mq + (j * j - j) / (2 * sigma**2)
              + special.log_ndtr((j - z0) / sigma))
    for h, log_s in enumerate((log_s0, log_s1)):
      pos[h, active] = np.logaddexp(
          pos[h, active], _lse(np.where(sign > 0, log_s, -np.inf), axis=1))
      neg[h, active] = np.logaddexp(
          neg[h, active], _lse(np.where(sign < 0, log_s, -np.inf), axis=1))
    past_peak = i > a  # only stop once the block lies beyond the largest terms
    tail = np.where(past_peak, np.maximum(log_s0, log_s1), np.inf).max(axis=1)
    done = past_peak.all(axis=1) & (tail < _LOG_TERM_CUTOFF)
    idx = np.flatnonzero(active)
    active[idx[done]] = False
    start += _BLOCK
  with np.errstate(invalid="ignore", divide="ignore"):
    # log(exp(p) - exp(n)) = p + log1p(-exp(n - p)); needs p > n.
    halves = pos + np.log(-np.expm1(neg - pos))
  log_a = np.logaddexp(halves[0], halves[1])
  bad = active | ~np.isfinite(log_a) | (pos <= neg).any(axis=0)
  return np.where(bad, np.inf, log_a)


def _rdp_lower(orders: np.ndarray, int_orders: np.ndarray,
               int_rdp: np.ndarray) -> np.ndarray:
  """Lower bound on rdp(alpha) from the computed integer orders below it.

  RDP is non-decreasing in the order, so rdp(alpha) >= rdp(floor(alpha)).
  """
  idx = np.searchsorted(int_orders, orders, side="right") - 1
  return np.where(idx >= 0, int_rdp[np.clip(idx, 0, None)], 0.0)


def _conversion(orders: np.ndarray, delta: float) -> np.ndarray:
  """The order-dependent part of the improved RDP -> (eps, delta) conversion."""
  return np.log1p(-1.0 / orders) - (math.log(delta) + np.log(orders)) / (orders - 1.0)


def rdp(noise_multiplier: float, sampling_prob: float,
        orders: np.ndarray = DEFAULT_ORDERS) -> np.ndarray:
  """RDP of one step of the Poisson-subsampled Gaussian mechanism.

  Args:
    noise_multiplier: sigma > 0 (noise std / L2 sensitivity).
    sampling_prob: q in (0, 1].
    orders: float[K] orders > 1.

  Returns:
    float[K] rdp(alpha) = log A_alpha / (alpha - 1) per order (+inf where the
    fractional series did not converge).
  """
  orders = np.asarray(orders, dtype=float)
  sigma, q = float(noise_multiplier), float(sampling_prob)
  if q >= 1.0:
    return orders / (2.0 * sigma**2)
  is_int = orders == np.round(orders)
  log_a = np.empty_like(orders)
  log_a[is_int] = _log_a_int(q, sigma, orders[is_int])
  log_a[~is_int] = _log_a_frac(q, sigma, orders[~is_int])
  return np.maximum(log_a, 0.0) / (orders - 1.0)


def _epsilon_per_order(sigma: float, q: float, steps: float, delta: float,
                       orders: np.ndarray) -> np.ndarray:
  """epsilon(alpha) for every order, skipping fractional orders that cannot win."""
  conv = _conversion(orders, delta)
  is_int = orders == np.round(orders)
  if q >= 1.0:
    return steps * orders / (2.0 * sigma**2) + conv
  int_orders = orders[is_int]
  int_rdp = np.maximum(_log_a_int(q, sigma, int_orders), 0.0) / (int_orders - 1.0)
  eps = np.full(orders.shape, np.inf)
  eps[is_int] = steps * int_rdp + conv[is_int]
  best = eps[is_int].min() if is_int.any() else np.inf
  frac = np.flatnonzero(~is_int)
  lower = steps * _rdp_lower(orders[frac], int_orders, int_rdp) + conv[frac]
  frac = frac[lower < best]  # exact pruning: these orders cannot beat `best`
  if frac.size:
    log_a = _log_a_frac(q, sigma, orders[frac])
    eps[frac] = steps * np.maximum(log_a, 0.0) / (orders[frac] - 1.0) + conv[frac]
  return eps


def rdp_epsilon(noise_multiplier: float, sampling_prob: float, steps: int,
                delta: float, orders: np.ndarray = DEFAULT_ORDERS) -> float:
  """RDP upper bound on epsilon of DP-SGD (T-fold Poisson-subsampled Gaussian).

  Args:
    noise_multiplier: sigma > 0.
    sampling_prob: q in (0, 1].
    steps: T >= 1 (may be a float for the search; it enters linearly).
    delta: target delta in (0, 1).
    orders: float[K] RDP orders > 1.

  Returns:
    The epsilon bound (>= 0); +inf if no order gives a finite bound.
  """
  eps = _epsilon_per_order(float(noise_multiplier), float(sampling_prob),
                           float(steps), float(delta), np.asarray(orders, float))
  return float(max(np.nanmin(eps), 0.0))


def rdp_max_steps(max_epsilon: float, noise_multiplier: float,
                  sampling_prob: float, delta: float,
                  orders: np.ndarray = DEFAULT_ORDERS) -> float:
  """Largest T whose RDP epsilon bound is <= max_epsilon (closed form).

  eps(T) = min_alpha [T rdp(alpha) + c(alpha)], so the answer is
  max_alpha floor((max_epsilon - c(alpha)) / rdp(alpha)).

  Args:
    max_epsilon: epsilon budget > 0.
    noise_multiplier: sigma > 0.
    sampling_prob: q in (0, 1].
    delta: delta in (0, 1).
    orders: float[K] RDP orders > 1.

  Returns:
    The number of steps as a float (0 if none, +inf if unbounded).
  """
  orders = np.asarray(orders, float)
  r = rdp(noise_multiplier, sampling_prob, orders)
  room = max_epsilon - _conversion(orders, delta)
  with np.errstate(divide="ignore", invalid="ignore"):
    t = np.where(room < 0, 0.0,
                 np.where(r > 0, np.floor(room / r), np.inf))
  t = np.where(np.isnan(t), 0.0, t)
  return float(t.max())
