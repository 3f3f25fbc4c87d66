"""Empirical privacy audit, small versions (benchmarks/audit_privacy.py has the full table).

Each audit runs the real mechanism in two worlds (with and without a canary)
and asserts: the measured noise sd and the canary's mean shift are within 4
standard errors of what the mechanism's definition says, and the 95%
epsilon lower bound is at most the certified epsilon. The lower-bound
helpers are checked first on mechanisms whose epsilon is known exactly.
"""
import importlib.util
import math
import pathlib
import sys

import jax
import numpy as np
import pytest
from scipy import stats

from jtwin import dp
from jtwin.accounting import gaussian

_BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load_audit():
  if "_audit_common" in sys.modules:
    return sys.modules["_audit_common"]
  spec = importlib.util.spec_from_file_location("_audit_common", _BENCH / "_audit_common.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules["_audit_common"] = module
  spec.loader.exec_module(module)
  return module


ac = _load_audit()


def _assert_passed(row):
  assert abs(row.sd_z()) <= 4.0, (row.name, row.sd, row.sd_expected, row.sd_se)
  assert abs(row.shift_z()) <= 4.0, (row.name, row.shift, row.shift_expected, row.shift_se)
  assert row.eps_lower <= row.epsilon, (row.name, row.eps_lower, row.epsilon)


# ------------------------------------------------------------------ the bounds themselves
def test_threshold_bound_is_valid_and_has_power_on_a_known_gaussian_mechanism():
  # N(0, 1) vs N(3, 1): the Gaussian mechanism with noise multiplier 1/3.
  rng = np.random.default_rng(0)
  null, alt = rng.normal(0.0, 1.0, 40_000), rng.normal(3.0, 1.0, 40_000)
  exact = gaussian.gaussian_epsilon(1.0 / 3.0, 1e-5)
  lower, _ = ac.threshold_epsilon_lower_bound(null, alt, 1e-5)
  assert 1.5 < lower <= exact, (lower, exact)
  # identical worlds: no evidence of any leak
  lower0, _ = ac.threshold_epsilon_lower_bound(null, rng.normal(0.0, 1.0, 40_000), 1e-5)
  assert lower0 < 0.2


def test_clopper_pearson_upper_bound_covers():
  assert ac.clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05**(1 / 100))
  assert ac.clopper_pearson_upper(100, 100, 0.05) == 1.0
  assert 0.5 < ac.clopper_pearson_upper(50, 100, 0.05) < 0.6


def test_one_run_bound_on_randomised_response():
  # eps-DP randomised response on m canaries: the auditor guesses every bit
  # and is right with probability e^eps / (1 + e^eps); Steinke et al.'s bound
  # must not exceed eps, and with 10^4 guesses it comes close.
  eps, m = 2.0, 10_000
  rng = np.random.default_rng(1)
  correct = int(np.sum(rng.random(m) < math.exp(eps) / (1 + math.exp(eps))))
  lower = ac.one_run_epsilon_lower_bound(m, m, correct, 0.0)
  assert 1.8 < lower <= eps
  assert ac.one_run_epsilon_lower_bound(m, m, correct, 1e-5) <= lower
  # delta = 0: the p-value is the binomial tail exactly
  p = 1 / (1 + math.exp(-1.0))
  assert ac.one_run_p_value(100, 50, 40, 1.0, 0.0) == pytest.approx(stats.binom.sf(39, 50, p))
  assert ac.one_run_p_value(100, 50, 40, 1.0, 1e-3) > ac.one_run_p_value(100, 50, 40, 1.0, 0.0)
  # chance-level guessing proves nothing
  assert ac.one_run_epsilon_lower_bound(1000, 200, 100, 1e-5) == 0.0


# ------------------------------------------------------------------ (a) fit
def test_canary_audit_of_fit_eps2_q01_T100():
  row = ac.canary_audit("fit eps=2 q=0.1 T=100", epsilon=2.0, sampling_ratio=0.1, steps=100,
                        num_slots=2000, seed=11)
  _assert_passed(row)
  assert row.trials == 1000
  assert abs(row.extra["mean_batch"] - row.extra["expected_batch"]) < 4 * math.sqrt(100 * 0.9 / 100)


@pytest.mark.slow
@pytest.mark.parametrize("epsilon,q,steps,overflow", [(1.0, 0.01, 1000, None),
                                                      (2.0, 1.0, 10, None),
                                                      (2.0, 0.1, 100, 8)])
