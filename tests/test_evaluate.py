"""Tests for jtwin.evaluate: metrics against hand and brute-force oracles."""
import argparse
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats

from jtwin.errors import DataError, JtwinInputError
from jtwin.evaluate import classifiers, cli, encoding, metrics, propensity
from jtwin.evaluate import utility
from jtwin.evaluate import evaluate, format_summary, write_report

ADULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "jtwin", "examples", "adult.csv.gz")   # the bundled copy of adult_train.csv


@pytest.fixture(scope="module")
def adult():
  if not os.path.exists(ADULT):
    pytest.skip("Adult data not available")
  frame = pd.read_csv(ADULT)
  return frame.sample(n=4000, random_state=0).reset_index(drop=True)


def _halves(frame, seed=1):
  perm = np.random.default_rng(seed).permutation(len(frame))
  half = len(frame) // 2
  return (frame.iloc[perm[:half]].reset_index(drop=True),
          frame.iloc[perm[half:]].reset_index(drop=True))


def _independent(frame, seed=2):
  rng = np.random.default_rng(seed)
  return pd.DataFrame({c: frame[c].to_numpy()[rng.permutation(len(frame))]
                       for c in frame.columns})


def _toy():
  """a/b with counts [[3, 1], [1, 3]] (V = 0.5) vs all cells 2 (V = 0)."""
  real = pd.DataFrame({"a": list("xxxxyyyy"), "b": list("uuuvuvvv")})
  synth = pd.DataFrame({"a": list("xxxxyyyy"), "b": list("uuvvuuvv")})
  return real, synth


# ------------------------------------------------------------ hand cases --

def test_toy_tvd_and_cramers_v_by_hand():
  real, synth = _toy()
  r = evaluate(real, synth)
  assert r["tvd_1way_mean"] == pytest.approx(0.0)
  # real joint 3/8, 1/8, 1/8, 3/8 vs 1/4 each: 0.5 * 4 * 1/8 = 0.25.
  assert r["tvd_2way_mean"] == pytest.approx(0.25)
  # chi2 = 8 (9 - 1)^2 / 4^4 = 2, V = sqrt(2 / 8) = 0.5.
  assert r["association"]["cramers_v_real"][0][1] == pytest.approx(0.5)
  assert r["association"]["cramers_v_synth"][0][1] == pytest.approx(0.0)
  assert r["cramers_v_diff_max"] == pytest.approx(0.5)
  assert r["tvd_3way_num_triples"] == 0


def test_cramers_v_matches_scipy():
  rng = np.random.default_rng(0)
  table = rng.integers(1, 30, size=(4, 6))
  want = scipy.stats.contingency.association(table, method="cramer")
  assert metrics.cramers_v(table) == pytest.approx(want)
  assert np.isnan(metrics.cramers_v(np.array([[5, 3]])))


def test_missing_is_a_category_and_missing_rate_error():
  real = pd.DataFrame({"a": ["x", "y", None, None]})
  synth = pd.DataFrame({"a": ["x", "y", "y", None]})
  r = evaluate(real, synth)
  assert r["missing_abs_error_max"] == pytest.approx(0.25)
  # real: x .25, y .25, NA .5; synth: x .25, y .5, NA .25.
  assert r["tvd_1way_mean"] == pytest.approx(0.25)
  assert r["per_column"]["a"]["missing_real"] == pytest.approx(0.5)


def test_numeric_binning_equal_width_on_real_range():
  real = pd.DataFrame({"x": np.arange(100.0)})
  other = pd.DataFrame({"x": [-5.0, 0.0, 4.94, 4.96, 98.9, 99.0, 500.0,
                              np.nan]})
  (coder,) = encoding.make_coders(real, [other])
  assert coder.kind == "numeric"
  np.testing.assert_allclose(coder.edges, np.linspace(0, 99, 21))
  codes = encoding.encode_frame(other, [coder])[:, 0]
  np.testing.assert_array_equal(codes, [0, 0, 0, 1, 19, 19, 19, 20])
  few = pd.DataFrame({"x": np.arange(100) % 20, "b": [True, False] * 50})
  kinds = [c.kind for c in encoding.make_coders(few)]
  assert kinds == ["categorical", "categorical"]
  (given,) = encoding.make_coders(real, bins={"x": [0, 50, 100]})
  assert given.num_codes == 3


