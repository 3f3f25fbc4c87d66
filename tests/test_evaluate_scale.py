"""`jtwin evaluate` at scale (issue 13, items 1 and 7): capped categories,
model-file bins, sparse designs, bounded memory, the report header."""
import argparse
import json
import os
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from jtwin.errors import DataError
from jtwin.evaluate import classifiers, cli, encoding, metrics, propensity
from jtwin.evaluate import evaluate, write_report
from jtwin.evaluate.report import NOTE


def _args(argv):
  parser = argparse.ArgumentParser(prog="jtwin")
  cli.add_parser(parser.add_subparsers(dest="command"))
  return parser.parse_args(["evaluate", *argv])


def _id_tables(n, seed=0):
  rng = np.random.default_rng(seed)

  def make(prefix, s):
    r = np.random.default_rng(s)
    a = r.integers(0, 3, n)
    return pd.DataFrame({
        "id": [f"{prefix}{k:06d}" for k in range(n)], "a": a,
        "x": r.normal(size=n) + a,
        "y": np.where(r.random(n) < 0.2 + 0.2 * a, "yes", "no")})

  del rng
  return make("R", seed), make("S", seed + 1)


# --------------------------------------------------- many-valued columns --

def test_id_column_is_capped_and_memory_stays_bounded():
  """10k rows with a 10k-value ID column: the old dense one-hot design was
  20k x 20k floats (1.6 GB, 2.5 GB peak); now the ID column costs 102 codes
  and the whole evaluation traces well under 150 MB."""
  real, synth = _id_tables(10_000)
  tracemalloc.start()
  try:
    r = evaluate(real, synth, target="y", backend="numpy")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert r["settings"]["capped_columns"] == ["id"]
  assert r["settings"]["encoded_width"] <= 102 + 4 + 21 + 3
  assert peak < 150 * 2**20, peak / 2**20
  # Real and synthetic IDs are disjoint: the real top 100 (count 1 each) hold
  # 1% of the real mass and none of the synthetic mass, whose IDs all fall
  # into "(other)" with 99% of the real mass: TVD = 0.5 (0.01 + 0.01).
  assert r["per_column"]["id"]["tvd"] == pytest.approx(0.01)


def test_cap_keeps_the_most_frequent_real_values():
  real = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d", None]})
  synth = pd.DataFrame({"c": ["d", "e", "e", "a", None]})
  (coder,) = encoding.make_coders(real, [synth], max_levels=2)
  assert coder.categories == ("a", "b") and coder.other
  assert coder.labels() == ["a", "b", "(other)", "(missing)"]
  codes = encoding.encode_frame(synth, [coder])[:, 0]
  np.testing.assert_array_equal(codes, [2, 2, 2, 0, 3])
  (uncapped,) = encoding.make_coders(real, [synth], max_levels=None)
  assert uncapped.categories == ("a", "b", "c", "d", "e")
  assert not uncapped.other


def test_one_hot_is_sparse_and_codes_round_trip():
  codes = np.array([[0, 2], [1, 0], [1, 1]])
  x = encoding.one_hot(codes, [2, 3])
  assert x.nnz == codes.size and x.shape == (3, 5)
  np.testing.assert_array_equal(
      x.toarray(), [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0], [0, 1, 0, 1, 0]])
  np.testing.assert_array_equal(classifiers._codes(x, [2, 3]), codes)
  np.testing.assert_array_equal(classifiers._codes(x.toarray(), [2, 3]), codes)


def test_sparse_marginals_equal_dense(monkeypatch):
  rng = np.random.default_rng(0)
  sizes = [5, 7, 4]
  p = rng.integers(0, 4, size=(300, 3))
  q = rng.integers(0, 4, size=(200, 3))
  subsets = [(0, 1), (0, 1, 2), (1, 2)]
  dense_tvd = metrics.kway_tvds(p, q, sizes, subsets)
  dense_v = metrics.cramers_v_matrix(p, sizes)
  monkeypatch.setattr(metrics, "DENSE_CELLS", 0)
  np.testing.assert_allclose(metrics.kway_tvds(p, q, sizes, subsets),
                             dense_tvd, rtol=1e-12)
  np.testing.assert_allclose(metrics.cramers_v_matrix(p, sizes), dense_v,
                             rtol=1e-10)
  constant = np.zeros((10, 2), int)
  assert np.isnan(metrics.cramers_v_matrix(constant, [3, 3])[0, 1])


