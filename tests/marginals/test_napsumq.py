"""The marginal-query method end to end: privacy record, posterior, command line."""
import math

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jtwin import napsumq
from jtwin.accounting import zcdp
from jtwin.cli import main
from jtwin.result_io import load_result
from jtwin.spec import parse_model_text

MODEL = """\
a : Categorical ; categories = p, q, r ; missing
b : Bernoulli ; categories = x, y
c : Poisson ; bounds = 0, 4
"""
FAST = dict(num_components=4, final_steps=150, posterior_steps=100, round_steps=20)


def _frame(n=3000, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.integers(0, 2, n)
  a = np.where(z, rng.choice(["p", "q", "r"], n, p=[.7, .2, .1]),
               rng.choice(["p", "q", "r"], n, p=[.1, .2, .7])).astype(object)
  a[rng.random(n) < 0.05] = None
  b = np.where(z, rng.choice(["x", "y"], n, p=[.8, .2]), rng.choice(["x", "y"], n, p=[.3, .7]))
  return pd.DataFrame({"a": a, "b": b, "c": np.clip(rng.poisson(1 + 2 * z), 0, 4)})


@pytest.fixture(scope="module")
def frame():
  return _frame()


@pytest.mark.parametrize("selection,residuals", [
    ("all", False), ("all", True), pytest.param("aim", False, marks=pytest.mark.slow),
    ("mst", False)])
def test_privacy_record_recomputed(frame, selection, residuals):
  spec = parse_model_text(MODEL)
  res = napsumq.fit_marginals(jax.random.key(1), frame, spec, epsilon=1.0, delta=1e-6,
                              selection=selection, rounds=6, residuals=residuals, **FAST)
  p = res.privacy
  # every released table's rho, recomputed from the public measurement log:
  # sensitivity^2 / (2 sigma^2) (sensitivity < 1 for centred tables)
  rho_tables = sum(s**2 / (2 * sigma**2) for _, _, sigma, s in res.measurements)
  assert rho_tables == pytest.approx(p.rho_one_way + p.rho_queries + p.rho_measurement, rel=1e-9)
  assert p.num_measurements == len(res.measurements)
  # the DP domain's histograms share the zCDP budget: rho = sum 1 / (2 sd^2) over the
  # m histograms, at category_std for the columns whose categories were released
  pub = res.public
  assert pub.frame is None                    # the private rows are not returned
  rel = pub.release
  m = (len({item.split(":")[0] for item in rel.released})
       + sum(": fine " in item for item in rel.released))
  m_cat = len(rel.merged)
  assert p.rho_domain > 0
  assert p.rho_domain == pytest.approx((m - m_cat) / (2 * rel.noise_std**2)
                                       + m_cat / (2 * rel.category_std**2), rel=1e-9)
  assert p.rho == pytest.approx(rho_tables + p.rho_selection + p.rho_domain, rel=1e-12)
  # the row count (pure DP) and the category threshold's delta, by basic composition
  assert pub.rows_epsilon == pytest.approx(0.01) and pub.delta == 1e-6
  assert pub.epsilon_rest == pytest.approx(1.0 - pub.rows_epsilon, rel=1e-12)
  assert pub.delta_rest == pytest.approx(1e-6 - pub.release.delta, rel=1e-12)
  if selection == "all":
    # Gaussian mechanisms only: one Gaussian mechanism with mu^2 = 2 rho, whose exact
    # delta(epsilon) (Balle & Wang 2018), recomputed here with scipy, is delta_rest at
    # the certified epsilon minus the pure-DP row count's share
    mu = math.sqrt(2 * p.rho)
    eps = p.epsilon - pub.epsilon
    exact_delta = lambda e: (stats.norm.cdf(-e / mu + mu / 2)
                             - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2))
    assert exact_delta(eps) <= pub.delta_rest
    assert exact_delta(eps * 0.999) > pub.delta_rest          # and it is tight
    assert "GDP" in p.accountant
  else:   # exponential-mechanism selections: zCDP
    rest_rho = zcdp.cdp_rho(pub.epsilon_rest, pub.delta_rest)
    assert p.rho <= rest_rho * (1 + 1e-9)
    assert p.epsilon == pytest.approx(zcdp.cdp_epsilon(p.rho, pub.delta_rest) + pub.epsilon,
                                      rel=1e-9)
    assert "zCDP" in p.accountant
  assert p.epsilon <= 1.0 and p.delta == 1e-6
  assert p.epsilon > 0.999                        # the budget is spent, not wasted
  if selection == "all":
    assert p.num_selections == 0 and p.rho_selection == 0
    assert len(res.measurements) == 3 + 3          # 1-way tables + every pair
    # centred pair tables have sensitivity sqrt(prod (1 - 1/cells)) < 1; 1-way ones 1
    sens = [s for _, _, _, s in res.measurements]
    assert sens[:3] == [1.0] * 3
    if residuals:
      sizes = {m[0][0]: m[1] for m in res.measurements[:3]}
      for names, cells, _, s in res.measurements[3:]:
        want = math.sqrt(np.prod([1 - 1 / sizes[x] for x in names]))
        assert s == pytest.approx(want, rel=1e-12) and s < 1
    else:
      assert sens[3:] == [1.0] * 3
  if selection == "mst":
    assert p.num_selections == 2                     # a spanning tree of 3 columns
    assert p.rho_selection == pytest.approx(p.rho_measurement, rel=1e-9)
  if selection == "aim":
    assert p.num_selections >= 1
    assert p.rho == pytest.approx(rest_rho, rel=1e-6)   # spent exactly once


