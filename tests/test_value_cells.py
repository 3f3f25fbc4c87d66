"""Synthetic values respect declared top-codes; spikes get cells of their own."""
import numpy as np
import pandas as pd
import pytest

from jtwin import data as jdata
from jtwin.errors import ModelFileError
from jtwin.spec import parse_model_file, parse_model_text


def _domain(text, df):
  return jdata.resolve_domain(df, parse_model_text(text), warn=False) if "warn" in \
      jdata.resolve_domain.__code__.co_varnames else jdata.resolve_domain(df, parse_model_text(text))


def _decode_all_codes(domain, reps=2000, seed=0):
  """Every cell's code `reps` times, decoded."""
  k = len(domain.columns[0].categories)
  codes = np.repeat(np.arange(k), reps).astype(np.float64)[:, None]
  out = jdata.decode(codes, np.ones_like(codes, bool), domain, rng=np.random.default_rng(seed))
  return codes[:, 0].astype(int), out.iloc[:, 0].to_numpy(float)


def test_binned_column_never_exceeds_its_declared_top_code():
  text = "capital_gain : Categorical ; bins = 0, 1, 50000, 99999, 100000 ; bounds = 0, 99999 ; integer\n"
  df = pd.DataFrame({"capital_gain": [0, 0, 5000, 99999]})
  _, x = _decode_all_codes(_domain(text, df))
  assert x.max() == 99999 and (x == 99999).sum() >= 2000      # the top cell is the top-code


def test_bundled_adult_model_declares_the_capital_gain_top_code():
  import os
  import jtwin
  spec = parse_model_file(os.path.join(os.path.dirname(jtwin.__file__), "examples",
                                       "adult_model.txt"))
  f = {f.name: f for f in spec.features}["capital_gain"]
  assert f.bounds == (0.0, 99999.0)


def test_integer_range_is_one_cell_per_value():
  text = "education_num : Categorical ; bounds = 1, 16 ; integer ; missing = no\n"
  df = pd.DataFrame({"education_num": np.arange(1, 17)})
  domain = _domain(text, df)
  assert len(domain.columns[0].categories) == 16 and domain.columns[0].from_data == ()
  enc = jdata.encode(df, domain)
  back = jdata.decode(enc.values, enc.observed, domain, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(back["education_num"].to_numpy(), np.arange(1, 17))
  codes, x = _decode_all_codes(domain)
  assert x.min() == 1 and x.max() == 16 and np.all(x == codes + 1)


def test_points_keep_spikes_inside_a_bin():
  text = "hours : Categorical ; bins = 1, 40, 60, 99 ; points = 40, 50, 99 ; integer\n"
  df = pd.DataFrame({"hours": [50, 50, 50, 40, 20, 99]})
  domain = _domain(text, df)
  enc = jdata.encode(df, domain)
  back = jdata.decode(enc.values, enc.observed, domain, rng=np.random.default_rng(0))
  # every 50, 40 and 99 comes back exactly (before: uniform over 40..59 or 60..99)
  np.testing.assert_array_equal(back["hours"].to_numpy()[[0, 1, 2, 3, 5]], [50, 50, 50, 40, 99])
  _, x = _decode_all_codes(domain)
  assert x.max() == 99


def test_points_of_a_continuous_column_are_exact():
  text = "rate : Categorical ; bins = 0, 1, 2 ; points = 0.5 ; integer = no\n"
  df = pd.DataFrame({"rate": [0.5, 0.5, 1.5]})
  domain = _domain(text, df)
  enc = jdata.encode(df, domain)
  back = jdata.decode(enc.values, enc.observed, domain, rng=np.random.default_rng(0))
  assert back["rate"].tolist()[:2] == [0.5, 0.5]


@pytest.mark.parametrize("text,match", [
    ("h : Categorical ; bins = 1, 40, 99 ; points = 50\n", "integer"),
    ("h : Categorical ; bins = 1, 40, 99 ; points = 120 ; integer\n", "outside its bins"),
    ("h : Categorical ; points = 5 ; integer\n", "bins"),
    ("h : Categorical ; bounds = 1, 16\n", "'integer'"),
    ("h : Categorical ; bounds = 0, 5000 ; integer\n", "give 'bins"),
    ("h : Categorical ; categories = a, b ; bounds = 1, 2\n", "not both"),
])
def test_cell_options_errors(text, match):
  with pytest.raises(ModelFileError, match=match):
    parse_model_text(text, path="m.txt")


def test_expanded_cells_round_trip_through_to_text():
  spec = parse_model_text("h : Categorical ; bins = 1, 40, 99 ; points = 40, 99 ; integer\n")
  assert parse_model_text(spec.to_text()) == spec


def test_napsumq_cells_respect_the_top_code_and_integer_range():
  from jtwin.marginals import cells as cl
  text = ("capital_gain : Categorical ; bins = 0, 1, 50000, 99999, 100000 ; bounds = 0, 99999 ;"
          " integer ; missing = no\n"
          "education_num : Categorical ; bounds = 1, 16 ; integer ; missing = no\n")
  df = pd.DataFrame({"capital_gain": [0, 0, 5000, 99999], "education_num": [1, 16, 9, 13]})
  spec = parse_model_text(text)
  domain = _domain(text, df)
  built = cl.build_cells(df, spec, domain)
  rng = np.random.default_rng(0)
  for c in built:
    codes = np.repeat(np.arange(c.num_cells), 500)[:, None]
    x = cl.decode_cells(codes, np.ones_like(codes, bool), (c,), rng).iloc[:, 0].to_numpy(float)
    if c.name == "capital_gain":
      assert x.max() == 99999
    else:
      assert c.num_cells == 16 and x.min() == 1 and x.max() == 16