def test_kway_tvd_matches_a_loop():
  rng = np.random.default_rng(3)
  sizes = [3, 4, 2]
  p = rng.integers(0, 3, size=(50, 3)) % np.array(sizes)
  q = rng.integers(0, 4, size=(70, 3)) % np.array(sizes)
  for cols in [(0, 1), (0, 1, 2)]:
    want = 0.0
    for cell in itertools.product(*[range(sizes[c]) for c in cols]):
      fp = np.mean(np.all(p[:, cols] == cell, axis=1))
      fq = np.mean(np.all(q[:, cols] == cell, axis=1))
      want += 0.5 * abs(fp - fq)
    got = metrics.kway_tvds(p, q, sizes, [cols])[0]
    assert got == pytest.approx(want)


def test_auroc_matches_brute_force_pairs():
  rng = np.random.default_rng(4)
  y = rng.integers(0, 2, 300)
  s = np.round(rng.normal(size=300) + y, 1)  # many ties
  pos, neg = s[y == 1], s[y == 0]
  diff = pos[:, None] - neg[None, :]
  want = np.mean((diff > 0) + 0.5 * (diff == 0))
  assert metrics.auroc(y, s) == pytest.approx(want)
  assert np.isnan(metrics.auroc(np.ones(3), np.arange(3.0)))


def test_wasserstein1_matches_scipy():
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=37), rng.gamma(2.0, size=53)
  want = scipy.stats.wasserstein_distance(a, b)
  assert metrics.wasserstein1(a, b) == pytest.approx(want, rel=1e-10)


def test_sra():
  assert metrics.synthetic_ranking_agreement([.9, .8, .7], [.6, .5, .4]) == 1
  assert metrics.synthetic_ranking_agreement([.9, .8, .7], [.4, .5, .6]) == 0
  assert metrics.synthetic_ranking_agreement([.9, .8, .7],
                                             [.9, .7, .8]) == pytest.approx(
                                                 2 / 3)


def test_logistic_regression_matches_scipy():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(200, 3))
  y = (rng.random(200) < 1 / (1 + np.exp(-(x @ [1.0, -2.0, 0.5] + 0.3))))
  y = y.astype(float)
  l2 = 0.01

  def objective(beta):
    z = x @ beta[:3] + beta[3]
    return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * beta[:3] @ beta[:3]

  want = scipy.optimize.minimize(objective, np.zeros(4), method="BFGS",
                                 options={"gtol": 1e-10}).x
  fit = classifiers.fit_logistic(x, y, l2=l2)
  assert fit.converged
  np.testing.assert_allclose(fit.coef, want[:3], atol=1e-5)
  assert fit.intercept == pytest.approx(want[3], abs=1e-5)


def test_logistic_unregularised_limit_matches_closed_form():
  """One binary feature: the MLE is the two groups' log-odds."""
  x = np.array([[0.0]] * 10 + [[1.0]] * 10)
  y = np.array([1] * 3 + [0] * 7 + [1] * 6 + [0] * 4, float)
  fit = classifiers.fit_logistic(x, y, l2=1e-9)
  b = np.log(3 / 7)
  assert fit.intercept == pytest.approx(b, abs=1e-5)
  assert fit.coef[0] == pytest.approx(np.log(6 / 4) - b, abs=1e-5)


def test_classifiers_learn_a_signal():
  rng = np.random.default_rng(7)
  codes = rng.integers(0, 3, size=(600, 4))
  y = (codes[:, 0] == 2).astype(float)
  flip = rng.random(600) < 0.1
  y[flip] = 1 - y[flip]
  x = encoding.one_hot(codes, [3] * 4)
  for model in classifiers.MODELS:
    scorer = model.fit(x, y, [3] * 4)
    assert metrics.auroc(y, scorer(x)) > 0.8, model.name


# --------------------------------------------------- real vs baselines --

def test_real_vs_itself(adult):
  r = evaluate(adult, adult)
  for k in (1, 2, 3):
    assert r[f"tvd_{k}way_max"] == pytest.approx(0.0)
  assert r["missing_abs_error_max"] == 0
  assert r["cramers_v_diff_max"] == pytest.approx(0.0, abs=1e-12)
  assert r["pmse_ratio"] <= 3
  assert r["pmse_pairs_ratio"] <= 3
  assert r["w1_ratio_median"] == pytest.approx(0.0)


