"""DP row count and DP domains (`jtwin.dp_domain`): accounting, neighbours, accuracy."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jtwin import data as jdata
from jtwin import dp_domain as dd
from jtwin.accounting import gaussian
from jtwin.errors import DataError, JtwinInputError
from jtwin.spec import parse_model_text

BARE = """age : Normal
job : Categorical
smoker : Bernoulli
visits : Poisson
hours : Categorical ; bins = 0, 20, 40, 60, 100
"""
DECLARED = """age : Normal ; bounds = 0, 100 ; integer ; missing = no
job : Categorical ; categories = a, b, c ; missing
smoker : Bernoulli ; categories = no, yes ; missing = no
visits : Poisson ; missing = no
hours : Categorical ; bins = 0, 20, 40, 60, 100 ; integer ; missing = no
"""


def _frame(n, seed=0):
  rng = np.random.default_rng(seed)
  return pd.DataFrame({
      "age": rng.integers(18, 90, n),
      "job": rng.choice(["a", "b", "c", None], n, p=[0.4, 0.3, 0.2, 0.1]),
      "smoker": rng.choice(["no", "yes"], n),
      "visits": rng.poisson(2.0, n),
      "hours": rng.integers(1, 99, n),
  })


def test_declared_model_releases_nothing():
  spec = parse_model_text(DECLARED)
  assert dd.needs_release(spec) == []
  rel = dd.release_domain(np.random.default_rng(0), _frame(500), spec, epsilon=0.1, delta=1e-6)
  assert rel.epsilon == 0 and rel.spec == spec and rel.released == ()


def test_bare_model_is_fully_declared_after_release():
  spec = parse_model_text(BARE)
  frame = _frame(40_000)
  rel = dd.release_domain(np.random.default_rng(1), frame, spec, epsilon=1.0, delta=1e-6)
  assert dd.needs_release(rel.spec) == []           # nothing left for the data to decide
  used = rel.apply(frame)
  domain = jdata.resolve_domain(used, rel.spec)
  assert list(domain.inferred_from_data) == []
  by = {f.name: f for f in rel.spec.features}
  assert by["job"].categories == ("a", "b", "c", dd.OTHER) and by["job"].missing
  assert by["smoker"].categories == ("no", "yes") and by["smoker"].missing is False
  assert by["age"].integer and by["hours"].integer
  # the model file written beside the outputs parses back to the same spec
  assert parse_model_text(rel.spec.to_text()) == rel.spec


def test_noise_and_threshold_are_calibrated():
  spec = parse_model_text(BARE)
  eps, delta = 0.3, 1e-6
  rel = dd.release_domain(np.random.default_rng(0), _frame(1000), spec, epsilon=eps, delta=delta)
  m, m_cat = 5, 2                          # histograms per row; columns with discovered labels
  assert rel.category_std == rel.noise_std   # no extra budget for labels here
  sigma1 = rel.noise_std / math.sqrt(m)    # noise per unit of L2 sensitivity
  assert gaussian.gaussian_delta(eps, sigma1) <= delta / 2 * (1 + 1e-9)
  assert gaussian.gaussian_delta(eps, 0.99 * sigma1) > delta / 2      # tight
  # a label seen in one neighbour only (count 1) is released with probability p:
  p = stats.norm.sf((rel.threshold - 1.0) / rel.category_std)
  assert m_cat * p * math.exp(eps) == pytest.approx(delta / 2, rel=1e-6)


def test_rare_category_is_released_with_the_accounted_probability_only():
  """Neighbouring data sets: adding one row with a new label changes the
  released category set only with probability <= delta_thr (here ~1e-7): in
  400 runs it never does, while a label with many rows always is released."""
  spec = parse_model_text("job : Categorical ; missing = no\n")
  base = pd.DataFrame({"job": ["a"] * 3000 + ["b"] * 3000})
  plus = pd.concat([base, pd.DataFrame({"job": ["secret"]})], ignore_index=True)
  for seed in range(400):
    rel = dd.release_domain(np.random.default_rng(seed), plus, spec, epsilon=0.5, delta=1e-6)
    assert rel.spec.features[0].categories == ("a", "b", dd.OTHER)
  assert rel.apply(plus)["job"].iloc[-1] == dd.OTHER       # the rare row is merged


def test_outlier_changes_numeric_release_only_with_small_probability():
  """Same noise on D and D + {outlier}: the outlier's grid cell holds one row,
  far below the cell threshold, so every released item is identical."""
  spec = parse_model_text("x : Normal ; missing = no\n")
  rng = np.random.default_rng(5)
  base = pd.DataFrame({"x": rng.normal(1000.0, 100.0, 20_000)})
  plus = pd.concat([base, pd.DataFrame({"x": [3.0e9]})], ignore_index=True)
  for seed in range(100):
    a = dd.release_domain(np.random.default_rng(seed), base, spec, epsilon=0.5, delta=1e-6,
                          need_edges=True)
    b = dd.release_domain(np.random.default_rng(seed), plus, spec, epsilon=0.5, delta=1e-6,
                          need_edges=True)
    assert a.spec == b.spec and a.edges == b.edges


@pytest.mark.parametrize("loc,scale", [(50.0, 10.0), (2.0e5, 1.0e5), (-300.0, 40.0)])
def test_standardisation_is_close_to_the_data(loc, scale):
  spec = parse_model_text("x : Normal\n")
  x = np.random.default_rng(0).normal(loc, scale, 100_000)
  rel = dd.release_domain(np.random.default_rng(1), pd.DataFrame({"x": x}), spec, epsilon=1.0,
                          delta=1e-6)
  f = rel.spec.features[0]
  assert abs(f.loc - loc) < 0.05 * scale and f.scale == pytest.approx(scale, rel=0.2)
  assert f.integer is False and f.missing is False


def test_integer_flag_and_spiky_column_scale():
  spec = parse_model_text("x : Normal\ny : Normal\n")
  rng = np.random.default_rng(0)
  n = 50_000
  spiky = np.where(rng.random(n) < 0.9, 0.0, np.round(rng.lognormal(8, 1, n)))
  frame = pd.DataFrame({"x": spiky, "y": rng.normal(0, 1, n)})
  rel = dd.release_domain(np.random.default_rng(2), frame, spec, epsilon=1.0, delta=1e-6)
  fx, fy = rel.spec.features
  assert fx.integer is True and fy.integer is False
  # 90% zeros: a robust sd of ~0 would blow the other 10% up; the scale follows the 1-99% range
  assert fx.scale > 100


def test_edges_for_the_marginal_method():
  spec = parse_model_text("age : Normal\nw : Normal\n")
  rng = np.random.default_rng(0)
  frame = pd.DataFrame({"age": rng.integers(17, 91, 30_000),
                        "w": rng.lognormal(11, 0.5, 30_000)})
  rel = dd.release_domain(np.random.default_rng(3), frame, spec, epsilon=1.0, delta=1e-6,
                          need_edges=True)
  edges, point = np.asarray(rel.edges["age"][0]), np.asarray(rel.edges["age"][1])
  years = edges[:-1][point]
  assert years[0] <= 20 and years[-1] >= 85                      # one cell per year
  assert np.all(np.diff(years) == 1) and point[np.argmax(point):][:len(years)].all()
  assert not point[0] and not point[-1]                            # wider tail cells beyond
  assert edges[0] >= 0 and edges[-1] <= years[-1] * 10 ** 0.5 + 1
  w_edges, w_point = rel.edges["w"]
  assert not any(w_point) and len(w_edges) > 10
  inside = np.mean((frame["w"] >= w_edges[0]) & (frame["w"] <= w_edges[-1]))
  assert inside > 0.999


@pytest.mark.parametrize("lo,hi,reach", [(5.62, 23.7, True), (0.0, 100.0, False),
                                         (-50.0, -3.0, True), (-2.0, 7.5, False),
                                         (27_385.0, 133_353.0, True), (1990.0, 2016.0, False),
                                         (-31.0, -30.0, False)])
def test_tail_cells_double_out_to_half_a_decade_without_crossing_zero(lo, hi, reach):
  below, above = dd._tail_edges(lo, hi)
  # one more cell reaches zero when zero is nearer than the range's width (years and
  # latitudes keep their tails only)
  assert reach == bool((lo > 0 and below[0] == 0.0) or (hi < 0 and above[-1] == 0.0))
  if reach:
    outer = below[1] if lo > 0 else above[-2]
    assert abs(outer) < dd.ZERO_REACH * (hi - lo)
    below, above = (below[1:], above) if lo > 0 else (below, above[:-1])
  assert 1 <= len(above) <= 4 and len(below) <= 4
  assert np.all(below < lo) and np.all(above > hi) and np.all(np.diff(above) > 0)
  assert np.all(np.isin(np.concatenate([below, above]), np.append(dd.GRID, 0.0)))
  if lo >= 0:
    assert np.all(below >= 0)
  if hi <= 0:
    assert np.all(above <= 0)
  if hi > 0:   # out to about half a decade of the grid, widths doubling
    assert above[-1] <= hi * 10 ** (0.5 + 1.5 / dd._PER_DECADE)
    if len(above) == 4:
      assert np.all(np.diff(np.log10(np.concatenate([[hi], above]))[1:]) > 0)
  if lo > 0:
    assert below[0] >= lo * 10 ** -(0.5 + 1.5 / dd._PER_DECADE)


def test_row_count_is_two_sided_geometric():
  eps = 0.5
  rng = np.random.default_rng(0)
  draws = np.array([dd.noisy_row_count(rng, 10_000, eps) for _ in range(20_000)]) - 10_000
  a = math.exp(-eps)
  var = 2 * a / (1 - a) ** 2
  assert abs(draws.mean()) < 4 * math.sqrt(var / len(draws))
  assert draws.var() == pytest.approx(var, rel=0.05)
  # pure DP: P(noise = k) / P(noise = k + 1) = e^eps for k >= 0
  p0, p1 = np.mean(draws == 0), np.mean(draws == 1)
  assert p0 / p1 == pytest.approx(math.exp(eps), rel=0.1)
  assert dd.noisy_row_count(rng, 0, eps) >= 1


def test_plan_release_splits_the_budget():
  frame = _frame(5000)
  bare = dd.plan_release(np.random.default_rng(0), frame, parse_model_text(BARE), epsilon=1.0,
                         delta=None)
  assert bare.rows_epsilon == pytest.approx(0.01)
  assert bare.release.epsilon == pytest.approx(0.09)
  assert bare.epsilon_rest == pytest.approx(0.9)
  assert bare.delta == pytest.approx(0.1 / bare.rows)                 # from the DP count
  assert bare.delta_rest == pytest.approx(0.9 * bare.delta)
  declared = dd.plan_release(np.random.default_rng(0), frame, parse_model_text(DECLARED),
                             epsilon=1.0, delta=1e-6)
  assert declared.release.epsilon == 0 and declared.epsilon_rest == pytest.approx(0.99)
  assert declared.delta_rest == 1e-6
  data_mode = dd.plan_release(np.random.default_rng(0), frame, parse_model_text(BARE),
                              epsilon=1.0, delta=1e-6, domain="data")
  assert data_mode.release.epsilon == 0 and data_mode.spec == parse_model_text(BARE)
  with pytest.raises(ValueError, match="leave nothing"):
    dd.plan_release(np.random.default_rng(0), frame, parse_model_text(BARE), epsilon=1.0,
                    delta=1e-6, domain_epsilon=0.995)


def test_too_small_data_is_a_clear_error():
  spec = parse_model_text("job : Categorical\n")
  with pytest.raises(DataError, match="no category is frequent enough"):
    dd.release_domain(np.random.default_rng(0), pd.DataFrame({"job": ["a", "b"] * 20}), spec,
                      epsilon=1.0, delta=1e-6)


def test_library_warns_about_domains_read_off_the_data():
  frame = _frame(300)
  with pytest.warns(UserWarning, match="NOT covered by the epsilon guarantee"):
    jdata.resolve_domain(frame, parse_model_text(BARE))
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    jdata.resolve_domain(frame, parse_model_text(DECLARED))      # nothing inferred: silent


def test_cli_keeps_private_statistics_off_the_console_and_plots_apart(tmp_path, capsys):
  from jtwin.cli import main
  frame = _frame(400)
  frame.loc[0, "age"] = 150                         # outside the declared bounds
  data = tmp_path / "data.csv"
  frame.to_csv(data, index=False)
  model = tmp_path / "model.txt"
  model.write_text(DECLARED)
  code = main(["fit", str(data), str(model), str(tmp_path / "out"), "-e", "2", "-q", "0.1",
               "--k", "3", "--seed", "0", "--visualize", "store", "--quiet"])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert "loglik" not in err and "loglik" not in out          # no exact training statistics
  assert "outside the declared" not in out + err     # whether one row was clipped: private
  assert "400" not in out + err                                 # the exact N is never printed
  plots = sorted(p.name for p in (tmp_path / "out.real_data_plots").iterdir())
  assert plots and all(name.endswith(".svg") for name in plots)
  assert not any(p.name.endswith(".svg") for p in tmp_path.iterdir())     # none beside the twin
  assert "NOT for release" in err                               # shown even with --quiet
  assert oct((tmp_path / "out.real_data_plots").stat().st_mode & 0o777) == "0o700"
  code = main(["fit", str(data), str(model), str(tmp_path / "out2"), "-e", "2", "-q", "0.1",
               "--k", "3", "--seed", "0", "--visualize", "none", "--verbose"])
  out, err = capsys.readouterr()
  assert code == 0, err
  line = next(l for l in out.splitlines() if "outside the declared range" in l)
  assert "'age': 1 value(s)" in line and "NOT private" in line      # only with --verbose


def test_custom_model_result_stores_no_absolute_path_and_still_samples(tmp_path, capsys,
                                                                        monkeypatch):
  import json
  import shutil
  from jtwin.cli import main
  from jtwin.examples import custom_model
  from jtwin.result_io import load_result
  work = tmp_path / "project"
  work.mkdir()
  model = work / "my_model.py"
  shutil.copy(custom_model.__file__, model)
  rng = np.random.default_rng(0)
  data = work / "d.csv"
  pd.DataFrame({"age": rng.integers(17, 90, 500), "hours_per_week": rng.integers(1, 99, 500)}
               ).to_csv(data, index=False)
  assert main(["fit", str(data), str(model), str(work / "out"), "-e", "2", "-q", "0.1",
               "--seed", "0", "--visualize", "none", "--quiet"]) == 0
  meta = load_result(str(work / "out.jtwin.npz")).meta
  assert meta["model"]["path"] == "my_model.py"
  assert str(tmp_path) not in json.dumps(meta)           # nothing about where the holder works
  monkeypatch.chdir(tmp_path)                            # elsewhere: found beside the result
  assert main(["sample", str(work / "out.jtwin.npz"), "-n", "10", "-o",
               str(tmp_path / "more.csv"), "--quiet"]) == 0
  assert len(pd.read_csv(tmp_path / "more.csv")) == 10
  capsys.readouterr()


def test_zcdp_composition_shares_rho_and_budgets_the_threshold():
  from jtwin.accounting import zcdp
  frame = _frame(20_000)
  plan = dd.plan_release(np.random.default_rng(0), frame, parse_model_text(BARE), epsilon=1.0,
                         delta=1e-6, composition="zcdp")
  rel = plan.release
  thr_delta = 0.05 * 1e-6
  rho_total = zcdp.cdp_rho(1.0 - 0.01, 1e-6 - thr_delta)
  assert rel.rho == pytest.approx(0.1 * rho_total, rel=1e-12) and rel.epsilon == 0
  assert rel.noise_std == pytest.approx(math.sqrt(5 / (2 * rel.rho)), rel=1e-12)
  assert plan.delta_rest == pytest.approx(1e-6 - thr_delta) and plan.epsilon_rest == 0.99
  p = stats.norm.sf((rel.threshold - 1.0) / rel.category_std)
  assert 2 * p == pytest.approx(thr_delta * math.exp(-1.0), rel=1e-6)   # 2 discovered columns
  # the zCDP share is much less noisy than the same share of epsilon added by basic composition
  basic = dd.plan_release(np.random.default_rng(0), frame, parse_model_text(BARE), epsilon=1.0,
                          delta=1e-6).release
  assert rel.noise_std < 0.5 * basic.noise_std


@pytest.mark.parametrize("composition", ["zcdp", "gdp"])
def test_category_share_lowers_the_label_noise_and_is_paid_for(composition):
  """Columns whose categories are released get category_share * rho more: the histograms
  stay one Gaussian mechanism with sum over columns of 1 / sd^2 = 2 rho (a row adds one
  count to each column's histogram), the threshold sits at the labels' own sd, and the
  noisy label counts come back for reuse, close to the true counts."""
  from jtwin.accounting import gaussian, zcdp
  frame = _frame(20_000)
  spec = parse_model_text(BARE)
  plain = dd.plan_release(np.random.default_rng(0), frame, spec, epsilon=1.0, delta=1e-6,
                          composition=composition).release
  plan = dd.plan_release(np.random.default_rng(0), frame, spec, epsilon=1.0, delta=1e-6,
                         composition=composition, category_share=0.06)
  rel = plan.release
  to_rho = zcdp.cdp_rho if composition == "zcdp" else gaussian.composed_rho
  rho_all = to_rho(1.0 - 0.01, 1e-6 - 0.05 * 1e-6)
  assert rel.rho == pytest.approx(0.1 * rho_all + 2 * 0.06 * rho_all, rel=1e-12)
  assert rel.noise_std == pytest.approx(plain.noise_std, rel=1e-12)   # numeric ones as before
  assert 3 / rel.noise_std**2 + 2 / rel.category_std**2 == pytest.approx(2 * rel.rho, rel=1e-12)
  assert rel.category_std < 0.6 * rel.noise_std and rel.threshold < 0.6 * plain.threshold
  p = stats.norm.sf((rel.threshold - 1.0) / rel.category_std)
  assert 2 * p == pytest.approx(0.05 * 1e-6 * math.exp(-1.0), rel=1e-6)
  assert set(rel.label_counts) == set(rel.merged) == {"job", "smoker"}
  for name, (labels, missing) in rel.label_counts.items():
    truth = frame[name].value_counts()
    assert set(labels) == set(rel.spec.features[rel.spec.names.index(name)].categories) - {
        dd.OTHER}
    assert all(abs(v - truth[k]) < 6 * rel.category_std for k, v in labels.items())
    assert abs(missing - frame[name].isna().sum()) < 6 * rel.category_std
  # basic composition has no rho to add to
  with pytest.raises(JtwinInputError, match="category_rho"):
    dd.release_domain(np.random.default_rng(0), frame, spec, epsilon=1.0, delta=1e-6,
                      category_rho=0.01)


def _narrow_frame(n, seed=0):
  rng = np.random.default_rng(seed)
  return pd.DataFrame({"year": rng.integers(2000, 2016, n),
                       "lat": np.round(rng.uniform(30.0, 31.0, n), 4),
                       "income": np.round(rng.lognormal(10.5, 0.6, n))})


def test_narrow_columns_get_fine_edges_from_one_more_histogram():
  spec = parse_model_text("year : Poisson\nlat : Normal\nincome : Normal\n")
  frame = _narrow_frame(20_000)
  rel = dd.release_domain(np.random.default_rng(1), frame, spec, rho=0.01,
                          threshold_delta=1e-7, need_edges=True)
  # years 2000..2015 sit inside one or two grid cells about 300 wide: one cell per year
  edges, point = rel.edges["year"]
  assert edges == tuple(float(y) for y in range(2000, 2017)) and all(point)
  # a narrow non-integer column: quantile edges inside its range, no wider than it
  lat = np.asarray(rel.edges["lat"][0])
  assert 29.9 <= lat[0] <= 30.02 and 30.98 <= lat[-1] <= 31.1 and len(lat) > 20
  assert not any(rel.edges["lat"][1])
  # a wide column keeps the coarse path (tail cells included)
  assert rel.edges["income"][0][0] < frame["income"].min()
  fine = [r for r in rel.released if ": fine " in r]
  assert sorted(fine) == ["lat: fine bin edges", "year: fine bin edges"]
  # each fine histogram is one more histogram of sensitivity 1 at the same noise sd
  assert rel.noise_std == pytest.approx(math.sqrt(3 / (2 * 0.01)), rel=1e-12)
  assert rel.rho == pytest.approx(0.01 + 2 / (2 * rel.noise_std**2), rel=1e-12)


def test_fine_edges_only_in_zcdp_and_same_from_merged_chunks():
  spec = parse_model_text("year : Poisson\nlat : Normal\nincome : Normal\n")
  frame = _narrow_frame(6_000, seed=2)
  basic = dd.release_domain(np.random.default_rng(1), frame, spec, epsilon=1.0, delta=1e-6,
                            need_edges=True)
  assert not [r for r in basic.released if "fine" in r]        # basic composition: coarse only
  whole = dd.count_domain(frame, spec, need_edges=True)
  parts = dd.merge_counts(dd.count_domain(frame.iloc[:2500], spec, need_edges=True),
                          dd.count_domain(frame.iloc[2500:], spec, need_edges=True))
  np.testing.assert_array_equal(parts.columns["year"].fine, whole.columns["year"].fine)
  a = dd.release_counts(np.random.default_rng(5), whole, spec, rho=0.01, threshold_delta=1e-7,
                        need_edges=True)
  b = dd.release_counts(np.random.default_rng(5), parts, spec, rho=0.01, threshold_delta=1e-7,
                        need_edges=True)
  assert a.edges == b.edges and a.rho == b.rho and a.rho > 0.01


@pytest.mark.parametrize("span,expected", [((2000.0, 2016.0), True), ((-31.0, -30.0), True),
                                           ((-1.0, 5.0), False), ((1.0, 100.0), False),
                                           ((17.0, 91.0), False)])
def test_narrow_cells_rule(span, expected):
  cells = dd._narrow_cells(span)
  assert (cells is not None) == expected
  if expected:
    assert 1 <= len(cells) <= dd.NARROW_CELLS
    lo, hi = dd._cell_edges()
    assert lo[cells[0]] <= span[0] and hi[cells[-1]] >= span[1]


def test_a_fine_histogram_that_is_not_used_is_still_paid_for():
  # depth-like: a spike with thin tails that fills its grid cells
  rng = np.random.default_rng(4)
  frame = pd.DataFrame({"depth": np.round(np.clip(rng.normal(61.7, 1.4, 20_000), 43, 79), 1)})
  frame.loc[:150, "depth"] = rng.uniform(45, 79, 151).round(1)
  rel = dd.release_domain(np.random.default_rng(1), frame, parse_model_text("depth : Normal\n"),
                          rho=0.01, threshold_delta=1e-7, need_edges=True)
  drawn = [r for r in rel.released if ": fine " in r]
  assert drawn == ["depth: fine histogram (coarse edges kept)"]
  assert rel.rho == pytest.approx(0.01 + 1 / (2 * rel.noise_std**2), rel=1e-12)
  assert rel.edges["depth"][0][0] < 45 and rel.edges["depth"][0][-1] > 79   # coarse tails


def test_a_zero_spike_below_the_noise_threshold_still_reaches_zero():
  """A clipped column of a small table: 2-5% zeros, below the cell threshold, and no other
  values near zero. Its edges reach zero, so the zeros are not decoded half a decade up;
  a column far from zero (years) keeps its tails only."""
  rng = np.random.default_rng(3)
  n = 10_000
  util = np.round(np.clip(rng.normal(50, 24, n), 0, 120), 1)
  util[util < 8] = 0.0                                   # a spike at zero only
  frame = pd.DataFrame({"util": util, "year": rng.integers(1990, 2017, n).astype(float)})
  spec = parse_model_text("util : Normal\nyear : Normal ; integer = no\n")
  assert 0.02 < np.mean(util == 0) < 0.05
  for seed in range(4):
    rel = dd.release_domain(np.random.default_rng(seed), frame, spec, rho=1.2e-4,
                            threshold_delta=1e-7, need_edges=True)
    # the zeros are below the cell threshold of the quantiles
    assert np.sum(util == 0) < dd._cell_threshold(rel.noise_std, len(dd.GRID) + 1)
    util_edges, year_edges = rel.edges["util"][0], rel.edges["year"][0]
    assert util_edges[0] == 0.0 and util_edges[1] > 1.0
    assert year_edges[0] > 100.0                     # half a decade below, not 0
