"""Columns declared `determined_by` another: learned map, decoding, fit, CLI."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from jtwin import napsumq
from jtwin.accounting import gaussian
from jtwin.cli import main
from jtwin.marginals import cells as cl
from jtwin.marginals import derived as dv
from jtwin.result_io import load_result
from jtwin.spec import parse_model_text

FAST = dict(num_components=4, final_steps=150, posterior_steps=50, ensemble=1)
# code -> label, as Adult's education_num -> education (one-to-one) and a
# many-to-one grouping (region of a code)
LABEL = {1: "one", 2: "two", 3: "three", 4: "four"}
REGION = {1: "low", 2: "low", 3: "high", 4: "high"}
MODEL = """\
code : Categorical ; categories = 1, 2, 3, 4 ; missing = no
label : Categorical ; categories = four, one, three, two ; missing = no ; determined_by = code
region : Bernoulli ; categories = high, low ; missing = no ; determined_by = code
y : Bernoulli ; categories = n, yes ; missing = no
"""


def _frame(n=4000, seed=0):
  rng = np.random.default_rng(seed)
  code = rng.choice([1, 2, 3, 4], n, p=[0.4, 0.3, 0.2, 0.1])
  y = np.where(rng.random(n) < np.where(code >= 3, 0.8, 0.2), "yes", "n")
  return pd.DataFrame({"code": code, "label": [LABEL[c] for c in code],
                       "region": [REGION[c] for c in code], "y": y})


@pytest.fixture(scope="module")
def fitted():
  spec = parse_model_text(MODEL)
  with warnings.catch_warnings():
    warnings.simplefilter("error")          # a true function: no "not a function" warning
    res = napsumq.fit_marginals(0, _frame(), spec, epsilon=1.0, delta=1e-6, **FAST)
  return spec, res


@pytest.mark.parametrize("rows,cols,seed", [(5, 5, 0), (16, 16, 1), (8, 3, 2)])
def test_learn_map_recovers_a_function_and_off_map_share(rows, cols, seed):
  rng = np.random.default_rng(seed)
  f = rng.integers(0, cols, rows)
  table = np.zeros((rows, cols))
  table[np.arange(rows), f] = rng.integers(200, 2000, rows)
  sigma = 10.0
  noisy = table + sigma * rng.standard_normal(table.shape)
  mapping = dv.learn_map(noisy)
  assert mapping == tuple(int(x) for x in f)
  share, sd = dv.off_map_share(noisy, mapping, sigma)
  assert abs(share) < 4 * sd
  assert sd == pytest.approx(sigma * math.sqrt(rows * cols - rows) / noisy.sum())
  # half of every row moved off the map: the share says so
  moved = table.copy()
  moved[np.arange(rows), (f + 1) % cols] += table[np.arange(rows), f]
  share2, _ = dv.off_map_share(moved, dv.learn_map(moved + 1e-9 * np.arange(cols)), sigma)
  assert share2 == pytest.approx(0.5)


def test_fit_leaves_determined_columns_out_and_decodes_them_exactly(fitted):
  spec, res = fitted
  assert [c.name for c in res.cells] == ["code", "y"]
  assert [(d.name, d.parent, d.position) for d in res.derived] == [
      ("label", "code", 1), ("region", "code", 2)]
  twin = napsumq.sample_marginals(1, res, 3000)
  assert list(twin.columns) == list(spec.names)
  assert (twin["label"] == twin["code"].map(LABEL)).all()
  assert (twin["region"] == twin["code"].map(REGION)).all()
  # the parent keeps its distribution (and its relation with y)
  real = _frame()
  assert twin["code"].value_counts(normalize=True).sort_index().to_numpy() == pytest.approx(
      real["code"].value_counts(normalize=True).sort_index().to_numpy(), abs=0.04)


def test_budget_of_the_determined_tables(fitted):
  _, res = fitted
  p = res.privacy
  # one (parent, child) table per determined column replaces its 1-way table, at
  # sigma1 / sqrt(DERIVED_SHARE): the 1-way part is still one_way_fraction of rho
  logged = {tuple(names): sigma for names, _, sigma, _ in res.measurements}
  sens = {tuple(names): s for names, _, _, s in res.measurements}
  sigma1 = logged[("code",)]
  assert logged[("code", "label")] == pytest.approx(sigma1 / math.sqrt(napsumq.DERIVED_SHARE))
  assert ("label",) not in logged and ("label", "y") not in logged
  assert sum(sens[names]**2 / (2 * s**2) for names, s in logged.items()) == pytest.approx(
      p.rho_one_way + p.rho_measurement, rel=1e-9)
  rest = gaussian.composed_rho(res.public.epsilon_rest, res.public.delta_rest) - p.rho_domain
  assert p.rho_one_way == pytest.approx(0.4 * rest, rel=1e-9)
  assert p.rho <= gaussian.composed_rho(res.public.epsilon_rest, res.public.delta_rest) * (
      1 + 1e-9)
  assert p.epsilon <= 1.0
  assert len(res.measurements) == 2 + 2 + 1      # 1-way code, y; two derived; code x y


def test_decode_missing_parent_and_child():
  parent = cl.CellColumn("p", "category", labels=("a", "b"), missing=True,
                         groups=((0,), (1,)), weights=((1.0,), (1.0,)))
  child = cl.CellColumn("c", "category", labels=("u", "v"), missing=True,
                        groups=((0,), (1,)), weights=((1.0,), (1.0,)))
  # a -> v, b -> missing, missing -> u
  d = dv.DerivedColumn("c", "p", child, (1, 2, 0), 0)
  assert dv.DerivedColumn.from_dict(d.to_dict()) == d
  codes = np.array([[0], [1], [2], [0]])
  out = cl.decode_cells(codes, np.ones_like(codes, bool), (parent,),
                        np.random.default_rng(0), derived=(d,))
  assert list(out.columns) == ["c", "p"]
  assert out["p"].tolist()[:2] == ["a", "b"] and pd.isna(out["p"][2])
  assert out["c"][0] == "v" and pd.isna(out["c"][1]) and out["c"][2] == "u"


def test_a_declared_non_function_is_warned():
  frame = _frame()
  frame["label"] = np.random.default_rng(5).permutation(frame["label"].to_numpy())
  with pytest.warns(UserWarning, match="determined_by = code.*most common"):
    napsumq.fit_marginals(0, frame, parse_model_text(MODEL), epsilon=1.0, delta=1e-6, **FAST)


@pytest.mark.parametrize("kwargs,message", [
    (dict(target="label"), "--target 'label' is declared 'determined_by = code'"),
    (dict(queries=[["region", "y"]], selection="none"),
     "query clique 'region' is declared 'determined_by = code'"),
])
def test_determined_column_in_target_or_query_is_refused(kwargs, message):
  with pytest.raises(napsumq.JtwinInputError, match=message):
    napsumq.fit_marginals(0, _frame(500), parse_model_text(MODEL), **FAST, **kwargs)


def test_cli_result_file_keeps_the_map(tmp_path, capsys):
  data, model, out = tmp_path / "d.csv", tmp_path / "m.txt", str(tmp_path / "out")
  _frame(2000).to_csv(data, index=False)
  model.write_text(MODEL)
  assert main(["napsumq", str(data), str(model), out, "--k", "3", "--steps", "60",
               "--visualize", "none", "--seed", "2"]) == 0, capsys.readouterr().err
  assert "4 columns (2 derived from others)" in capsys.readouterr().out
  info = load_result(out + ".jtwin.npz").meta["model"]
  assert [d["name"] for d in info["derived"]] == ["label", "region"]
  assert main(["sample", out + ".jtwin.npz", "-n", "400", "-o", str(tmp_path / "s.csv"),
               "--quiet", "--seed", "3"]) == 0
  for path in (out + ".csv", tmp_path / "s.csv"):
    twin = pd.read_csv(path)
    assert list(twin.columns) == ["code", "label", "region", "y"]
    assert (twin["label"] == twin["code"].map(LABEL)).all()
    assert (twin["region"] == twin["code"].map(REGION)).all()


def test_dp_vi_says_it_models_determined_columns_as_usual():
  from jtwin import _commands
  with pytest.warns(UserWarning, match=r"DP-VI \('jtwin fit'\) models 'label', 'region'"):
    prep = _commands.prepare(_frame(300), parse_model_text(MODEL), k=2, drop_na=False,
                             source="data")
  assert prep.values.shape[1] == 4            # all four columns modelled


def test_synthesizer_save_load_keeps_the_map(tmp_path):
  import jtwin
  synth = jtwin.Synthesizer(parse_model_text(MODEL), method="napsumq", epsilon=1.0, seed=0,
                            num_components=3, final_steps=40, posterior_steps=5)
  synth.fit(_frame(1500))
  synth.save(tmp_path / "m.jtwin.npz")
  again = jtwin.load(tmp_path / "m.jtwin.npz")
  for twin in (synth.sample(300, seed=1), again.sample(300, seed=1)):
    assert list(twin.columns) == ["code", "label", "region", "y"]
    assert (twin["label"] == twin["code"].map(LABEL)).all()
  pd.testing.assert_frame_equal(again.sample(50, seed=2), synth.sample(50, seed=2))


@pytest.mark.parametrize("shuffled,code,message", [
    (0, 0, "'label' determined_by 'code': holds on every row"),
    (4, 0, "4 rows (0.2%) differ from the most common 'label'"),
    (400, 1, "so it is not a function of it; remove 'determined_by'"),
])
def test_check_reports_whether_the_declaration_holds(tmp_path, capsys, shuffled, code, message):
  frame = _frame(2000)
  rng = np.random.default_rng(0)
  rows = rng.choice(np.flatnonzero(frame["code"] == 1), shuffled, replace=False)
  frame.loc[rows, "label"] = "two"                       # code 1 is "one" elsewhere
  data, model = tmp_path / "d.csv", tmp_path / "m.txt"
  frame.to_csv(data, index=False)
  model.write_text(MODEL)
  assert main(["check", str(data), str(model)]) == code
  out = capsys.readouterr()
  assert message in out.out + out.err