def test_lbfgs_branch_matches_newton(monkeypatch):
  rng = np.random.default_rng(1)
  codes = rng.integers(0, 4, size=(800, 3))
  y = (rng.random(800) < 0.2 + 0.15 * codes[:, 0]).astype(float)
  x = encoding.one_hot(codes, [4, 4, 4])
  newton = classifiers.fit_logistic(x, y, l2=1e-2)
  monkeypatch.setattr(classifiers, "NEWTON_MAX_FEATURES", 0)
  lbfgs = classifiers.fit_logistic(x, y, l2=1e-2)
  np.testing.assert_allclose(lbfgs.logits(x), newton.logits(x), atol=1e-4)


def test_propensity_rows_are_subsampled():
  rng = np.random.default_rng(2)
  real = rng.integers(0, 5, size=(3000, 2))
  synth = rng.integers(0, 5, size=(2000, 2))
  full = propensity.propensity_mse(real, synth, [5, 5], max_rows=None)
  same = propensity.propensity_mse(real, synth, [5, 5], max_rows=5000)
  assert full == same and full["pmse_rows"] == 5000
  cut = propensity.propensity_mse(real, synth, [5, 5], max_rows=500)
  assert cut["pmse_rows"] == 1000
  # The null uses the rows fitted: (k - 1)(1 - c)^2 c / N, c = 1/2, N = 1000.
  k = cut["pmse_num_params"]
  assert cut["pmse_null"] == pytest.approx((k - 1) * 0.125 / 1000)
  pairs = propensity.propensity_mse_pairs(real, synth, [5, 5], [False] * 2,
                                          max_rows=500)
  assert np.isfinite(pairs["pmse_pairs_ratio"])


# ------------------------------------------------------ model-file bins --

@pytest.fixture()
def binned_csvs(tmp_path):
  rng = np.random.default_rng(3)
  n = 2000

  def make(s):
    r = np.random.default_rng(s)
    return pd.DataFrame({"x": r.integers(0, 5000, n),
                         "level": r.integers(1, 17, n),
                         "g": r.choice(["u", "v"], n)})

  paths = {}
  for name, seed in (("real", 1), ("synth", 2)):
    paths[name] = str(tmp_path / f"{name}.csv")
    make(seed).to_csv(paths[name], index=False)
  del rng
  model = tmp_path / "model.txt"
  model.write_text("x : Categorical ; bins = 0, 10, 100, 1000, 5000 ; integer\n"
                   "level : Categorical\n"
                   "g : Bernoulli\n")
  paths["model"] = str(model)
  return paths


def test_model_file_bins_are_honoured(tmp_path, binned_csvs, capsys):
  p = binned_csvs
  assert cli.run(_args([p["real"], p["synth"], "--model", p["model"],
                        "-o", str(tmp_path / "r")])) == 0
  data = json.loads((tmp_path / "r.json").read_text())
  assert data["per_column"]["x"]["kind"] == "numeric"
  assert data["settings"]["binned_columns"]["x"] == [0, 10, 100, 1000, 5000]
  # The 1-way TVD on exactly the declared bins, by hand.
  real, synth = pd.read_csv(p["real"]), pd.read_csv(p["synth"])
  edges = [0, 10, 100, 1000, 5000]
  fr = np.histogram(real["x"], edges)[0] / len(real)
  fs = np.histogram(synth["x"], edges)[0] / len(synth)
  assert data["per_column"]["x"]["tvd"] == pytest.approx(
      0.5 * np.abs(fr - fs).sum())
  # Declared categorical: no W1 ratio; the binned column gets one.
  assert data["per_column"]["level"]["kind"] == "categorical"
  assert "w1_ratio" not in data["per_column"]["level"]
  assert "w1_ratio" in data["per_column"]["x"]
  capsys.readouterr()