def test_independent_columns_are_worse_than_a_held_out_half(adult):
  a, b = _halves(adult)
  ceiling = evaluate(a, b)
  floor = evaluate(a, _independent(a))
  assert floor["tvd_1way_mean"] == pytest.approx(0.0)  # same marginals
  assert floor["tvd_2way_mean"] > 1.2 * ceiling["tvd_2way_mean"]
  assert floor["tvd_3way_mean"] > ceiling["tvd_3way_mean"]
  assert floor["cramers_v_diff_mean"] > 3 * ceiling["cramers_v_diff_mean"]
  assert floor["pmse_pairs_ratio"] > 5 * ceiling["pmse_pairs_ratio"]
  assert ceiling["pmse_ratio"] < 4  # about 1 / (1 - c) = 2 for halves
  json.dumps(ceiling)


def test_marginal_shift_raises_main_effects_pmse(adult):
  a, b = _halves(adult)
  shifted = b.copy()
  shifted.loc[: len(b) // 3, "sex"] = "Female"
  base = evaluate(a, b)["pmse_ratio"]
  assert evaluate(a, shifted)["pmse_ratio"] > 2 * base


def test_pmse_null_formula_on_a_model_based_twin():
  """A twin drawn from the real data's own fitted (saturated) distribution
  has E[pMSE] = (k - 1)(1 - c)^2 c / N (Snoke et al. 2018)."""
  rng = np.random.default_rng(8)
  ratios = []
  for _ in range(30):
    real = rng.integers(0, 6, size=(3000, 1))
    synth = rng.choice(real[:, 0], size=(3000, 1))
    ratios.append(propensity.propensity_mse(real, synth, [6])["pmse_ratio"])
  assert np.mean(ratios) == pytest.approx(1.0, abs=0.3)


def test_utility_on_adult(adult):
  a, b = _halves(adult)
  test = adult.iloc[:500]
  coders = encoding.make_coders(a, [b, test])
  good = utility.utility(a, b, test, "income", coders)
  bad = utility.utility(a, _independent(a), test, "income", coders)
  assert good["utility_auroc_real"] > 0.8
  assert abs(good["utility_auroc_synth"] - good["utility_auroc_real"]) < 0.05
  assert bad["utility_auroc_synth"] < good["utility_auroc_synth"] - 0.1
  assert good["utility_accuracy_synth"] > good["utility_accuracy_majority"]
  assert len(good["per_model"]) >= 4
  assert good["utility_positive_class"] == ">50K"
  assert 0 <= bad["sra"] < good["sra"] <= 1


def test_utility_test_source(adult):
  a, b = _halves(adult.iloc[:600])
  given = evaluate(a, b, test=adult.iloc[600:900], target="income")
  assert given["utility_test_source"] == "the given real test table"
  assert given["utility_num_test_rows"] == 300
  held = evaluate(a, b, target="income")
  assert held["utility_test_source"].startswith("held-out 30%")
  assert held["utility_num_test_rows"] == 90


@pytest.mark.slow
def test_utility_multiclass_and_bad_targets(adult):
  a, b = _halves(adult)
  r = evaluate(a, b, target="race")
  assert r["utility_num_classes"] == 5
  assert 0.5 < r["utility_auroc_synth"] <= 1
  with pytest.raises(ValueError, match="categorical target"):
    evaluate(a, b, target="fnlwgt")
  with pytest.raises(ValueError, match="not in both"):
    evaluate(a, b, target="nope")


# -------------------------------------------------------------- report --

@pytest.mark.slow
def test_write_report(tmp_path, adult):
  a, b = _halves(adult)
  r = evaluate(a, b, target="income")
  files = write_report(r, a, b, str(tmp_path / "rep"))
  assert [os.path.basename(f) for f in files] == ["rep.json", "rep.html"]
  data = json.loads(open(files[0]).read())
  assert data["note"].startswith("This report reads the real data")
  assert data["tvd_2way_mean"] == pytest.approx(r["tvd_2way_mean"])
  page = open(files[1], encoding="utf-8").read()
  assert "This report reads the real data" in page[:2000]
  assert page.count("<svg") == 1 + len(r["columns"])
  assert "occupation" in page
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
  text = format_summary(r)
  assert "2-way TVD, mean" in text and "synthetic ranking" in text


def test_nan_becomes_null_in_json(tmp_path):
  real = pd.DataFrame({"a": ["x"] * 5, "b": list("uvuvu")})
  r = evaluate(real, real)
  assert np.isnan(r["cramers_v_diff_mean"])  # constant column: V undefined
  files = write_report(r, real, real, str(tmp_path / "r"))
  assert json.loads(open(files[0]).read())["cramers_v_diff_mean"] is None


def test_import_is_light():
  code = ("import sys, jtwin.evaluate; "
          "print('matplotlib' in sys.modules, 'jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True).stdout.split()
  assert out == ["False", "False"]


# ----------------------------------------------------------------- CLI --

def _args(argv):
  parser = argparse.ArgumentParser(prog="jtwin")
  cli.add_parser(parser.add_subparsers(dest="command"))
  return parser.parse_args(["evaluate", *argv])


@pytest.fixture()
def csvs(tmp_path, adult):
  a, b = _halves(adult.iloc[:1000])
  paths = {}
  for name, frame in (("real", a), ("synth", b)):
    paths[name] = str(tmp_path / f"{name}.csv")
    frame.to_csv(paths[name], index=False)
  return paths


@pytest.mark.slow
def test_cli_run_prints_and_writes(tmp_path, csvs, capsys):
  args = _args([csvs["real"], csvs["synth"], "--target", "income",
                "-o", str(tmp_path / "report"), "--seed", "3"])
  assert cli.run(args) == 0
  out = capsys.readouterr().out
  assert "2-way TVD" in out and "held-out 30%" in out
  assert os.path.exists(tmp_path / "report.html")
  assert os.path.exists(tmp_path / "report.json")


def test_cli_model_file_restricts_columns(tmp_path, csvs, capsys):
  model = tmp_path / "model.txt"
  model.write_text("# comment\nage: Normal\neducation_num : categorical\n"
                   "income: Bernoulli  # target\n")
  args = _args([csvs["real"], csvs["synth"], "--model", str(model),
                "-o", str(tmp_path / "r")])
  assert cli.run(args) == 0
  data = json.loads((tmp_path / "r.json").read_text())
  assert data["columns"] == ["age", "education_num", "income"]
  assert data["per_column"]["education_num"]["kind"] == "categorical"
  bad = tmp_path / "bad.txt"
  bad.write_text("no_such_column: Normal\n")
  with pytest.raises(DataError, match="no_such_column"):
    cli.run(_args([csvs["real"], csvs["synth"], "--model", str(bad)]))


def test_cli_errors_are_one_line(tmp_path, csvs):
  missing = str(tmp_path / "nope.csv")
  with pytest.raises(DataError, match="nope.csv") as info:
    cli.run(_args([missing, csvs["synth"]]))
  assert "\n" not in str(info.value)
  with pytest.raises(DataError, match="fnlwgt"):
    cli.run(_args([csvs["real"], csvs["synth"], "--target", "fnlwgt"]))
  with pytest.raises(JtwinInputError, match="does not exist"):
    cli.run(_args([csvs["real"], csvs["synth"], "-o",
                   str(tmp_path / "no" / "dir" / "r")]))


def test_cli_help_shows_defaults():
  parser = argparse.ArgumentParser(prog="jtwin")
  sub = parser.add_subparsers()
  text = cli.add_parser(sub).format_help()
  for flag in ("--test", "--target", "--model", "--output", "--seed",
               "--bins", "REAL.csv", "SYNTHETIC.csv", "REPORT_PREFIX"):
    assert flag in text
  assert "default: 0" in text and "default: 20" in text


@pytest.mark.slow
def test_full_adult_marginals_are_fast():
  if not os.path.exists(ADULT):
    pytest.skip("Adult data not available")
  real = pd.read_csv(ADULT)
  r = evaluate(real, _independent(real))
  assert r["seconds"]["marginals"] < 3.0
  assert r["seconds"]["pmse"] < 30.0