@pytest.mark.slow
def test_posterior_spread_shrinks_as_epsilon_grows(frame):
  spec = parse_model_text(MODEL)
  spread = []
  for eps in (0.3, 30.0):
    res = napsumq.fit_marginals(jax.random.key(0), frame, spec, epsilon=eps, delta=1e-6,
                                selection="all", **{**FAST, "posterior_steps": 300})
    spread.append(np.median(jax.nn.softplus(res.posterior.raw_scale["cat_logits"])))
  assert spread[1] < 0.5 * spread[0]


def test_progress_runs_from_measuring_to_each_fit(frame):
  """The progress callback: the budget up to 0.5, then each ensemble member's fit."""
  seen = []
  napsumq.fit_marginals(jax.random.key(0), frame, parse_model_text(MODEL), epsilon=1.0,
                        delta=1e-6, **{**FAST, "num_components": 100, "final_steps": 5,
                                       "posterior_steps": 2},
                        progress=lambda frac, text: seen.append((frac, text)))
  fracs = [f for f, _ in seen]
  assert fracs == sorted(fracs) and fracs[0] == 0.5 and fracs[-1] == 1.0
  assert [t for _, t in seen] == ["6 tables measured; fitting mixture 1 of 2",   # 3 + 3 pairs
                                  "fitting mixture 2 of 2", "fitted"]


@pytest.mark.slow
def test_recovers_the_structure(frame):
  """Non-private: the twin reproduces the 2-way table of a and b."""
  spec = parse_model_text(MODEL)
  res = napsumq.fit_marginals(jax.random.key(0), frame, spec, selection="all",
                              non_private=True, **{**FAST, "final_steps": 600})
  twin = napsumq.sample_marginals(jax.random.key(1), res, 20000)
  real = pd.crosstab(frame["a"], frame["b"], normalize=True)
  synth = pd.crosstab(twin["a"], twin["b"], normalize=True)
  assert np.abs(real - synth).to_numpy().max() < 0.03
  assert abs(twin["a"].isna().mean() - frame["a"].isna().mean()) < 0.01
  assert set(twin["c"].unique()) <= {0, 1, 2, 3, 4}


# ----------------------------------------------------------------- command line
@pytest.fixture
def files(tmp_path, frame):
  data = tmp_path / "data.csv"
  frame.to_csv(data, index=False)
  model = tmp_path / "model.txt"
  model.write_text(MODEL)
  return tmp_path, str(data), str(model)


def _outputs(tmp_path):
  return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out"))


@pytest.mark.slow
def test_cli_query_file_and_sample(files, capsys):
  tmp, data, _ = files
  queries = tmp / "queries.txt"
  queries.write_text("a, b\n\n b ,c\n")                # twinify-style spaces are stripped
  out = str(tmp / "out")
  code = main(["napsumq", data, str(queries), out, "--k", "3", "--steps", "100", "--seed", "0",
               "--visualize", "none", "--select", "none"])
  assert code == 0, capsys.readouterr().err
  err = capsys.readouterr().err
  assert "NOT covered by the epsilon guarantee" in err       # domains read off the data
  assert "family chosen by its number of distinct values" in err
  twin = pd.read_csv(out + ".csv")
  assert list(twin.columns) == ["a", "b", "c"]
  loaded = load_result(out + ".jtwin.npz")
  assert any("family chosen" in x for x in loaded.meta["inferred_from_data"])
  assert loaded.meta["model"]["method"] == "napsumq"
  assert loaded.meta["privacy"]["epsilon"] <= 1.0
  assert [m[0] for m in loaded.meta["measurements"]][3:] == [["a", "b"], ["b", "c"]]
  assert main(["sample", out + ".jtwin.npz", "-n", "50", "-o", str(tmp / "more.csv"),
               "--quiet"]) == 0
  assert len(pd.read_csv(tmp / "more.csv")) == 50
  # the default for a marginal result is balanced; --m > 1 switches to iid draws
  assert main(["sample", out + ".jtwin.npz", "-n", "50", "-o", str(tmp / "iid.csv"),
               "--quiet", "--m", "5"]) == 0
  assert main(["sample", out + ".jtwin.npz", "-n", "50", "-o", str(tmp / "bad.csv"),
               "--quiet", "--m", "5", "--sampling", "balanced"]) == 1
  assert not (tmp / "bad.csv").exists()