def test_canary_audit_of_fit_other_configurations(epsilon, q, steps, overflow):
  row = ac.canary_audit(f"fit eps={epsilon} q={q}", epsilon=epsilon, sampling_ratio=q,
                        steps=steps, num_slots=4000, num_fits=2, overflow_batch=overflow,
                        seed=12)
  _assert_passed(row)


# ------------------------------------------------------------------ (b) mixture, one run
def test_one_run_audit_of_the_mixture_fit():
  row = ac.one_run_audit("mixture eps=8", epsilon=8.0, num_canaries=1000, num_background=500,
                         num_epochs=5, seed=13)
  assert row.eps_lower <= row.epsilon
  assert row.trials == 1000
  # the canaries leave a visible trace: the audit has power at all
  assert row.shift > 0


@pytest.mark.slow
@pytest.mark.parametrize("group_clip", [True, False])
def test_one_run_audit_of_the_mixture_fit_group_clip(group_clip):
  row = ac.one_run_audit("mixture eps=16", epsilon=16.0, num_canaries=2000,
                         group_clip=group_clip, seed=14)
  assert row.eps_lower <= row.epsilon
  assert row.shift > 3 * row.shift_se


# ------------------------------------------------------------------ (c) warm start
def test_warm_start_two_world_and_full_tailed_generator():
  from jtwin import infer
  plan = infer.privacy_plan(30_000, epsilon=1.0, delta=1e-5, sampling_ratio=0.01,
                            num_epochs=200, clipping_threshold=1.0, warm_start=0.1)
  row = ac.warm_start_audit("warm start", noise_multiplier=plan.warm_start_noise,
                            delta=plan.warm_start_delta, num_slots=2000, num_calls=4, seed=15)
  _assert_passed(row)
  assert row.epsilon <= plan.warm_start_epsilon * (1 + 1e-9)
  # The released noise is exactly the full-tailed generator's draw for the
  # key it was given (a truncated generator such as float32
  # jax.random.normal would give other values).
  z = np.asarray(dp.wide_normal(row.extra["first_key"], (row.extra["num_categories"],)))
  np.testing.assert_allclose(row.extra["first_z"], z[:2000], atol=5e-3)


@pytest.mark.slow
def test_noise_generator_reaches_beyond_5_4_sd():
  # 2 Q(5.4) = 6.7e-8: 2e8 draws give 13 such values on average; float32
  # jax.random.normal gives none (its support ends near 5.4).
  tail = ac.normal_tail_check(200_000_000, 5.4, seed=16)
  assert tail["count"] >= 1 and tail["max_abs"] > 5.4
  assert abs(tail["count"] - tail["expected"]) <= 4 * math.sqrt(tail["expected"])


@pytest.mark.slow
def test_warm_start_tails_through_the_mechanism():
  row = ac.warm_start_audit("warm start tails", noise_multiplier=0.5, num_slots=1_000_000,
                            num_calls=30, seed=17, max_trials=200_000)
  _assert_passed(row)
  extra = row.extra
  assert abs(extra["beyond_tail"] - extra["beyond_expected"]) <= 4 * math.sqrt(
      extra["beyond_expected"]) + 1
  assert extra["max_abs_z"] > 4.5


# ------------------------------------------------------------------ (d) marginals
@pytest.mark.parametrize("residuals", [False, True])
def test_marginals_two_world(residuals):
  # False: a plain pair table; True (the default): centred, sensitivity < 1
  row = ac.marginals_audit("marginals eps=1", epsilon=1.0, num_slots=200, seed=18,
                           residuals=residuals)
  _assert_passed(row)
  sens = row.extra["sensitivities"]
  pair = [c for c in sens if c is not None and len(c) == 2]
  assert len(pair) == 1 and [sens[c] for c in sens if c is not None and len(c) == 1] == [1.0, 1.0]
  assert (sens[pair[0]] < 1.0) == residuals
  assert row.extra["rho_measured"] == pytest.approx(row.extra["rho_claimed"], rel=1e-12)
  for clique, recorded, sd, se in row.extra["tables"]:
    assert abs(sd - recorded) <= 4 * se, (clique, sd, recorded, se)


@pytest.mark.slow
def test_marginals_two_world_eps8():
  row = ac.marginals_audit("marginals eps=8", epsilon=8.0, num_slots=400, num_runs=2, seed=19)
  _assert_passed(row)
  assert row.eps_lower > 0