def test_no_w1_for_few_valued_integer_columns(binned_csvs):
  real = pd.read_csv(binned_csvs["real"])
  synth = pd.read_csv(binned_csvs["synth"])
  r = evaluate(real, synth)
  assert r["per_column"]["level"]["kind"] == "categorical"
  assert "w1_ratio" not in r["per_column"]["level"]
  declared = evaluate(real, synth, numeric=["level"])
  assert "w1_ratio" in declared["per_column"]["level"]
  forced = evaluate(real, synth, categorical=["x"], numeric=["x"])
  assert "w1_ratio" not in forced["per_column"]["x"]


def test_adult_model_file_evaluates_in_bounded_memory():
  """The bundled Adult model: fnlwgt (~20k values) is binned on its 11
  declared bins, so the design is narrow (it was ~45k one-hot columns)."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))), "jtwin", "examples")
  if not os.path.exists(os.path.join(path, "adult.csv.gz")):
    pytest.skip("Adult data not available")
  real = pd.read_csv(os.path.join(path, "adult.csv.gz")).iloc[:3000]
  args = _args(["r.csv", "s.csv", "--model",
                os.path.join(path, "adult_model.txt")])
  columns, categorical, numeric, bins = cli._columns(args, real, real)
  assert len(bins["fnlwgt"]) == 12 and "fnlwgt" in numeric
  assert "education_num" in categorical and "fnlwgt" not in categorical
  r = evaluate(real[columns], real[columns], bins=bins,
               categorical=categorical, numeric=numeric)
  assert r["settings"]["encoded_width"] < 300
  assert r["per_column"]["fnlwgt"]["kind"] == "numeric"
  assert "w1_ratio" not in r["per_column"]["education_num"]


# ------------------------------------------------------------ backends --

def test_classifier_backend_is_reported(monkeypatch):
  real, synth = _id_tables(400)
  r = evaluate(real, synth, target="y", backend="numpy")
  assert r["utility_backend"].startswith("jtwin's NumPy classifiers")
  assert "boosted stumps" in r["per_model"]
  monkeypatch.setattr(classifiers, "sklearn_version", lambda: None)
  auto = evaluate(real, synth, target="y")
  assert "scikit-learn not installed" in auto["utility_backend"]
  with pytest.raises(ValueError, match="evaluate extra"):
    evaluate(real, synth, target="y", backend="sklearn")


def test_cli_says_which_classifiers(tmp_path, capsys):
  real, synth = _id_tables(300)
  paths = [str(tmp_path / "r.csv"), str(tmp_path / "s.csv")]
  real.to_csv(paths[0], index=False)
  synth.to_csv(paths[1], index=False)
  assert cli.run(_args([*paths, "--target", "y", "--classifiers",
                        "numpy"])) == 0
  out = capsys.readouterr().out
  assert "utility models: jtwin's NumPy classifiers" in out
  assert "'(other)'): id" in out
  with pytest.raises(SystemExit) as refused:           # the parser refuses it: exit code 2
    _args([*paths, "--max_levels", "0"])
  assert refused.value.code == 2 and "--max_levels must be >= 1" in capsys.readouterr().err


def test_sklearn_logistic_matches_ours():
  """Same objective (C = 1 / (N l2)): the same decision function."""
  pytest.importorskip("sklearn")
  rng = np.random.default_rng(4)
  codes = rng.integers(0, 3, size=(600, 3))
  y = (rng.random(600) < 0.2 + 0.25 * codes[:, 0]).astype(float)
  x = encoding.one_hot(codes, [3, 3, 3])
  ours = classifiers.fit_logistic(x, y, l2=1e-2).logits(x)
  theirs = classifiers._sk_logistic(1e-2)(x, y, [3, 3, 3])(x)
  np.testing.assert_allclose(theirs, ours, atol=1e-3)


def test_sklearn_models_learn_a_signal():
  pytest.importorskip("sklearn")
  rng = np.random.default_rng(7)
  codes = rng.integers(0, 3, size=(600, 4))
  y = (codes[:, 0] == 2).astype(float)
  flip = rng.random(600) < 0.1
  y[flip] = 1 - y[flip]
  x = encoding.one_hot(codes, [3] * 4)
  for model in classifiers.SKLEARN_MODELS:
    scorer = model.fit(x, y, [3] * 4)
    assert metrics.auroc(y, scorer(x)) > 0.8, model.name
  models, description = classifiers.utility_models("auto")
  assert models is classifiers.SKLEARN_MODELS
  assert description.startswith("scikit-learn")


# -------------------------------------------------------------- report --

def test_report_has_one_banner_and_a_header(tmp_path, binned_csvs, capsys):
  p = binned_csvs
  meta = {"format": "jtwin-result", "format_version": 1,
          "privacy": {"mode": "calibrated", "epsilon": 0.99, "delta": 1e-5}}
  result = p["synth"][:-4] + ".jtwin.npz"
  np.savez(result, **{"meta.json": np.frombuffer(
      json.dumps(meta).encode(), np.uint8)})
  assert cli.run(_args([p["real"], p["synth"], "--model", p["model"],
                        "-o", str(tmp_path / "rep")])) == 0
  page = (tmp_path / "rep.html").read_text(encoding="utf-8")
  assert page.count(NOTE) == 1
  assert "Compares against the REAL data" not in page  # no per-figure note
  for text in (p["real"], p["synth"], p["model"], "epsilon = 0.99",
               "delta = 1e-05", "jtwin version", "UTC"):
    assert text in page, text
  header = json.loads((tmp_path / "rep.json").read_text())["report"]
  assert header["privacy"]["epsilon"] == 0.99
  bad = tmp_path / "bad.jtwin.npz"
  bad.write_text("not a zip")
  with pytest.raises(DataError, match="bad.jtwin.npz"):
    cli.run(_args([p["real"], p["synth"], "--result", str(bad)]))
  capsys.readouterr()


def test_report_without_a_result_file_says_so(tmp_path):
  real, synth = _id_tables(200)
  r = evaluate(real, synth)
  _, html_path = write_report(r, real, synth, str(tmp_path / "x"))
  page = open(html_path, encoding="utf-8").read()
  assert page.count(NOTE) == 1
  assert "unknown: no result file given" in page


def test_streamed_pearson_matches_pandas():
  rng = np.random.default_rng(5)
  n = 1000
  frame = pd.DataFrame({"a": rng.normal(size=n) * 1e3 + 1e6,
                        "b": rng.normal(size=n), "c": np.zeros(n),
                        "d": rng.integers(0, 5, n)})
  frame["b"] += frame["a"] * 1e-3
  frame.loc[rng.random(n) < 0.1, "a"] = np.nan
  frame.loc[rng.random(n) < 0.2, "b"] = np.nan
  frame["e"] = pd.array(rng.integers(0, 3, n), dtype="Int64")
  frame.loc[:5, "e"] = pd.NA
  want = frame.astype(float).corr().to_numpy()
  got = metrics.pearson_matrix(frame, chunk_rows=77)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  np.testing.assert_allclose(got, want, atol=1e-12)


def test_pairwise_design_built_in_row_blocks_is_the_same(monkeypatch):
  rng = np.random.default_rng(6)
  real = rng.integers(0, 6, size=(1500, 4))
  synth = rng.integers(0, 6, size=(1200, 4))
  synth[:, 1] = synth[:, 0]
  args = (real, synth, [7] * 4, [True, False, True, False])
  whole = propensity.propensity_mse_pairs(*args)
  monkeypatch.setattr(propensity, "_BLOCK_ROWS", 100)
  assert propensity.propensity_mse_pairs(*args) == whole
  assert whole["pmse_pairs_ratio"] > 5  # synth copies column 0 into 1