@pytest.mark.slow
def test_cli_separate_output_per_posterior_draw(files):
  tmp, data, model = files
  out = str(tmp / "out")
  assert main(["napsumq", data, model, out, "--k", "3", "--steps", "50", "--seed", "0",
               "--select", "all", "--visualize", "none", "--quiet", "--n", "40", "--m", "20",
               "--separate_output"]) == 0
  assert len(pd.read_csv(out + ".0.csv")) == 20 and len(pd.read_csv(out + ".1.csv")) == 20


@pytest.mark.parametrize("queries,extra,code,message", [
    ("a, nope\n", [], 3, "column 'nope' is not in the data"),
    ("\n# nothing\n", [], 3, "has no queries or columns"),
    ("a, , b\n", [], 3, "empty column name"),
    ("a, b, c\n", ["--max_cells", "10"], 1, "more than the cap"),
    ("a, b\n", ["--target", "zz"], 1, "--target 'zz'"),
    ("a, b\n", ["--smoothness", "-1"], 1, "smoothness must be a finite number >= 0"),
    ("a, b\n", ["--one_way_smoothing", "nan"], 1, "one_way_smoothing must be a finite number >= 0"),
    ("a, b\n", ["--sampling", "balanced", "--m", "2"], 1, "cannot be combined with --m > 1"),
])
def test_cli_bad_queries(files, capsys, queries, extra, code, message):
  tmp, data, _ = files
  qfile = tmp / "queries.txt"
  qfile.write_text(queries)
  got = main(["napsumq", data, str(qfile), str(tmp / "out"), "--visualize", "none"] + extra)
  err = capsys.readouterr().err
  assert got == code
  assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
  assert _outputs(tmp) == []


def test_cli_bad_model_and_options(files, capsys):
  tmp, data, model = files
  assert main(["napsumq", data, str(tmp / "missing.txt"), str(tmp / "out")]) == 3
  assert main(["napsumq", data, model, str(tmp / "out"), "--queries", str(tmp / "q.txt")]) == 3
  assert main(["napsumq", data, model, str(tmp / "out"), "--delta", "0.5"]) == 4
  assert main(["napsumq", data, model, data[:-4]]) == 1          # would overwrite its input
  capsys.readouterr()
  assert _outputs(tmp) == []


def test_cli_constant_column_is_a_clean_error(tmp_path, capsys):
  data = tmp_path / "data.csv"
  data.write_text("a,b\nx,1\nx,2\nx,1\n")
  model = tmp_path / "model.txt"
  model.write_text("a : Categorical\nb : Categorical\n")
  for command in ("napsumq", "fit"):
    # read off the data: the constant column is named
    assert main([command, str(data), str(model), str(tmp_path / "out"), "--visualize", "none",
                 "--domain", "data"]) == 1
    err = capsys.readouterr().err
    assert "single category 'x'" in err and "Traceback" not in err
    # DP domain (the default): 3 rows release no category at all: one clean line too
    assert main([command, str(data), str(model), str(tmp_path / "out"), "--visualize", "none"]) == 1
    err = capsys.readouterr().err
    assert "no category is frequent enough" in err and "Traceback" not in err
  assert _outputs(tmp_path) == []


def test_cli_too_many_cells_is_a_clean_error(tmp_path, capsys):
  rng = np.random.default_rng(0)
  frame = pd.DataFrame({"id": np.arange(30000), "g": rng.choice(["a", "b"], 30000)})
  data = tmp_path / "data.csv"
  frame.to_csv(data, index=False)
  model = tmp_path / "model.txt"
  model.write_text("id : Categorical\ng : Categorical\n")
  code = main(["napsumq", str(data), str(model), str(tmp_path / "out"), "--no-privacy",
               "--visualize", "none"])
  err = capsys.readouterr().err
  assert code == 1 and "'id' (30,000)" in err and "Traceback" not in err
  assert _outputs(tmp_path) == []


