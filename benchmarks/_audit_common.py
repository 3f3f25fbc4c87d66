"""The empirical privacy audit's machinery (issue 11 item 4); not a benchmark itself.

`benchmarks/audit_privacy.py` prints the table and `tests/test_privacy_audit.py`
runs small versions. Four audits, each of the real code path:

  (a) `canary_audit`: white-box two-world canary audit of `jtwin.infer.fit`
      (linear custom model, plain SGD at learning rate 1);
  (b) `one_run_audit`: the one-run audit of Steinke, Nasr and Jagielski (2023)
      on the mixture model (`make_mixture_model` + `fit`);
  (c) `warm_start_audit`: two-world test of the mixture's DP warm start
      (`Model.warm_start`), including the noise tails beyond 5.4 sigma;
  (d) `marginals_audit`: two-world test of the Gaussian measurements that
      `jtwin.fit_marginals` releases.

Every audit returns an `AuditRow`. An epsilon lower bound is a statement at
confidence 1 - alpha (default 95%): if the code were (epsilon, delta)-DP with
epsilon below the bound, data like these would be seen with probability at
most alpha. A bound above the certified epsilon would be evidence of a
privacy bug.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from jtwin.errors import DataError


class AuditRow(NamedTuple):
  """One audited configuration.

  Attributes:
    name: the configuration, in words.
    epsilon: the certified epsilon of the released output (the claim).
    delta: its delta.
    sd: measured noise sd (on the audited statistic).
    sd_expected: what the mechanism's definition says it must be.
    sd_se: standard error of `sd`.
    shift: measured mean shift that one canary causes (nan if not measured).
    shift_expected: the shift it must cause.
    shift_se: standard error of `shift`.
    eps_lower: the empirical epsilon lower bound (95% confidence).
    trials: trials per world (or canaries, for the one-run audit).
    extra: further figures (dict), e.g. tail frequencies.
  """
  name: str
  epsilon: float
  delta: float
  sd: float
  sd_expected: float
  sd_se: float
  shift: float
  shift_expected: float
  shift_se: float
  eps_lower: float
  trials: int
  extra: dict

  def sd_z(self) -> float:
    """(sd - expected) in standard errors (0 when there is no expectation)."""
    if not math.isfinite(self.sd_expected):
      return 0.0
    return (self.sd - self.sd_expected) / self.sd_se

  def shift_z(self) -> float:
    """(shift - expected) in standard errors (0 when not measured)."""
    if not (math.isfinite(self.shift) and math.isfinite(self.shift_expected)):
      return 0.0
    return (self.shift - self.shift_expected) / self.shift_se

  def passed(self, max_z: float = 4.0) -> bool:
    """Noise sd and shift within `max_z` standard errors, lower bound <= claim."""
    return (abs(self.sd_z()) <= max_z and abs(self.shift_z()) <= max_z
            and self.eps_lower <= self.epsilon)


# ------------------------------------------------------------------ statistics
def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
  """One-sided (1 - alpha) Clopper-Pearson upper bound on a binomial rate k/n."""
  if k >= n:
    return 1.0
  return float(stats.beta.ppf(1.0 - alpha, k + 1, n - k))


def _rates_bound(fpr: float, fnr: float, delta: float) -> float:
  """The epsilon that (epsilon, delta)-DP needs for a test with these error rates.

  Any test with false-positive rate FPR and false-negative rate FNR between
  neighbouring data sets satisfies FPR + e^eps FNR >= 1 - delta and
  FNR + e^eps FPR >= 1 - delta (Kairouz, Oh and Viswanath 2015).
  """
  best = 0.0
  for a, b in ((fpr, fnr), (fnr, fpr)):
    if a > 0 and 1.0 - delta - b > a:
      best = max(best, math.log((1.0 - delta - b) / a))
  return best


def _bound_at(null: np.ndarray, alt: np.ndarray, tau: float, delta: float, alpha: float,
              direction: int) -> float:
  """Lower bound of the test `score > tau` (direction +1) or `score <= tau`.

  direction +1 bounds log((1 - delta - FNR) / FPR), -1 the mirror image;
  both rates are replaced by Clopper-Pearson upper bounds at alpha / 2 each.
  """
  fp = int(np.sum(null > tau))
  fn = int(np.sum(alt <= tau))
  n0, n1 = len(null), len(alt)
  if direction > 0:
    a, b = clopper_pearson_upper(fp, n0, alpha / 2), clopper_pearson_upper(fn, n1, alpha / 2)
  else:
    a, b = clopper_pearson_upper(fn, n1, alpha / 2), clopper_pearson_upper(fp, n0, alpha / 2)
  if a <= 0 or 1.0 - delta - b <= a:
    return 0.0
  return math.log((1.0 - delta - b) / a)


def threshold_epsilon_lower_bound(null: np.ndarray, alt: np.ndarray, delta: float,
                                  alpha: float = 0.05) -> tuple[float, float]:
  """Epsilon lower bound from two-world samples of a scalar statistic.

  The trials of each world are split in two halves: the first half chooses
  the threshold tau and the direction of the test (`score > tau` means "the
  canary is in"), the second half alone gives the bound, so choosing the
  threshold costs no multiple-testing correction. The false-positive and
  false-negative rates are replaced by Clopper-Pearson upper bounds (alpha/2
  each), then epsilon >= log((1 - delta - FNR) / FPR) (or the mirror image).

  Args:
    null: the statistic in the world without the canary, [n0].
    alt: the statistic in the world with it, [n1].
    delta: the claimed delta.
    alpha: 1 - confidence.

  Returns:
    (epsilon lower bound, the chosen threshold).
  """
  null, alt = np.asarray(null, np.float64), np.asarray(alt, np.float64)
  _, tau, direction = _select_threshold(null[0::2], alt[0::2], delta, alpha)
  return _bound_at(null[1::2], alt[1::2], tau, delta, alpha, direction), tau


def _select_threshold(sel0: np.ndarray, sel1: np.ndarray, delta: float,
                      alpha: float) -> tuple[float, float, int]:
  """(bound, threshold, direction) of the best test on the selection half."""
  pooled = np.concatenate([sel0, sel1])
  levels = np.concatenate([np.linspace(0.0005, 0.9995, 400),
                           1.0 - np.geomspace(0.5, 1.0, 60) / len(pooled),
                           np.geomspace(0.5, 1.0, 60) / len(pooled)])
  taus = np.unique(np.quantile(pooled, np.clip(levels, 0.0, 1.0)))
  best = (0.0, float(np.median(pooled)), 1)
  for tau in taus:
    for direction in (1, -1):
      b = _bound_at(sel0, sel1, tau, delta, alpha, direction)
      if b > best[0]:
        best = (b, float(tau), direction)
  return best


def multi_statistic_epsilon_lower_bound(null: np.ndarray, alt: np.ndarray, delta: float,
                                        alpha: float = 0.05) -> tuple[float, float, int]:
  """`threshold_epsilon_lower_bound` when several statistics of each trial are released.

  The selection half (even trials) chooses the statistic as well as the
  threshold and direction; the evaluation half (odd trials) alone gives the
  bound, so trying several statistics costs no multiple-testing correction.

  Args:
    null: the statistics in the world without the canary, [n0, k].
    alt: the statistics in the world with it, [n1, k].
    delta: the claimed delta.
    alpha: 1 - confidence.

  Returns:
    (epsilon lower bound, the chosen threshold, the chosen statistic's column).
  """
  null, alt = np.asarray(null, np.float64), np.asarray(alt, np.float64)
  best = (-1.0, 0.0, 1, 0)
  for j in range(null.shape[1]):
    b, tau, direction = _select_threshold(null[0::2, j], alt[0::2, j], delta, alpha)
    if b > best[0]:
      best = (b, tau, direction, j)
  _, tau, direction, j = best
  return _bound_at(null[1::2, j], alt[1::2, j], tau, delta, alpha, direction), tau, j


def sd_with_se(x: np.ndarray) -> tuple[float, float]:
  """Sample sd and its standard error sd / sqrt(2 (n - 1)) (Gaussian data)."""
  x = np.asarray(x, np.float64)
  sd = float(np.std(x, ddof=1))
  return sd, sd / math.sqrt(2.0 * (len(x) - 1))


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
  """P[at least v of r guesses correct] for an (epsilon, delta)-DP algorithm.

  Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run",
  NeurIPS 2023 (arXiv:2305.08846), Theorem 5.2, computed as in their
  Appendix D: m canaries, each included independently with probability 1/2; an
  auditor that guesses r of them (abstaining on the rest) is right on
  v guesses with probability at most
  P[Binomial(r, p) >= v] + 2 m delta max_{1 <= i <= v} P[v > Binomial(r, p) >= v - i] / i,
  with p = e^eps / (1 + e^eps), the accuracy of eps-DP randomised response.
  """
  if not 0 <= v <= r <= m:
    raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
  p = 1.0 / (1.0 + math.exp(-epsilon))
  beta = float(stats.binom.sf(v - 1, r, p))
  if delta == 0.0 or v == 0:
    return min(beta, 1.0)
  pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, p)   # P[B = v-1], ..., P[B = 0]
  partial = np.cumsum(pmf)                                # i = 1..v: P[v > B >= v - i]
  worst = float(np.max(partial / np.arange(1, v + 1)))
  return min(beta + 2.0 * m * delta * worst, 1.0)


def one_run_epsilon_lower_bound(m: int, r: int, v: int, delta: float,
                                alpha: float = 0.05) -> float:
  """The largest epsilon rejected at level alpha by `one_run_p_value` (bisection).

  Returns 0 when even epsilon = 0 is not rejected.
  """
  if one_run_p_value(m, r, v, 0.0, delta) >= alpha:
    return 0.0
  lo, hi = 0.0, 1.0
  while one_run_p_value(m, r, v, hi, delta) < alpha:
    lo, hi = hi, 2.0 * hi
  for _ in range(50):
    mid = 0.5 * (lo + hi)
    if one_run_p_value(m, r, v, mid, delta) < alpha:
      lo = mid
    else:
      hi = mid
  return lo


# ------------------------------------------------------------------ (a) canary audit of fit
@contextlib.contextmanager
def sgd_on_locations():
  """While active, `optax.adam(lr)` is plain SGD at rate lr on the posterior LOCATIONS.

  `jtwin.infer.fit` builds its optimizer with `optax.adam(lr)` over the flat
  vector [loc (P), raw_scale (P)] of the variational parameters. For the
  audit, the locations take plain SGD steps (ascent on the ELBO) and the
  scales stay put (yields the list of learning rates it was built with, so
  a caller can check that fit really used it), so with learning rate 1, a flat prior and init_method
  "zeros" the final location is exactly the sum over steps of the released
  noisy gradients (clipped sum + N(0, (sigma C)^2)) / q. Nothing else in fit
  changes: batching, clipping, noise and accounting are the real code.
  """
  original = optax.adam
  used = []

  def sgd(learning_rate, *args, **kwargs):
    del args, kwargs
    used.append(learning_rate)

    def init(params):
      del params
      return optax.EmptyState()

    def update(updates, state, params=None):
      del params
      size = updates.shape[0] // 2
      keep = jnp.concatenate([jnp.ones(size, updates.dtype),
                              jnp.zeros(updates.shape[0] - size, updates.dtype)])
      return -learning_rate * updates * keep, state

    return optax.GradientTransformation(init, update)

  optax.adam = sgd
  try:
    yield used
  finally:
    optax.adam = original


@contextlib.contextmanager
def forced_overflow(max_batch: int):
  """While active, fit pads Poisson batches to `max_batch` rows: most batches overflow.

  Both the initial padding (`batching.default_max_batch`) and every draw use
  the tiny width, so every chunk goes through the overflow path of
  `batching.draw` (the Bernoulli process continued to the end of the data)
  and fit's re-padding.
  """
  from jtwin import batching
  original_default, original_draw = batching.default_max_batch, batching.draw
  batching.default_max_batch = lambda n, q: max_batch
  batching.draw = lambda rng, n, q, steps, width: original_draw(rng, n, q, steps, max_batch)
  try:
    yield
  finally:
    batching.default_max_batch, batching.draw = original_default, original_draw


def slot_model(num_slots: int, scale: float):
  """A linear custom model: one parameter per canary slot.

  A row holds one slot index j (float); its log-likelihood is scale * w[j],
  so its gradient is scale * e_j, independent of the parameters: with
  scale > C it is clipped to C (1 - 2^-16) along e_j. The prior is flat.
  """
  from jtwin.models import Model

  def init(key):
    del key
    return {"w": jnp.zeros(num_slots, jnp.float32)}

  def log_likelihood(theta, x, observed):
    del observed
    return scale * theta["w"][x[0].astype(jnp.int32)]

  def sample(key, theta, n):
    del theta
    return (jax.random.randint(key, (n, 1), 0, num_slots).astype(jnp.float32),
            jnp.ones((n, 1), bool))

  return Model(init=init, log_prior=lambda theta: jnp.zeros((), jnp.float32),
               log_likelihood=log_likelihood, sample=sample)


def canary_audit(name: str, *, epsilon: float, sampling_ratio: float, steps: int,
                 delta: float = 1e-5, num_slots: int = 4000, num_fits: int = 1,
                 clip: float = 1.0, overflow_batch: Optional[int] = None, seed: int = 0,
                 alpha: float = 0.05) -> AuditRow:
  """White-box two-world canary audit of `jtwin.infer.fit`.

  One fit of `slot_model` has `num_slots` independent two-world trials: the
  even slots hold a canary row (gradient 10 C e_j, clipped to C), the odd
  slots none, and no other row touches slot j, so parameter j after T steps
  of SGD at learning rate 1 is, exactly,

    w_j = (C' Binomial(T, q) [canary in] + sigma C sqrt(T) Z_j) / q,

  C' = C (1 - 2^-16), with independent Z_j across slots and fits. The odd
  slots give the noise sd (expected sigma C sqrt(T) / q), the difference of
  the means the canary shift (expected C' T), and the two samples the
  epsilon lower bound (`threshold_epsilon_lower_bound`).

  Args:
    name: the row's label.
    epsilon: the target epsilon (sigma is calibrated by `privacy_plan`).
    sampling_ratio: q.
    steps: T (num_epochs = T q).
    delta: delta.
    num_slots: canary slots per fit (half of them with a canary).
    num_fits: independent fits (trials per world = num_fits * num_slots / 2).
    clip: C.
    overflow_batch: if given, batches are padded to this many rows so that
      they overflow (`forced_overflow`).
    seed: seed of the fits' keys.
    alpha: 1 - confidence of the lower bound.

  Returns:
    An `AuditRow`.
  """
  from jtwin import infer
  q = sampling_ratio
  num_slots -= num_slots % 2
  present = np.arange(0, num_slots, 2)
  values = present.astype(np.float32)[:, None]
  observed = np.ones_like(values, bool)
  model = slot_model(num_slots, 10.0 * clip)
  plan = infer.privacy_plan(len(values), epsilon=epsilon, delta=delta, sampling_ratio=q,
                            num_epochs=steps * q, clipping_threshold=clip)
  if plan.steps != steps:
    raise ValueError(f"{steps} steps requested, the plan runs {plan.steps}")
  null, alt, mean_batch = [], [], []
  overflow = forced_overflow(overflow_batch) if overflow_batch else contextlib.nullcontext()
  with sgd_on_locations() as used, overflow:
    for i in range(num_fits):
      res = infer.fit(jax.random.key(seed * 100003 + i), model, (values, observed),
                      privacy=plan, learning_rate=1.0, schedule="constant",
                      average_decay=None, init_method="zeros")
      if used != [1.0] * (i + 1):
        raise RuntimeError("fit no longer builds its optimizer with optax.adam(learning_rate): "
                           "update sgd_on_locations() so the audit runs plain SGD")
      w = np.asarray(res.posterior.loc["w"], np.float64)
      alt.append(w[0::2])
      null.append(w[1::2])
      mean_batch.append(float(np.mean(res.diagnostics["mean_batch_size"])))
  null, alt = np.concatenate(null), np.concatenate(alt)
  sigma = plan.noise_multiplier
  c_eff = clip * (1.0 - 2.0**-16)
  sd_exp = sigma * clip * math.sqrt(steps) / q
  sd, sd_se = sd_with_se(null)
  shift = float(alt.mean() - null.mean())
  var_alt = sd_exp**2 + c_eff**2 * steps * (1.0 - q) / q
  shift_se = math.sqrt(sd_exp**2 / len(null) + var_alt / len(alt))
  lower, _ = threshold_epsilon_lower_bound(null, alt, delta, alpha)
  return AuditRow(name, plan.epsilon, delta, sd, sd_exp, sd_se, shift, c_eff * steps, shift_se,
                  lower, len(null),
                  {"sigma": sigma, "q": q, "T": steps,
                   "mean_batch": float(np.mean(mean_batch)),
                   "expected_batch": q * len(values)})


# ------------------------------------------------------------------ (c) warm start
def normal_tail_check(num_draws: int, threshold: float = 5.4, seed: int = 0,
                      chunk: int = 10_000_000) -> dict:
  """How often `dp.wide_normal` (the generator of every Gaussian mechanism) exceeds a threshold.

  `jax.random.normal` in float32 never exceeds about 5.4 (dp_engines.md
  section 4.1); a standard normal does so with probability 2 Q(5.4) = 6.7e-8.

  Returns:
    {"draws", "count" (|z| > threshold), "expected", "max_abs"}.
  """
  from jtwin import dp
  count_fn = jax.jit(lambda k: (jnp.sum(jnp.abs(dp.wide_normal(k, (chunk,))) > threshold),
                                jnp.max(jnp.abs(dp.wide_normal(k, (chunk,))))))
  keys = jax.random.split(jax.random.key(seed), max(1, -(-num_draws // chunk)))
  count, top = 0, 0.0
  for k in keys:
    c, m = count_fn(k)
    count, top = count + int(c), max(top, float(m))
  draws = len(keys) * chunk
  return {"draws": draws, "count": count, "expected": draws * 2.0 * stats.norm.sf(threshold),
          "max_abs": top}


def warm_start_audit(name: str, *, noise_multiplier: float, delta: float = 1e-5,
                     num_slots: int = 10_000, num_calls: int = 10, seed: int = 0,
                     tail: float = 5.4, max_trials: int = 2_000_000,
                     alpha: float = 0.05) -> AuditRow:
  """Two-world test of the mixture's DP warm start (`Model.warm_start`), as `fit` calls it.

  The model has two categorical columns (D_cat = 2, so the noise sd on every
  count is noise_multiplier * sqrt(2)): "slot" with `num_slots` + 1
  categories and a binary column. Slot i holds B rows (B > 8 noise sds, so
  the floor at 1 never acts), plus one canary row when i is even; the
  reference category holds 10^6 rows. Each call releases ALR logits
  log(noisy_i) - log(noisy_ref); noisy_i is recovered as exp(logit) * 10^6
  (relative error of the reference's noise < 1e-4, a common factor), so each
  call is `num_slots` independent two-world trials of count B vs B + 1.

  Besides the sd, shift and lower bound (from at most `max_trials` trials
  per world), the row's `extra` has the number of recovered noise values
  (every call) beyond `tail` sds against the Gaussian expectation: truncated
  noise (float32 `jax.random.normal` stops near 5.4) gives 0; and the first
  call's key and standardised noise of the slot counts ("first_key",
  "first_z"), to compare with the generator.

  Returns:
    An `AuditRow`; its epsilon is the analytic Gaussian mechanism's at
    (noise_multiplier, delta), as `privacy_plan` accounts the warm start.
  """
  from jtwin.accounting import gaussian
  from jtwin.models import Feature, make_mixture_model
  num_slots -= num_slots % 2
  model = make_mixture_model([Feature("slot", "categorical", num_slots + 1),
                              Feature("flag", "bernoulli", 2)], num_components=1)
  sd_exp = noise_multiplier * math.sqrt(2.0)
  base, ref = int(math.ceil(8.0 * sd_exp + 2.0)), 1_000_000
  slots = np.concatenate([np.repeat(np.arange(num_slots), base), np.arange(0, num_slots, 2),
                          np.full(ref, num_slots)])
  values = np.stack([slots, np.arange(len(slots)) % 2], 1).astype(np.float32)
  observed = np.ones_like(values, bool)
  truth = np.full(num_slots, float(base))
  truth[0::2] += 1.0
  null, alt = [], []
  beyond, top, draws, first = 0, 0.0, 0, None
  keys = jax.random.split(jax.random.key(seed), num_calls)
  for k in keys:
    logits = np.asarray(model.warm_start(k, values, observed, noise_multiplier)["cat_logits"][0],
                        np.float64)
    noisy = np.exp(logits[:num_slots]) * ref       # slot column: free logits come first
    z = (noisy - truth) / sd_exp
    first = z if first is None else first
    beyond += int(np.sum(np.abs(z) > tail))
    top, draws = max(top, float(np.max(np.abs(z)))), draws + len(z)
    if sum(len(x) for x in null) < max_trials:
      alt.append(noisy[0::2] - base)
      null.append(noisy[1::2] - base)
  null, alt = np.concatenate(null), np.concatenate(alt)
  sd, sd_se = sd_with_se(null)
  shift = float(alt.mean() - null.mean())
  shift_se = sd_exp * math.sqrt(1.0 / len(null) + 1.0 / len(alt))
  lower, _ = threshold_epsilon_lower_bound(null, alt, delta, alpha)
  return AuditRow(name, gaussian.gaussian_epsilon(noise_multiplier, delta), delta, sd, sd_exp,
                  sd_se, shift, 1.0, shift_se, lower, len(null),
                  {"sigma": noise_multiplier, "tail": tail, "beyond_tail": beyond,
                   "beyond_expected": draws * 2.0 * stats.norm.sf(tail), "draws": draws,
                   "max_abs_z": top, "first_key": keys[0], "first_z": first,
                   "num_categories": num_slots + 1 + 2})


# ------------------------------------------------------------------ (b) one-run audit
def one_run_audit(name: str, *, epsilon: float, num_canaries: int = 1000,
                  num_background: int = 2000, num_components: int = 3,
                  sampling_ratio: float = 0.05, num_epochs: float = 10.0,
                  group_clip: bool = True, delta: float = 1e-5, seed: int = 0,
                  guesses: Sequence[int] = (10, 25, 50, 100, 200),
                  score: str = "logit", warm_start: float = 0.0,
                  alpha: float = 0.05) -> AuditRow:
  """One-run audit (Steinke, Nasr and Jagielski 2023) of the mixture model's DP fit.

  The table has a categorical canary-id column with m + 1 categories, a
  3-category column and a normal column. `num_background` rows have id m
  (the reference category) and random other cells; canary i (id i, the
  other cells fixed at 0 and 0.0) is in the data with probability 1/2,
  independently, drawn from `seed`. One `jtwin.infer.fit` of
  `make_mixture_model(..., group_clip)` runs with its defaults (DP warm
  start included); each canary is scored by the log-likelihood of its row
  under the posterior mean. For each k in `guesses` the auditor guesses the
  k highest scores "in" and the k lowest "out"; `one_run_epsilon_lower_bound`
  turns the number of correct guesses into a bound at level alpha / len(guesses)
  (Bonferroni over the k tried), and the row reports the largest.

  The sd and shift columns are on the score: sd of the scores of excluded
  canaries, and the mean score difference (in - out), which has no
  closed-form expectation (reported with expectation nan).

  Returns:
    An `AuditRow` (trials = m).
  """
  from jtwin import infer
  from jtwin.models import Feature, make_mixture_model
  m = num_canaries
  rng = np.random.default_rng(seed)
  included = rng.random(m) < 0.5
  bg = np.stack([np.full(num_background, m), rng.integers(0, 3, num_background),
                 rng.normal(0.0, 1.0, num_background)], 1)
  ids = np.nonzero(included)[0]
  canary_rows = np.stack([np.arange(m), np.zeros(m), np.zeros(m)], 1)
  values = np.concatenate([bg, canary_rows[ids]]).astype(np.float32)
  values = values[rng.permutation(len(values))]
  observed = np.ones_like(values, bool)
  features = [Feature("canary_id", "categorical", m + 1), Feature("x", "categorical", 3),
              Feature("y", "normal")]
  model = make_mixture_model(features, num_components, group_clip=group_clip)
  res = infer.fit(jax.random.key(seed), model, (values, observed), epsilon=epsilon, delta=delta,
                  sampling_ratio=sampling_ratio, num_epochs=num_epochs, init_method="zeros",
                  warm_start=warm_start)
  theta = jax.tree.map(jnp.asarray, res.posterior.loc)
  if score == "logit":
    scores = np.asarray(theta["cat_logits"][:, :m], np.float64).mean(0)
  else:
    batch = model.log_likelihood_batch
    scores = np.asarray(batch(theta, jnp.asarray(canary_rows, jnp.float32),
                              jnp.ones(canary_rows.shape, bool)), np.float64)
  order = np.argsort(-scores, kind="stable")
  best, best_k, best_v = 0.0, 0, 0
  for k in guesses:
    k = min(k, m // 2)
    v = int(np.sum(included[order[:k]]) + np.sum(~included[order[m - k:]]))
    lb = one_run_epsilon_lower_bound(m, 2 * k, v, res.privacy.delta, alpha / len(guesses))
    if lb >= best:
      best, best_k, best_v = lb, k, v
  out, inn = scores[~included], scores[included]
  sd, sd_se = sd_with_se(out)
  shift = float(inn.mean() - out.mean())
  shift_se = math.sqrt(out.var(ddof=1) / len(out) + inn.var(ddof=1) / len(inn))
  return AuditRow(name, res.privacy.epsilon, res.privacy.delta, sd, math.nan, sd_se, shift,
                  math.nan, shift_se, best, m,
                  {"k": best_k, "correct": best_v, "guesses": 2 * best_k,
                   "included": int(included.sum()), "steps": res.privacy.steps,
                   "sigma": res.privacy.noise_multiplier, "group_clip": group_clip,
                   "clip_fraction": float(np.mean(res.diagnostics["clip_fraction"]))})


# ------------------------------------------------------------------ (d) marginal method
@contextlib.contextmanager
def capture_measurements(calls: list):
  """While active, every Gaussian measurement `jtwin.fit_marginals` makes is recorded.

  `napsumq.make_counter` (the counter of exact tables) and
  `napsumq.gaussian_measure` are wrapped (the real functions still run):
  each `gaussian_measure(counts, sigma, rng)` call appends {"sigma",
  "counts", "noisy", "codes", "sizes", "clique"} to `calls`, the last three
  from the counter call that produced `counts` (None if the counts came
  from elsewhere).
  """
  from jtwin import napsumq
  original_counter, original_measure = napsumq.make_counter, napsumq.gaussian_measure
  made = {}

  def counter_fn(*args, **kwargs):
    count = original_counter(*args, **kwargs)

    def counts_fn(codes, sizes, cliques):
      out = count(codes, sizes, cliques)
      for table, clique in zip(out, cliques):
        made[id(table)] = (table, codes, list(sizes), tuple(clique))
      return out
    return counts_fn

  def measure_fn(counts, sigma, rng):
    noisy = original_measure(counts, sigma, rng)
    _, codes, sizes, clique = made.get(id(counts), (None, None, None, None))
    calls.append({"sigma": float(sigma), "counts": np.array(counts, np.float64),
                  "noisy": np.array(noisy, np.float64), "codes": codes, "sizes": sizes,
                  "clique": clique})
    return noisy

  napsumq.make_counter, napsumq.gaussian_measure = counter_fn, measure_fn
  try:
    yield
  finally:
    napsumq.make_counter, napsumq.gaussian_measure = original_counter, original_measure


def marginals_audit(name: str, *, epsilon: float, delta: float = 1e-5, num_slots: int = 400,
                    num_runs: int = 1, seed: int = 0, alpha: float = 0.05,
                    residuals: Optional[bool] = None) -> AuditRow:
  """Two-world test of the Gaussian measurements released by `jtwin.fit_marginals`.

  Two fully declared categorical columns A and B (categories and
  `missing = no`, so the DP domain step releases nothing and the
  measurements get the whole budget) with `num_slots` categories each;
  slot i holds `base` rows (A = i, B = i), base well above the compression
  threshold (so no cell is merged), plus one canary row (i, i) when i is
  even. With selection "all" the method measures the 1-way tables of A and
  B and the 2-way table (A, B), each adding N(0, sigma_t^2) per cell; the
  measurement of slot i's cell in table t is y_ti. The optimal (Neyman-
  Pearson) statistic for one slot is S_i = sum_t (y_ti - base) / sigma_t^2,
  N(0, mu^2) without the canary and N(mu^2, mu^2) with it,
  mu^2 = sum_t 1 / sigma_t^2 (= 2 rho of the measurements; each run is
  `num_slots` / 2 trials per world). A centred table (`residuals`,
  `jtwin.marginals.residual`) releases R (T + noise): the canary moves it by
  R e_cell, the statistic's term is <R e_cell, release - R T_null> / sigma_t^2
  and its mu^2 term s_t^2 / sigma_t^2, s_t the recorded sensitivity
  (`residuals`: None for `fit_marginals`' default). The noise sd is checked per table
  against the sigma that the result records (`MarginalResult.measurements`);
  the row's sd columns are on S_i (expected mu). The fit after the
  measurements is cut to one step (post-processing; its settings do not
  change what is released by the measurements).

  Returns:
    An `AuditRow`; extra["tables"] lists per table (clique, recorded sigma,
    measured sd, its standard error).
  """
  import pandas as pd
  from jtwin import napsumq
  from jtwin.marginals import residual as rs
  from jtwin.spec import parse_model_text
  num_slots -= num_slots % 2
  cats = ", ".join(f"s{i}" for i in range(num_slots))
  spec = parse_model_text(f"A : categorical ; categories = {cats} ; missing = no\n"
                          f"B : categorical ; categories = {cats} ; missing = no\n")
  from jtwin.accounting import zcdp
  sigma1 = math.sqrt(2.0 / (2.0 * 0.4 * zcdp.cdp_rho(epsilon, delta)))
  base = int(math.ceil(3.0 * sigma1 + 8.0 * sigma1))
  slot_of_row = np.concatenate([np.arange(num_slots), np.repeat(np.arange(num_slots), base - 1),
                                np.arange(0, num_slots, 2)])
  labels = np.array([f"s{i}" for i in range(num_slots)], object)[slot_of_row]
  frame = pd.DataFrame({"A": labels, "B": labels})
  null, alt, tables, claimed = [], [], {}, None
  for run in range(num_runs):
    calls = []
    with capture_measurements(calls):
      res = napsumq.fit_marginals(jax.random.key(seed * 7919 + run), frame, spec,
                                  epsilon=epsilon, delta=delta, selection="all",
                                  num_components=2, round_steps=1, final_steps=1,
                                  posterior_steps=1,
                                  **({} if residuals is None else {"residuals": residuals}))
    claimed = res.privacy
    recorded = [sd for _, _, sd, _ in res.measurements]
    sensitivity = [s for _, _, _, s in res.measurements]
    if len(recorded) != len(calls):
      raise AssertionError(f"{len(calls)} Gaussian measurements, {len(recorded)} recorded")
    stat = np.zeros(num_slots)
    for call, sd_rec, sens in zip(calls, recorded, sensitivity):
      if call["sigma"] != sd_rec:
        raise AssertionError(f"measured with sigma {call['sigma']}, recorded {sd_rec}")
      noise = call["noisy"] - call["counts"]
      tables.setdefault(call["clique"], (sd_rec, sens, []))[2].append(noise)
      if call["clique"] is None:
        continue
      dims = tuple(int(call["sizes"][v]) for v in call["clique"])
      cell = np.ravel_multi_index(tuple(call["codes"][:num_slots, v] for v in call["clique"]),
                                  dims)
      if len(np.unique(cell)) != num_slots:
        raise AssertionError("slots share a cell: the test's data do not separate them")
      if sens != 1.0:
        # a centred table (`jtwin.marginals.residual`, every axis here): the release is
        # R (counts + noise); a canary moves it by R e_cell, and the optimal statistic
        # <R e_cell, release - R counts_null> / sigma^2 = ((R noise)[cell] + canary s^2) / sigma^2
        axes = tuple(range(len(dims)))
        if not math.isclose(sens, rs.sensitivity(dims, axes), rel_tol=1e-12):
          raise AssertionError(f"recorded sensitivity {sens} is not that of a centred table")
        noise = rs.centre(noise, dims, axes)
      canary = call["counts"][cell] - base
      stat += (noise[cell] + canary * sens**2) / call["sigma"]**2
    alt.append(stat[0::2])
    null.append(stat[1::2])
  null, alt = np.concatenate(null), np.concatenate(alt)
  mu2 = sum(sens**2 / sd**2 for sd, sens, _ in tables.values())
  sd, sd_se = sd_with_se(null)
  shift = float(alt.mean() - null.mean())
  shift_se = math.sqrt(mu2) * math.sqrt(1.0 / len(null) + 1.0 / len(alt))
  lower, _ = threshold_epsilon_lower_bound(null, alt, delta, alpha)
  per_table = []
  for clique, (sd_rec, _, noise) in tables.items():
    t_sd, t_se = sd_with_se(np.concatenate(noise))
    per_table.append((clique, sd_rec, t_sd, t_se))
  return AuditRow(name, claimed.epsilon, claimed.delta, sd, math.sqrt(mu2), sd_se, shift, mu2,
                  shift_se, lower, len(null),
                  {"tables": per_table, "rho_measured": mu2 / 2.0, "rho_claimed": claimed.rho,
                   "sensitivities": {clique: sens for clique, (_, sens, _) in tables.items()},
                   "base": base, "privacy": claimed})


# ------------------------------------------------------------------ (e) DP row count
def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
  """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial rate k/n."""
  if k <= 0:
    return 0.0
  return float(stats.beta.ppf(alpha, k, n - k + 1))


def row_count_audit(name: str, *, epsilon: float, n: int = 10_000, draws: int = 200_000,
                    seed: int = 0, alpha: float = 0.05) -> AuditRow:
  """Two-world test of `dp_domain.noisy_row_count` (N rows against N + 1).

  The real function is called `draws` times in each world with its own
  numpy Generator. The released count is N + L, L two-sided geometric,
  P(L = d) = (1 - a) / (1 + a) a^|d| with a = e^-epsilon, so its sd is
  sqrt(2a) / (1 - a), the extra row shifts the mean by 1, and the privacy
  loss of the test "count > N" is exactly epsilon:
  P1(count > N) / P0(count > N) = P(L >= 0) / P(L >= 1) = e^epsilon.
  `extra` has that measured log-ratio ("loss", with "loss_se"), the same
  for "count <= N" ("loss_low"), and the mass-function ratio
  P(L = k) / P(L = k + 1) estimated (maximum likelihood) from the
  non-negative noise of both worlds ("pmf_log_ratio", "pmf_se"); all three
  must be e^epsilon in logs, i.e. epsilon. `n` must leave the floor at 1
  out of reach (n > 30 sds).

  Returns:
    An `AuditRow` (delta 0: the mechanism is pure DP).
  """
  from jtwin import dp_domain
  a = math.exp(-epsilon)
  sd_exp = math.sqrt(2.0 * a) / (1.0 - a)
  if n < 30.0 * sd_exp:
    raise ValueError(f"n = {n} is within 30 sds ({sd_exp:.3g}) of the floor at 1")
  worlds = []
  for world, size in ((0, n), (1, n + 1)):
    rng = np.random.default_rng([seed, world])
    worlds.append(np.fromiter((dp_domain.noisy_row_count(rng, size, epsilon)
                               for _ in range(draws)), np.int64, draws))
  null, alt = worlds
  centred = null - null.mean()
  sd = float(np.std(null, ddof=1))
  # se of the sd from the fourth moment (the noise is far from Gaussian)
  sd_se = math.sqrt(max(float(np.mean(centred**4)) - sd**4, 0.0) / draws) / (2.0 * sd)
  shift = float(alt.mean() - null.mean())
  shift_se = sd_exp * math.sqrt(2.0 / draws)
  lower, _ = threshold_epsilon_lower_bound(null - n, alt - n, 0.0, alpha)

  def log_ratio(k1, k0):
    p1, p0 = k1 / draws, k0 / draws
    return math.log(p1 / p0), math.sqrt((1 - p1) / (draws * p1) + (1 - p0) / (draws * p0))

  loss, loss_se = log_ratio(int(np.sum(alt > n)), int(np.sum(null > n)))
  loss_low, loss_low_se = log_ratio(int(np.sum(null <= n)), int(np.sum(alt <= n)))
  noise = np.concatenate([null - n, alt - n - 1])
  tail = noise[noise >= 0].astype(np.float64)
  mean = float(tail.mean())              # geometric on {0, 1, ...}: mean a / (1 - a)
  a_hat = mean / (1.0 + mean)
  pmf = -math.log(a_hat)
  pmf_se = (1.0 - a_hat) / math.sqrt(a_hat * len(tail))
  return AuditRow(name, epsilon, 0.0, sd, sd_exp, sd_se, shift, 1.0, shift_se, lower, draws,
                  {"loss": loss, "loss_se": loss_se, "loss_low": loss_low,
                   "loss_low_se": loss_low_se, "pmf_log_ratio": pmf, "pmf_se": pmf_se,
                   "n": n, "min": int(min(null.min(), alt.min()))})


# ------------------------------------------------------------------ (f) DP category discovery
def domain_noise(epsilon: float, delta: float, num_columns: int = 1,
                 num_categorical: int = 1) -> tuple[float, float]:
  """(noise sd s, release threshold tau) of the DP domain step, from its definition.

  s = sqrt(m) sigma(epsilon, delta / 2) (exact analytic Gaussian mechanism),
  tau = 1 + s Phi^-1(1 - delta / 2 e^-epsilon / m_cat): a label held by one
  row passes with probability delta / 2 e^-epsilon / m_cat (tau = inf when
  m_cat = 0).
  """
  from jtwin.accounting import gaussian
  s = math.sqrt(num_columns) * gaussian.gaussian_noise_multiplier(epsilon, delta / 2.0)
  if num_categorical == 0:
    return s, math.inf
  share = delta / 2.0 * math.exp(-epsilon) / num_categorical
  return s, 1.0 + s * float(stats.norm.isf(share))


def category_audit(name: str, *, epsilon: float, delta: float, count: Optional[int] = None,
                   num_slots: int = 400, num_runs: int = 10, num_columns: int = 1,
                   rho: Optional[float] = None, threshold_delta: Optional[float] = None,
                   category_rho: float = 0.0, seed: int = 0,
                   alpha: float = 0.05) -> AuditRow:
  """Two-world test of DP category discovery (`dp_domain.release_domain`).

  One categorical column whose categories (and nothing else) are undeclared.
  Label "big" holds enough rows to be released always; slot label s_i holds
  c rows, plus one canary row when i is even (c = 0: odd slots are absent,
  even slots are singletons). Each label's noisy count has its own Gaussian
  noise, so one run is `num_slots` / 2 independent trials per world of
  "label released" at count c against c + 1; the runs use independent
  numpy Generators. The release probability at count k must be
  P(k + N(0, s^2) > tau) with (s, tau) from `domain_noise` (the values
  `DomainRelease` records are checked against them); at c = 0 the canary is
  released with probability delta / 2 e^-epsilon, the accounted share of
  delta, and an absent label never. With `num_columns` = m > 1, m - 1 more
  categorical columns with undeclared categories hold one label each (on
  every row, so always released): the noise grows to sqrt(m) sigma and the
  per-column share of the threshold's delta shrinks to 1/m.

  With `rho` (and `threshold_delta`), the zCDP form that `plan_release` uses
  for the marginal method: s = sqrt(m / (2 rho)) and a singleton passes
  with probability threshold_delta / m. The claim is then the Gaussian
  mechanism's (noise multiplier s / sqrt(m)): epsilon_g at `delta`, plus
  e^epsilon_g threshold_delta for the threshold. With `category_rho` (the
  marginal method's transfer of 1-way budget to released labels) every
  column's labels get that much more rho: s = (2 (rho / m + category_rho))^(-1/2).

  The row's sd columns hold the release rate with the canary (measured /
  closed form), its shift columns the rate difference p(c + 1) - p(c).

  Args:
    name: the row's label.
    epsilon, delta: the domain step's budget (the claim); with `rho`, epsilon
      is unused and delta is the Gaussian part's delta of the claim.
    count: c; None means floor(tau), the count nearest below the threshold.
    num_slots: slot labels per run (half of them with a canary).
    num_runs: independent runs of `release_domain`.
    num_columns: categorical columns with undeclared categories (m).
    rho, threshold_delta: the zCDP form's budget (see above).
    seed: seed of the runs' Generators.
    alpha: 1 - confidence.

  Returns:
    An `AuditRow`.
  """
  import pandas as pd
  from jtwin import dp_domain
  from jtwin.spec import parse_model_text
  num_slots -= num_slots % 2
  m = int(num_columns)
  if rho is None:
    s, tau = domain_noise(epsilon, delta, m, m)
    share = delta / 2.0 * math.exp(-epsilon) / m
    claim = (epsilon, delta)
    budget = {"epsilon": epsilon, "delta": delta}
  else:
    from jtwin.accounting import gaussian
    s = math.sqrt(m / (2.0 * rho))
    if category_rho:
      s = 1.0 / math.sqrt(1.0 / s**2 + 2.0 * category_rho)
    share = threshold_delta / m
    tau = 1.0 + s * float(stats.norm.isf(share))
    eps_g = gaussian.gaussian_epsilon(s / math.sqrt(m), delta)
    claim = (eps_g, delta + math.exp(eps_g) * threshold_delta)
    budget = {"rho": rho, "threshold_delta": threshold_delta, "category_rho": category_rho}
  c = int(math.floor(tau)) if count is None else int(count)
  big = int(math.ceil(tau + 12.0 * s)) + 1
  sizes = np.full(num_slots, c)
  sizes[0::2] += 1
  names = np.array([f"s{i}" for i in range(num_slots)], object)
  labels = np.concatenate([np.full(big, "big", object), np.repeat(names, sizes)])
  frame = pd.DataFrame({"A": labels, **{f"B{j}": "b" for j in range(1, m)}})
  spec = parse_model_text("".join(f"{v} : categorical ; missing = no\n" for v in frame.columns))
  released = []
  for run in range(num_runs):
    rel = dp_domain.release_domain(np.random.default_rng([seed, run]), frame, spec, **budget)
    if not (math.isclose(rel.category_std, s, rel_tol=1e-9)
            and math.isclose(rel.threshold, tau, rel_tol=1e-9)):
      raise AssertionError(f"release_domain used s = {rel.category_std}, tau = {rel.threshold}; "
                           f"its definition says {s}, {tau}")
    cats = set(rel.spec.features[0].categories)
    released.append(np.array([v in cats for v in names]))
  released = np.concatenate([r.reshape(-1, 2) for r in released])
  alt, null = released[:, 0].astype(np.float64), released[:, 1].astype(np.float64)
  p = lambda k: 0.0 if k <= 0 else float(stats.norm.sf((tau - k) / s))
  p0, p1 = p(c), p(c + 1)
  r0, r1 = float(null.mean()), float(alt.mean())
  n0, n1 = len(null), len(alt)
  lower, _ = threshold_epsilon_lower_bound(null, alt, claim[1], alpha)
  k1 = int(alt.sum())
  return AuditRow(name, claim[0], claim[1], r1, p1, math.sqrt(p1 * (1 - p1) / n1), r1 - r0,
                  p1 - p0, math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0), lower, n1,
                  {"count": c, "s": s, "tau": tau, "rate0": r0, "rate0_expected": p0,
                   "rate1": r1, "rate1_expected": p1, "released1": k1,
                   "rate1_lower": clopper_pearson_lower(k1, n1, alpha),
                   "rate1_upper": clopper_pearson_upper(k1, n1, alpha),
                   "singleton_share": share, "columns": m})


# ------------------------------------------------------------------ (g) DP numeric domains
NUMERIC_STATISTICS = ("loc", "scale", "median edge", "lowest edge", "highest edge")
REFUSED = -1e30   # every statistic of a run whose range the DP domain step refused


def _numeric_statistics(rel, name: str) -> list:
  f = rel.spec.features[0]
  edges = np.asarray(rel.edges[name][0], np.float64)
  return [f.loc, f.scale, float(np.median(edges)), float(edges[0]), float(edges[-1])]


def numeric_domain_audit(name: str, *, epsilon: float, delta: float, change: str,
                         n: int = 200, num_runs: int = 2000, seed: int = 0,
                         alpha: float = 0.05) -> AuditRow:
  """Two-world test of a numeric column's DP domain (`dp_domain.release_domain`).

  One Normal column (integer and missing declared) whose standardisation and
  the marginal method's bin edges are released: the released loc, scale and
  edges are post-processing of one noisy histogram on the public grid.

  change "outlier": D is n values with log-normal quantiles around 10
  (exp(ln 10 + 0.5 z_i), z_i the normal quantiles at (i + 1/2) / n);
  D' = D plus one row at 10^9 (add one row; claim (epsilon, delta)).
  change "move": D is n / 2 values at 9.9 and n / 2 at 10.1, the two grid
  cells on either side of the edge 10, so the median sits on that edge; in
  D' one 9.9 is moved to 10.1, across the edge (replace one row, i.e.
  remove one and add one: the claim is group privacy for 2,
  (2 epsilon, (1 + e^epsilon) delta)).

  Each run releases `NUMERIC_STATISTICS`; `multi_statistic_epsilon_lower_bound`
  picks the statistic and threshold on half the runs. The sd and shift
  columns are those of the released loc (no closed form: expectations nan).

  Returns:
    An `AuditRow`; extra["statistic"] names the statistic the bound used.
  """
  import pandas as pd
  from jtwin import dp_domain
  from jtwin.spec import parse_model_text
  if change == "outlier":
    base = np.exp(math.log(10.0) + 0.5 * stats.norm.ppf((np.arange(n) + 0.5) / n))
    other = np.append(base, 1e9)
    claim = (epsilon, delta)
  elif change == "move":
    base = np.repeat([9.9, 10.1], [n - n // 2, n // 2])
    other = base.copy()
    other[0] = 10.1
    claim = (2.0 * epsilon, (1.0 + math.exp(epsilon)) * delta)
  else:
    raise ValueError(f"change must be 'outlier' or 'move', got {change!r}")
  spec = parse_model_text("y : normal ; integer = no ; missing = no\n")
  worlds = []
  for world, values in ((0, base), (1, other)):
    frame = pd.DataFrame({"y": values})
    out = []
    for run in range(num_runs):
      try:
        rel = dp_domain.release_domain(np.random.default_rng([seed, world, run]), frame, spec,
                                       epsilon=epsilon, delta=delta, need_edges=True)
        out.append(_numeric_statistics(rel, "y"))
      except DataError:     # "too few rows for its range": decided on the noisy histogram,
        out.append([REFUSED] * len(NUMERIC_STATISTICS))   # an outcome, mapped to a constant
    worlds.append(np.array(out, np.float64))
  null, alt = worlds
  lower, tau, j = multi_statistic_epsilon_lower_bound(null, alt, claim[1], alpha)
  ok0, ok1 = null[:, 0] != REFUSED, alt[:, 0] != REFUSED       # diagnostics: released runs
  sd, sd_se = sd_with_se(null[ok0, 0])
  shift = float(alt[ok1, 0].mean() - null[ok0, 0].mean())
  shift_se = math.sqrt(null[ok0, 0].var(ddof=1) / ok0.sum() + alt[ok1, 0].var(ddof=1) / ok1.sum())
  s, _ = domain_noise(epsilon, delta)
  return AuditRow(name, claim[0], claim[1], sd, math.nan, sd_se, shift, math.nan, shift_se,
                  lower, num_runs,
                  {"statistic": NUMERIC_STATISTICS[j], "threshold": tau, "s": s,
                   "domain_epsilon": epsilon, "domain_delta": delta,
                   "loc_median": float(np.median(null[ok0, 0])),
                   "refused": (float(np.mean(~ok0)), float(np.mean(~ok1))),
                   "top_edge_above_1e8": (float(np.mean(null[:, 4] > 1e8)),
                                          float(np.mean(alt[:, 4] > 1e8)))})


def missing_flag_audit(name: str, *, epsilon: float, delta: float, count: Optional[int] = None,
                       num_columns: int = 20, num_runs: int = 200, seed: int = 0,
                       alpha: float = 0.05) -> AuditRow:
  """Two-world test of the DP missing flag (`dp_domain.release_domain`).

  `num_columns` = m categorical columns with declared categories and an
  undeclared missing flag; column j has c missing values, plus one canary
  row's when j is even (a canary row missing in every even column: the
  worlds differ by one row). Each column's flag is "yes" when its noisy
  missing count passes 2 s, s = sqrt(m) sigma(epsilon, delta / 2), so it is
  "yes" with probability P(k + N(0, s^2) > 2 s) at k missing; the columns'
  noises are independent, so one run gives m / 2 trials per world. The sd
  columns hold the "yes" rate with the canary, the shift columns the rate
  difference, as in `category_audit`.

  Args:
    name: the row's label.
    epsilon, delta: the domain step's budget (the claim).
    count: c; None means floor(2 s), just below the rule's threshold.
    num_columns: m (even).
    num_runs: independent runs.
    seed: seed of the runs' Generators.
    alpha: 1 - confidence.

  Returns:
    An `AuditRow`.
  """
  import pandas as pd
  from jtwin import dp_domain
  from jtwin.spec import parse_model_text
  m = num_columns - num_columns % 2
  s, _ = domain_noise(epsilon, delta, m, 0)
  c = int(math.floor(2.0 * s)) if count is None else int(count)
  rows = c + 1 + 4
  frame = {}
  for j in range(m):
    col = np.full(rows, "a", object)
    col[:c] = None
    if j % 2 == 0:
      col[rows - 1] = None            # the canary row (the last) is missing here
    frame[f"c{j}"] = col
  frame = pd.DataFrame(frame)
  spec = parse_model_text("".join(f"{v} : categorical ; categories = a\n" for v in frame))
  flags = []
  for run in range(num_runs):
    rel = dp_domain.release_domain(np.random.default_rng([seed, run]), frame, spec,
                                   epsilon=epsilon, delta=delta)
    if not math.isclose(rel.noise_std, s, rel_tol=1e-9):
      raise AssertionError(f"release_domain used s = {rel.noise_std}, its definition says {s}")
    flags.append(np.array([bool(f.missing) for f in rel.spec.features]))
  flags = np.concatenate([f.reshape(-1, 2) for f in flags])
  alt, null = flags[:, 0].astype(np.float64), flags[:, 1].astype(np.float64)
  p = lambda k: float(stats.norm.sf((2.0 * s - k) / s))
  p0, p1 = p(c), p(c + 1)
  r0, r1 = float(null.mean()), float(alt.mean())
  n0, n1 = len(null), len(alt)
  lower, _ = threshold_epsilon_lower_bound(null, alt, delta, alpha)
  return AuditRow(name, epsilon, delta, r1, p1, math.sqrt(p1 * (1 - p1) / n1), r1 - r0,
                  p1 - p0, math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0), lower, n1,
                  {"count": c, "s": s, "rate0": r0, "rate0_expected": p0, "rate1": r1,
                   "rate1_expected": p1, "columns": m})


def fine_domain_audit(name: str, *, rho: float, delta: float, n: int = 800,
                      num_runs: int = 2000, seed: int = 0, alpha: float = 0.05) -> AuditRow:
  """Two-world test of the fine stage of a narrow numeric column's DP domain.

  One Poisson column of years, n / 16 rows at each of 2000..2015 (inside one
  grid cell of the public log grid, so `dp_domain._fine_edges` releases a
  second histogram of its sub-cells), released in the zCDP form with
  `rho` for the column's histogram; the fine histogram adds the same rho
  (m = 1), so the claim is (cdp_epsilon(2 rho, delta), delta) for add one
  row. D' = D plus one row at 2016, just past the top year. Each run
  releases the first and last fine edge and the number of edges (from the
  released `edges`); `multi_statistic_epsilon_lower_bound` picks one.

  Returns:
    An `AuditRow`; extra["statistic"] names the statistic the bound used,
    extra["fine_share"] the share of runs that used the fine edges.
  """
  import pandas as pd
  from jtwin import dp_domain
  from jtwin.accounting import zcdp
  from jtwin.spec import parse_model_text
  base = np.repeat(np.arange(2000, 2016), n // 16).astype(float)
  other = np.append(base, 2016.0)
  spec = parse_model_text("y : poisson ; missing = no\n")
  worlds, fine_used = [], []
  for world, values in ((0, base), (1, other)):
    frame = pd.DataFrame({"y": values})
    counts = dp_domain.count_domain(frame, spec, need_edges=True)
    out = []
    for run in range(num_runs):
      rel = dp_domain.release_counts(np.random.default_rng([seed, world, run]), counts, spec,
                                     rho=rho, threshold_delta=1e-9, need_edges=True)
      e = np.asarray(rel.edges["y"][0])
      out.append((e[0], e[-1], len(e)))
      fine_used.append("y: fine bin edges" in rel.released)
    worlds.append(np.array(out, np.float64))
  null, alt = worlds
  claim = float(zcdp.cdp_epsilon(2.0 * rho, delta))
  lower, tau, j = multi_statistic_epsilon_lower_bound(null, alt, delta, alpha)
  sd, sd_se = sd_with_se(null[:, 1])
  shift = float(alt[:, 1].mean() - null[:, 1].mean())
  shift_se = math.sqrt(null[:, 1].var(ddof=1) / num_runs + alt[:, 1].var(ddof=1) / num_runs)
  return AuditRow(name, claim, delta, sd, math.nan, sd_se, shift, math.nan, shift_se, lower,
                  num_runs, {"statistic": ("first edge", "last edge", "edges")[j],
                             "threshold": tau, "fine_share": float(np.mean(fine_used))})