def test_benchmark_table_row_format():
  spec = importlib.util.spec_from_file_location("audit_privacy", _BENCH / "audit_privacy.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  row = ac.AuditRow("x", 2.0, 1e-5, 1.0, 1.0, 0.1, math.nan, math.nan, 0.1, 0.5, 10, {})
  line = bench.format_row(row)
  assert line.count("|") == bench.TABLE_HEAD.splitlines()[0].count("|")
  assert line.endswith("| yes |")
  assert not ac.AuditRow("y", 1.0, 1e-5, 1.0, 1.0, 0.1, 0.0, 0.0, 0.1, 1.5, 10, {}).passed()


# ------------------------------------------------------------------ (e)-(g) DP row count, domains
def test_multi_statistic_bound_picks_the_informative_statistic():
  rng = np.random.default_rng(20)
  null = np.stack([rng.normal(0.0, 1.0, 12_000), rng.normal(0.0, 1.0, 12_000)], 1)
  alt = np.stack([rng.normal(0.0, 1.0, 12_000), rng.normal(3.0, 1.0, 12_000)], 1)
  lower, _, column = ac.multi_statistic_epsilon_lower_bound(null, alt, 1e-5)
  assert column == 1
  assert 1.0 < lower <= gaussian.gaussian_epsilon(1.0 / 3.0, 1e-5)


def _assert_close(measured, expected, se, what):
  assert abs(measured - expected) <= 4.0 * se, (what, measured, expected, se)


@pytest.mark.parametrize("epsilon,draws", [
    (1.0, 20_000),
    pytest.param(0.01, 400_000, marks=pytest.mark.slow),
    pytest.param(0.5, 200_000, marks=pytest.mark.slow)])
def test_row_count_two_world(epsilon, draws):
  row = ac.row_count_audit("rows", epsilon=epsilon, n=10_000, draws=draws, seed=21)
  _assert_passed(row)
  x = row.extra
  # the privacy loss of "count > N" (and of "count <= N") is exactly epsilon,
  # and the mass function falls by e^epsilon per step
  _assert_close(x["loss"], epsilon, x["loss_se"], "loss")
  _assert_close(x["loss_low"], epsilon, x["loss_low_se"], "loss_low")
  _assert_close(x["pmf_log_ratio"], epsilon, x["pmf_se"], "pmf")
  assert x["min"] > 1                                  # the floor never acted
  if epsilon >= 0.5:
    assert row.eps_lower > 0.6 * epsilon               # the test has power


def _assert_category_row(row):
  _assert_passed(row)
  x = row.extra
  se0 = math.sqrt(max(x["rate0_expected"] * (1 - x["rate0_expected"]), 1e-12) / row.trials)
  _assert_close(x["rate0"], x["rate0_expected"], se0, "rate0")


def test_category_discovery_two_world_near_the_threshold():
  row = ac.category_audit("categories", epsilon=1.0, delta=1e-6, num_slots=1000, num_runs=4,
                          seed=22)
  assert row.extra["count"] == math.floor(row.extra["tau"])
  _assert_category_row(row)


def test_category_discovery_singleton_costs_the_accounted_delta_share():
  # A large delta makes the share measurable: a label held by one row is
  # released with probability delta / 2 e^-eps, one absent never.
  row = ac.category_audit("singleton", epsilon=1.0, delta=0.2, count=0, num_slots=2000,
                          num_runs=4, seed=23)
  _assert_category_row(row)
  x = row.extra
  assert x["rate0"] == 0.0
  assert x["rate1_expected"] == pytest.approx(x["singleton_share"], rel=1e-9)
  assert x["rate1_lower"] <= x["singleton_share"]      # not significantly above the share
  assert x["released1"] > 0


def test_category_discovery_singleton_with_three_columns():
  # three columns with undeclared categories: noise sqrt(3) sigma, and each
  # column's singleton share is a third
  row = ac.category_audit("singleton, 3 columns", epsilon=1.0, delta=0.2, count=0,
                          num_slots=2000, num_runs=4, num_columns=3, seed=27)
  _assert_category_row(row)
  x = row.extra
  assert x["s"] == pytest.approx(math.sqrt(3) * gaussian.gaussian_noise_multiplier(1.0, 0.1))
  assert x["rate1_expected"] == pytest.approx(0.1 * math.exp(-1.0) / 3, rel=1e-9)
  assert x["rate1_lower"] <= x["singleton_share"]


def test_category_discovery_zcdp_form():
  # as plan_release(composition="zcdp") calls it: noise sqrt(1 / (2 rho)), a
  # singleton released with probability threshold_delta (large here, to be seen)
  from jtwin.accounting import zcdp
  rho = 0.1 * zcdp.cdp_rho(0.99, 1e-5 - 5e-7)
  near = ac.category_audit("zCDP", epsilon=0.0, delta=1e-6, rho=rho,
                           threshold_delta=5e-7 * math.exp(-1.0), num_slots=1000, num_runs=3,
                           seed=28)
  _assert_category_row(near)
  assert near.extra["s"] == pytest.approx(math.sqrt(1.0 / (2.0 * rho)))
  single = ac.category_audit("zCDP singleton", epsilon=0.0, delta=1e-6, rho=rho,
                             threshold_delta=0.1, count=0, num_slots=2000, num_runs=3, seed=29)
  _assert_category_row(single)
  assert single.extra["rate1_lower"] <= 0.1 and single.extra["rate0"] == 0.0


def test_category_discovery_with_the_marginal_methods_label_transfer():
  # napsumq gives released labels 3/4 of their 1-way table's share on top of the domain
  # step's rho: less noise, a lower threshold, and the claim of that smaller noise
  from jtwin.accounting import gaussian, zcdp
  rho = 0.1 * gaussian.composed_rho(0.99, 1e-5 - 5e-7)
  extra = 0.75 * 0.4 * 0.9 / 15 * gaussian.composed_rho(0.99, 1e-5 - 5e-7)
  near = ac.category_audit("transfer", epsilon=0.0, delta=1e-6, rho=rho, category_rho=extra,
                           threshold_delta=5e-7 * math.exp(-1.0), num_slots=1000, num_runs=3,
                           seed=30)
  _assert_category_row(near)
  assert near.extra["s"] == pytest.approx((2.0 * (rho + extra)) ** -0.5, rel=1e-12)
  single = ac.category_audit("transfer singleton", epsilon=0.0, delta=1e-6, rho=rho,
                             category_rho=extra, threshold_delta=0.1, count=0, num_slots=2000,
                             num_runs=3, seed=31)
  _assert_category_row(single)
  assert single.extra["rate1_lower"] <= 0.1 and single.extra["rate0"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("epsilon,delta,below,slots", [(0.09, 1e-6, 0.0, 400),
                                                       (4.0, 1e-6, 2.0, 2000),
                                                       (1.0, 1e-6, None, 2000)])
def test_category_discovery_two_world_other_configurations(epsilon, delta, below, slots):
  s, tau = ac.domain_noise(epsilon, delta)
  count = 0 if below is None else int(math.floor(tau - below * s))
  row = ac.category_audit("categories", epsilon=epsilon, delta=delta, count=count,
                          num_slots=slots, num_runs=10, seed=24)
  _assert_category_row(row)
  if below is None:
    assert row.extra["released1"] == 0                 # share 1.8e-7: never seen


@pytest.mark.parametrize("epsilon,count,runs", [
    (1.0, None, 60), pytest.param(4.0, 0, 400, marks=pytest.mark.slow)])
def test_missing_flag_two_world(epsilon, count, runs):
  row = ac.missing_flag_audit("missing flag", epsilon=epsilon, delta=1e-6, count=count,
                              num_columns=20, num_runs=runs, seed=30)
  _assert_category_row(row)
  assert row.extra["s"] == pytest.approx(
      math.sqrt(20) * gaussian.gaussian_noise_multiplier(epsilon, 5e-7))


def test_numeric_domain_value_moved_across_a_grid_edge():
  row = ac.numeric_domain_audit("move", epsilon=4.0, delta=1e-6, change="move", num_runs=100,
                                seed=25)
  _assert_passed(row)
  assert row.epsilon == 8.0 and row.delta == pytest.approx((1 + math.exp(4.0)) * 1e-6)


def test_fine_stage_of_a_narrow_column():
  from jtwin.accounting import zcdp
  row = ac.fine_domain_audit("fine", rho=0.02, delta=1e-6, num_runs=150, seed=27)
  _assert_passed(row)
  assert row.epsilon == pytest.approx(zcdp.cdp_epsilon(0.04, 1e-6))   # two histograms
  assert row.extra["fine_share"] > 0.8         # the fine edges were used (years 2000..2015)


@pytest.mark.slow
@pytest.mark.parametrize("change,epsilon", [("outlier", 1.0), ("move", 1.0), ("move", 4.0)])
def test_numeric_domain_two_world(change, epsilon):
  row = ac.numeric_domain_audit(change, epsilon=epsilon, delta=1e-6, change=change,
                                num_runs=1000, seed=26)
  _assert_passed(row)
  if change == "move" and epsilon == 4.0:
    assert row.eps_lower > 0                           # the test sees the moved value