@pytest.mark.slow
def test_library_call_with_int_seed_and_model_path(tmp_path, frame):
  model = tmp_path / "model.txt"
  model.write_text(MODEL)
  res = napsumq.fit_marginals(3, frame.assign(extra=1.0), str(model), epsilon=2.0, **FAST)
  again = napsumq.fit_marginals(3, frame, str(model), epsilon=2.0, **FAST)
  np.testing.assert_array_equal(res.posterior.loc["cat_logits"], again.posterior.loc["cat_logits"])
  twin = napsumq.sample_marginals(5, res, 100)
  assert list(twin.columns) == ["a", "b", "c"] and len(twin) == 100
  assert res.privacy.epsilon <= 2.0


@pytest.mark.parametrize("k,ensemble,members", [(200, 4, 4), (40, 4, 1)])
def test_ensemble_members_keep_fifty_components(frame, k, ensemble, members):
  res = napsumq.fit_marginals(2, frame, parse_model_text(MODEL), epsilon=1.0, delta=1e-6,
                              num_components=k, ensemble=ensemble, final_steps=20,
                              posterior_steps=5)
  per = -(-k // members)
  assert res.num_components == per * members
  assert res.posterior.loc["mix"].shape == (per * members - 1,)
  assert res.posterior.loc["cat_logits"].shape[0] == per * members
  twin = napsumq.sample_marginals(3, res, 500)
  assert len(twin) == 500 and set(twin.columns) == set(frame.columns)


def test_ensemble_must_be_a_positive_integer(frame):
  with pytest.raises(napsumq.JtwinInputError, match="ensemble"):
    napsumq.fit_marginals(2, frame, parse_model_text(MODEL), ensemble=0, **FAST)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_one_way_smoothing_must_be_finite_and_non_negative(frame, value):
  with pytest.raises(napsumq.JtwinInputError, match="one_way_smoothing must be a finite number"):
    napsumq.fit_marginals(2, frame, parse_model_text(MODEL), one_way_smoothing=value, **FAST)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_smoothness_must_be_finite_and_non_negative(frame, value):
  with pytest.raises(napsumq.JtwinInputError, match="smoothness must be a finite number >= 0"):
    napsumq.fit_marginals(2, frame, parse_model_text(MODEL), smoothness=value, **FAST)


def test_residuals_lower_the_noise_and_still_fit_the_pairs(frame):
  # the same rho buys centred tables less noise (sigma times their sensitivity, on
  # average); non-privately, the fit to centred tables and 1-way tables recovers the
  # pair tables as well as the fit to plain ones
  spec = parse_model_text(MODEL)
  kw = dict(epsilon=1.0, delta=1e-6, **FAST)
  plain = napsumq.fit_marginals(2, frame, spec, residuals=False, **kw)
  centred = napsumq.fit_marginals(2, frame, spec, residuals=True, **kw)
  sd = lambda r: [m[2] for m in r.measurements[3:]]
  sens = [m[3] for m in centred.measurements[3:]]
  assert all(a < b for a, b in zip(sd(centred), sd(plain)))
  rms = math.sqrt(np.mean(np.square(sens)))
  assert sd(centred)[0] == pytest.approx(sd(plain)[0] * rms, rel=1e-9)
  assert centred.privacy.rho == pytest.approx(plain.privacy.rho, rel=1e-9)
  exact = {}
  for residuals in (False, True):
    res = napsumq.fit_marginals(3, frame, spec, non_private=True, residuals=residuals,
                                num_components=6, final_steps=600, posterior_steps=10)
    twin = napsumq.sample_marginals(3, res, 20_000)
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
      real = pd.crosstab(frame[x].fillna("NA"), frame[y], normalize=True)
      synth = pd.crosstab(twin[x].fillna("NA"), twin[y], normalize=True)
      exact[(residuals, x, y)] = 0.5 * (real - synth.reindex_like(real).fillna(0)).abs().sum().sum()
  for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
    assert exact[(True, x, y)] < 0.03, exact
    assert exact[(True, x, y)] < exact[(False, x, y)] + 0.015, exact


@pytest.mark.parametrize("flag,centred", [([], True), (["--no-residuals"], False)])
def test_cli_residuals_flag(files, capsys, flag, centred):
  # the default releases the pair tables centred (sensitivity < 1), --no-residuals plain;
  # the result file's public record says which, per table
  tmp, data, model = files
  out = str(tmp / "out")
  code = main(["napsumq", data, model, out, "--k", "3", "--steps", "30", "--seed", "0",
               "--visualize", "none"] + flag)
  assert code == 0, capsys.readouterr().err
  logged = load_result(out + ".jtwin.npz").meta["measurements"]
  sens = [m[3] for m in logged]
  assert sens[:3] == [1.0] * 3                       # the 1-way tables
  assert all((s < 1.0) if centred else (s == 1.0) for s in sens[3:]), sens
  assert "GDP" in capsys.readouterr().out


def test_residuals_leave_one_cell_axes_alone(frame):
  # a coarse view of one cell (max_coarse=1 for c): centring that axis would zero the
  # table, so only the other axes are centred and the table still measures something
  spec = parse_model_text(MODEL)
  res = napsumq.fit_marginals(4, frame, spec, epsilon=1.0, delta=1e-6, max_coarse=1,
                              residuals=True, **FAST)
  sizes = {m[0][0]: m[1] for m in res.measurements[:3]}
  for names, cells, sigma, s in res.measurements[3:]:
    free = [x for x in names if x != "c"]        # c is seen through its 1-cell view
    assert s == pytest.approx(math.sqrt(np.prod([1 - 1 / sizes[x] for x in free])), rel=1e-12)
    assert 0 < s < 1 and sigma > 0
  assert math.isfinite(res.privacy.rho) and res.privacy.epsilon <= 1.0


def test_residuals_must_be_a_bool(frame):
  # a string such as "none" is truthy: it must not silently turn centring on
  from jtwin.errors import JtwinInputError
  with pytest.raises(JtwinInputError, match="residuals must be True or False"):
    napsumq.fit_marginals(0, frame, parse_model_text(MODEL), residuals="none", **FAST)


SMOOTH_MODEL = """\
d : Poisson ; bounds = 0, 39
b : Bernoulli ; categories = x, y
"""


def _smooth_integer_probs():
  k = np.arange(40)
  p = np.exp(-((k - 15) / 12.0) ** 2) + 0.3
  return p / p.sum()


def _smooth_integer_frame(n=20_000, seed=0):
  rng = np.random.default_rng(seed)
  d = rng.choice(40, size=n, p=_smooth_integer_probs())
  b = np.where(rng.random(n) < 0.2 + 0.015 * d, "y", "x")
  return pd.DataFrame({"d": d, "b": b})


@pytest.mark.parametrize("weight", [None, 0.0])
def test_integer_histogram_is_smoothed_by_default_and_closer_to_the_truth(monkeypatch, weight):
  from jtwin.marginals import histogram
  seen = []
  real = histogram.smooth_one_way

  def spy(cells, measurements, w, **kw):
    out, names = real(cells, measurements, w, **kw)
    seen.append((cells, measurements, out, names, w))
    return out, names

  monkeypatch.setattr(napsumq.histogram, "smooth_one_way", spy)
  frame = _smooth_integer_frame()
  kw = {} if weight is None else {"one_way_smoothing": weight}
  res = napsumq.fit_marginals(3, frame, parse_model_text(SMOOTH_MODEL), epsilon=0.5, **FAST, **kw)
  (cells, before, after, names, w), = seen
  assert res.smoothed == tuple(names)
  assert w == (napsumq.ONE_WAY_SMOOTHING if weight is None else 0.0)
  if weight == 0.0:
    assert names == [] and all(a is b for a, b in zip(after, before))
    return
  assert names == ["d"]
  cell = cells[0]
  # against the population's expected counts (what held-out rows follow): the
  # smooth fit removes both the DP noise and the sample's own fluctuation
  expected = len(frame) * _smooth_integer_probs()
  expected = np.array([expected[list(g)].sum() for g in cell.groups])
  k = cell.num_cells
  err = lambda m: np.sum((m.noisy[:k] - expected) ** 2)
  assert err(after[0]) < 0.5 * err(before[0])
  assert after[1] is before[1]                            # the Bernoulli column as measured


def test_cli_passes_one_way_smoothing(files, capsys, monkeypatch):
  from jtwin.marginals import histogram
  weights = []
  real = histogram.smooth_one_way
  monkeypatch.setattr(napsumq.histogram, "smooth_one_way",
                      lambda cells, ms, w, **kw: (weights.append(w), real(cells, ms, w, **kw))[1])
  tmp, data, model = files
  assert main(["napsumq", data, model, str(tmp / "out"), "--k", "3", "--steps", "20",
               "--ensemble", "1", "--visualize", "none", "--quiet",
               "--one_way_smoothing", "2.5"]) == 0, capsys.readouterr().err
  assert weights == [2.5]


def test_cli_says_and_records_which_histograms_were_smoothed(tmp_path, capsys):
  data, model = tmp_path / "d.csv", tmp_path / "m.txt"
  _smooth_integer_frame(8_000).to_csv(data, index=False)
  model.write_text(SMOOTH_MODEL)
  out = str(tmp_path / "out")
  assert main(["napsumq", str(data), str(model), out, "--k", "3", "--steps", "20",
               "--ensemble", "1", "--visualize", "none", "--epsilon", "0.5"]) == 0
  said = capsys.readouterr().out
  assert "smooth fit used for the noisy 1-way histogram of d " in said
  assert load_result(out + ".jtwin.npz").meta["smoothed_one_way"] == ["d"]
  assert main(["napsumq", str(data), str(model), out + "0", "--k", "3", "--steps", "20",
               "--ensemble", "1", "--visualize", "none", "--epsilon", "0.5",
               "--one_way_smoothing", "0"]) == 0
  assert "smooth fit used" not in capsys.readouterr().out
  assert load_result(out + "0.jtwin.npz").meta["smoothed_one_way"] == []


def test_every_sampling_path_herds_the_triples_over_the_coarse_views(files, monkeypatch):
  """sample_marginals, `jtwin napsumq`, `jtwin sample` and Synthesizer.sample all hand the
  swaps the coarse maps."""
  import jtwin
  from jtwin.marginals import balanced
  from jtwin.marginals.cells import coarse_maps
  seen = []

  def spy(rng, codes, per_comp, weights, tables, *, sweeps, coarse=None):
    seen.append(coarse)
    return codes

  monkeypatch.setattr(balanced, "refine", spy)
  tmp, data, model = files
  frame = pd.read_csv(data)
  with pytest.warns(UserWarning, match="NOT covered"):
    res = napsumq.fit_marginals(0, frame, model, epsilon=2.0, domain="data", **FAST)
  want = coarse_maps(res.cells)
  out = str(tmp / "out")
  assert main(["napsumq", data, model, out, "--k", "4", "--steps", "50", "--seed", "0",
               "--visualize", "none", "--quiet", "--domain", "data"]) == 0
  result_cells = coarse_maps(load_result(out + ".jtwin.npz").meta["model"]["cells"])
  napsumq.sample_marginals(1, res, 60)
  napsumq.sample_marginals(1, res, 60, triples=False)
  assert main(["sample", out + ".jtwin.npz", "-n", "30", "-o", str(tmp / "more.csv"),
               "--quiet"]) == 0
  synth = jtwin.load(out + ".jtwin.npz")
  synth.sample(30)
  assert len(seen) == 5          # the napsumq command's own twin comes first
  for got, expect in zip(seen, [result_cells, want, None, result_cells, result_cells]):
    if expect is None:
      assert got is None
    else:
      assert len(got) == len(expect) and all(np.array_equal(g, e) for g, e in zip(got, expect))


UNDECLARED = """\
a : Categorical
b : Bernoulli
c : Poisson ; bounds = 0, 4
"""


@pytest.mark.parametrize("selection", ["all", "mst"])
def test_dp_domain_is_what_the_fit_sees(frame, selection):
  """Undeclared categories and missing flags come from the DP release, never the data.

  One row with a label of its own ("z") is below any DP threshold: with the same key the
  fitted cells must be the same with and without that row (a data-read domain would add
  the label to the cells, whatever the noise). Every labelled cell is a released one.
  """
  spec = parse_model_text(UNDECLARED)
  extra = frame.copy()
  extra.loc[len(extra)] = {"a": "z", "b": "x", "c": 1}
  fits = [napsumq.fit_marginals(jax.random.key(3), f, spec, epsilon=1.0, delta=1e-6,
                                selection=selection, **FAST) for f in (frame, extra)]
  for res in fits:
    released = {f.name: f for f in res.public.release.spec.features}
    assert res.inferred_from_data == []
    for c in res.cells:
      assert c.from_data == ()
      if c.kind == "category":
        assert tuple(c.labels) == tuple(released[c.name].categories)
      assert c.missing == bool(released[c.name].missing)
    assert "z" not in res.cells[0].labels
  assert [c.to_dict() for c in fits[0].cells] == [c.to_dict() for c in fits[1].cells]


def test_one_way_tables_reuse_the_domains_label_counts(frame):
  """The DP domain's noisy label counts join the 1-way tables (post-processing): each
  released label's cell is the inverse-variance mean of the two noisy counts, with the
  smaller variance, and the cells the domain did not count ((other)) are the table's own."""
  spec = parse_model_text(UNDECLARED)
  res = napsumq.fit_marginals(jax.random.key(5), frame, spec, epsilon=1.0, delta=1e-6, **FAST)
  rel = res.public.release
  assert set(rel.label_counts) == set(rel.merged) == {"a", "b"}
  from jtwin.dp_domain import DomainRelease, OTHER
  released = {f.name: f for f in rel.spec.features}
  for name, (labels, missing) in rel.label_counts.items():
    assert set(labels) == set(released[name].categories) - {OTHER}
    truth = frame[name].value_counts()
    for label, noisy in labels.items():        # within 6 sds of the true count
      assert abs(noisy - truth[label]) < 6 * rel.category_std
    assert abs(missing - frame[name].isna().sum()) < 6 * rel.category_std
  # the combination itself, on a made-up table: cells p, q, (other), missing
  from jtwin.marginals.cells import CellColumn
  from jtwin.marginals.measure import Measurement
  col = CellColumn(name="a", kind="category", labels=("p", "q", OTHER), missing=True,
                   groups=((0,), (1,), (2,)), weights=((1.0,), (1.0,), (1.0,)))
  one = Measurement((0,), np.array([100.0, 50.0, 7.0, 20.0]), np.full(4, 4.0))
  release = DomainRelease(spec, category_std=1.0, label_counts={"a": ({"p": 110.0, "q": 40.0},
                                                                       30.0)})
  out = napsumq._with_label_counts([one], (col,), release)[0]
  np.testing.assert_allclose(out.noisy, [(100 / 4 + 110) / 1.25, (50 / 4 + 40) / 1.25, 7.0,
                                         (20 / 4 + 30) / 1.25])
  np.testing.assert_allclose(out.variance, [0.8, 0.8, 4.0, 0.8])
  # a column the domain did not release (declared categories) is left as it was
  same = napsumq._with_label_counts([one], (col,), DomainRelease(spec))[0]
  assert same is one


TAIL_MODEL = """
d : Poisson ; bounds = 0, 99
b : Bernoulli ; categories = x, y
"""


def _tail_frame(n=3_000, seed=0):
  """Counts 0..~15 on a declared range of 0..99: a long empty tail."""
  rng = np.random.default_rng(seed)
  d = rng.poisson(4.0, n)
  b = np.where(rng.random(n) < 0.2 + 0.04 * d, "y", "x")
  return pd.DataFrame({"d": d, "b": b})


def test_a_long_empty_tail_is_decoded_by_the_smooth_fit_and_says_so(tmp_path, capsys):
  """At a small epsilon the merged tail run of `d` spreads fewer rows over
  its empty values with the smooth fit than with the clipped counts."""
  frame = _tail_frame()
  spec = parse_model_text(TAIL_MODEL)
  beyond = {}
  for weight in (napsumq.ONE_WAY_SMOOTHING, 0.0):
    res = napsumq.fit_marginals(0, frame, spec, epsilon=0.3, one_way_smoothing=weight, **FAST)
    assert res.run_smoothed == (("d",) if weight else ())
    twin = napsumq.sample_marginals(1, res, 20_000)
    beyond[weight] = float(np.mean(twin["d"].to_numpy(float) > 20))   # real rows: none
  assert beyond[napsumq.ONE_WAY_SMOOTHING] < 0.7 * beyond[0.0]   # measured 0.55, 0.19, 0.11
  data, model = tmp_path / "d.csv", tmp_path / "m.txt"
  frame.to_csv(data, index=False)
  model.write_text(TAIL_MODEL)
  out = str(tmp_path / "out")
  assert main(["napsumq", str(data), str(model), out, "--k", "3", "--steps", "20",
               "--ensemble", "1", "--visualize", "none", "--epsilon", "0.3"]) == 0
  assert "merged cells of d spread their rows partly by a smooth fit" in capsys.readouterr().out
  assert load_result(out + ".jtwin.npz").meta["smooth_decoded_runs"] == ["d"]


def test_multires_adds_coarse_copies_within_the_same_certified_budget(frame):
  """`multires`: coarse copies of the tables with a numeric column, accounted like the rest."""
  spec = parse_model_text(MODEL)
  base = napsumq.fit_marginals(jax.random.key(1), frame, spec, epsilon=1.0, delta=1e-6,
                               target="b", **FAST)
  res = napsumq.fit_marginals(jax.random.key(1), frame, spec, epsilon=1.0, delta=1e-6,
                              target="b", multires=0.3, multires_cells=2, **FAST)
  extra = res.measurements[len(base.measurements):]
  assert res.measurements[:len(base.measurements)] != base.measurements   # noisier fine tables
  assert [m[:2] for m in res.measurements[:len(base.measurements)]] == \
      [m[:2] for m in base.measurements]
  # one copy of each pair with c and of the target's triple with c, c seen in 2 runs
  assert sorted(tuple(m[0]) for m in extra) == [("a", "b", "c"), ("a", "c"), ("b", "c")]
  sizes = {m[0][0]: m[1] for m in res.measurements[:3]}
  for names, cells, sigma, s in extra:
    runs = 2 + 0                                    # c has no missing cell
    assert cells == runs * np.prod([sizes[x] for x in names if x != "c"])
    want = math.sqrt(np.prod([1 - 1 / (runs if x == "c" else sizes[x]) for x in names]))
    assert s == pytest.approx(want, rel=1e-12)
  p = res.privacy
  rho_tables = sum(s**2 / (2 * sigma**2) for _, _, sigma, s in res.measurements)
  assert rho_tables == pytest.approx(p.rho_one_way + p.rho_measurement, rel=1e-9)
  # the copies get 30% of the multi-way rho; the certified epsilon is unchanged
  rho_extra = sum(s**2 / (2 * sigma**2) for _, _, sigma, s in extra)
  assert rho_extra == pytest.approx(0.3 * p.rho_measurement, rel=1e-9)
  assert p.rho == pytest.approx(base.privacy.rho, rel=1e-9)
  assert 0.999 < p.epsilon <= 1.0
  assert len(napsumq.sample_marginals(0, res, 50)) == 50


@pytest.mark.parametrize("options,message", [
    ({"multires": 1.0}, r"multires must be a share in \[0, 1\)"),
    ({"multires": -0.1}, r"multires must be a share in \[0, 1\)"),
    ({"multires": 0.2, "multires_cells": 1}, "multires_cells must be an integer >= 2"),
    ({"multires": 0.2, "multires_order": 4}, "multires_order must be 2 or 3"),
])
def test_multires_bad_settings(frame, options, message):
  from jtwin.errors import JtwinInputError
  with pytest.raises(JtwinInputError, match=message):
    napsumq.fit_marginals(0, frame, parse_model_text(MODEL), **options, **FAST)


@pytest.mark.parametrize("epsilon", [1e-4, 1e-3, 1e-2, 1.0, 10.0])
@pytest.mark.parametrize("selection", ["all", "mst"])
def test_certified_epsilon_never_exceeds_the_target(frame, epsilon, selection):
  """The budget's numerical inversion overshot by ~1e-9 relative at epsilon = 1e-3 (audit 4:
  'epsilon = 0.001001, target 0.001'); the spent rho is now lowered until it fits."""
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")        # tiny epsilon: the noise-dominated row count
    res = napsumq.fit_marginals(0, frame, parse_model_text(MODEL), epsilon=epsilon,
                                selection=selection, num_components=2, final_steps=5,
                                posterior_steps=2)
  assert res.privacy.epsilon <= epsilon
  assert res.privacy.epsilon > epsilon * (1 - 1e-6)     # and the budget is still spent


def test_multires_with_another_selection_is_said_to_do_nothing(frame):
  with pytest.warns(UserWarning, match="multires has no effect with --select mst"):
    res = napsumq.fit_marginals(0, frame, parse_model_text(MODEL), selection="mst",
                                multires=0.3, multires_cells=2, **FAST)
  base = napsumq.fit_marginals(0, frame, parse_model_text(MODEL), selection="mst", **FAST)
  assert res.measurements == base.measurements


def test_multires_with_a_numeric_target(frame):
  """The target keeps its own view in the coarse copies (it conditions the 3-way tables)."""
  res = napsumq.fit_marginals(0, frame, parse_model_text(MODEL), target="c", multires=0.3,
                              multires_cells=2, **FAST)
  base = napsumq.fit_marginals(0, frame, parse_model_text(MODEL), target="c", **FAST)
  extra = res.measurements[len(base.measurements):]
  assert sorted(tuple(m[0]) for m in extra) == []      # only c is numeric, and it is the target
  assert 0.999 < res.privacy.epsilon <= 1.0
