"""Tests for jtwin.data and jtwin._atomic: CSV I/O, domains, encode/decode."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from jtwin import _atomic
from jtwin import data
from jtwin.errors import DataError
from jtwin.models import Feature
from jtwin.spec import parse_model_file, parse_model_text

EXAMPLES = os.path.join(os.path.dirname(data.__file__), "examples")
ADULT_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "jtwin", "examples", "adult.csv.gz")   # bundled adult_train.csv


def _spec(text):
  return parse_model_text(text, path="model.txt")


def _df():
  """A small frame with every family, missing cells and an integer column."""
  return pd.DataFrame({
      "age": [37, 51, np.nan, 23, 37, 64],
      "height": [1.62, 1.80, 1.75, np.nan, 1.58, 1.91],
      "job": ["b", None, "a", "c", "a", "b"],
      "code": [13, 9, 10, 13, 9, 10],
      "smoker": ["no", "yes", "no", "no", "yes", "no"],
      "visits": [0, 3, 1, 7, np.nan, 2],
  })


MODEL = """
age    : Normal      ; integer ; missing
height : Normal
job    : Categorical
code   : Categorical
smoker : Bernoulli   ; categories = yes, no
visits : Poisson     ; bounds = 0, 5
"""


# ------------------------------------------------------------------ read_csv


def test_read_csv_na_tokens_and_types(tmp_path):
  path = tmp_path / "d.csv"
  path.write_text("a,b,c\n1,x,2.5\n,NA,n/a\n3,,NULL\n")
  df = data.read_csv(str(path))
  assert df["a"].isna().tolist() == [False, True, False]
  assert df["b"].isna().tolist() == [False, True, True]
  assert df["c"].isna().tolist() == [False, True, True]
  assert df["a"].dropna().tolist() == [1, 3]


@pytest.mark.parametrize("content,expected", [
    (None, "data file not found"),
    ("", "the data file is empty"),
    ("\n\n", "the data file is empty"),
    ("a,b\n", "has a header but no data rows"),
    ("a,b\n1,2\n1,2,3\n", "malformed CSV"),
    (b"a\ncaf\xe9\n", "not UTF-8"),
])
def test_read_csv_errors(tmp_path, content, expected):
  path = tmp_path / "d.csv"
  if isinstance(content, bytes):
    path.write_bytes(content)
  elif content is not None:
    path.write_text(content)
  with pytest.raises(DataError) as info:
    data.read_csv(str(path))
  assert str(info.value).startswith(f"{path}: ")
  assert expected in str(info.value) and "\n" not in str(info.value)


def test_read_csv_directory(tmp_path):
  with pytest.raises(DataError, match="is a directory"):
    data.read_csv(str(tmp_path))


# ------------------------------------------------------------ select_columns


def test_select_columns_order_and_drop_na():
  df = _df().assign(extra=1)
  spec = _spec("visits : Poisson\nage : Normal\n")
  out = data.select_columns(df, spec)
  assert list(out.columns) == ["visits", "age"] and len(out) == 6
  out = data.select_columns(df, spec, drop_na=True)
  assert list(out.index) == [0, 1, 3, 5]


def test_select_columns_drop_na_leaves_nothing():
  df = pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan, 2.0]})
  with pytest.raises(DataError, match="leaves no data"):
    data.select_columns(df, _spec("a : Normal\nb : Normal"), drop_na=True)


@pytest.mark.parametrize("text,expected", [
    ("x : Normal\n\nAge : Normal\n",
     "model.txt:3: column 'Age' is not in data.csv (did you mean 'age'?)"),
    ("hieght : Normal\n", "model.txt:1: column 'hieght' is not in data.csv "
     "(did you mean 'height'?)"),
    ("zzz : Normal\n", "model.txt:1: column 'zzz' is not in data.csv (its "
     "columns are: age, height, job"),
])
def test_unknown_column_suggests(text, expected):
  df = _df().assign(x=1.0)
  for fn in (data.select_columns, data.resolve_domain):
    with pytest.raises(DataError) as info:
      fn(df, _spec(text))
    assert expected in str(info.value)


# ------------------------------------------------------------ resolve_domain


def test_resolve_domain_infers_and_records():
  domain = data.resolve_domain(_df(), _spec(MODEL))
  age, height, job, code, smoker, visits = domain.columns
  assert age.integer and age.missing and age.from_data == (
      "standardisation (mean/std)",)
  assert np.isclose(age.shift, np.mean([37, 51, 23, 37, 64]))
  assert not height.integer and height.missing
  assert height.from_data == ("integer flag", "standardisation (mean/std)",
                              "missing flag")
  assert job.categories == ("a", "b", "c") and job.missing
  assert code.categories == ("9", "10", "13")  # numeric order, not "10" < "9"
  assert smoker.categories == ("yes", "no") and smoker.from_data == (
      "missing flag",)
  assert visits.integer and visits.bounds == (0.0, 5.0) and visits.missing
  assert domain.inferred_from_data()[2] == "job: categories (sorted), missing flag"
  assert domain.features() == (
      Feature("age", "normal", 0, True), Feature("height", "normal", 0, True),
      Feature("job", "categorical", 3, True),
      Feature("code", "categorical", 3, False),
      Feature("smoker", "bernoulli", 2, False),
      Feature("visits", "poisson", 0, True))
  assert domain.names == ("age", "height", "job", "code", "smoker", "visits")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inferred_domain_and_codes_ignore_row_order(seed):
  spec = _spec(MODEL.replace("; bounds = 0, 5", ""))
  df = _df()
  shuffled = df.sample(frac=1.0, random_state=seed)
  d1, d2 = data.resolve_domain(df, spec), data.resolve_domain(shuffled, spec)
  assert [c.categories for c in d1.columns] == [c.categories for c in d2.columns]
  assert [c.integer for c in d1.columns] == [c.integer for c in d2.columns]
  np.testing.assert_allclose([c.shift for c in d1.columns],
                             [c.shift for c in d2.columns])
  e1 = data.encode(df, d1)
  e2 = data.encode(shuffled.sort_index(), d2)
  np.testing.assert_allclose(e1.values, e2.values, rtol=1e-6)


def test_standardisation_rules():
  df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 100.0], "c": [5.0] * 4})
  spec = _spec("x : Normal ; loc = 10 ; scale = 2\n"
               "x2 : Normal ; bounds = 0, 8\n"
               "x3 : Normal ; bounds = 0, 8 ; scale = 1\n"
               "c : Normal\n")
  domain = data.resolve_domain(df.assign(x2=df.x, x3=df.x), spec)
  x, x2, x3, c = domain.columns
  assert (x.shift, x.scale) == (10.0, 2.0)
  assert (x2.shift, x2.scale) == (4.0, 2.0)  # [0, 8] -> [-2, 2]
  assert (x3.shift, x3.scale) == (4.0, 1.0)
  assert (c.shift, c.scale) == (5.0, 1.0)  # std 0 -> 1
  assert x.from_data == x2.from_data == ("integer flag", "missing flag")
  enc = data.encode(df.assign(x2=df.x, x3=df.x), domain)
  np.testing.assert_allclose(enc.values[:, 1], [-1.5, -1.0, -0.5, 2.0])


def test_missing_declared_yes_without_missing_cells():
  domain = data.resolve_domain(pd.DataFrame({"x": [1.0, 2.0]}),
                               _spec("x : Normal ; missing"))
  assert domain.columns[0].missing and domain.features()[0].missing


def test_bernoulli_declared_order_sets_codes():
  df = pd.DataFrame({"s": ["M", "F", "M"]})
  domain = data.resolve_domain(df, _spec("s : Bernoulli ; categories = M, F"))
  np.testing.assert_array_equal(data.encode(df, domain).values[:, 0], [0, 1, 0])
  domain = data.resolve_domain(df, _spec("s : Bernoulli"))
  np.testing.assert_array_equal(data.encode(df, domain).values[:, 0], [1, 0, 1])


def test_declared_categories_match_by_value():
  df = pd.DataFrame({"n": [13.0, np.nan, 9.0], "s": [" a", "b ", "a"]})
  spec = _spec("n : Categorical ; categories = 9, 13.0, 20 ; missing\n"
               "s : Categorical ; categories = b, a\n")
  domain = data.resolve_domain(df, spec)
  enc = data.encode(df, domain)
  np.testing.assert_array_equal(enc.values, [[1, 1], [0, 0], [0, 1]])
  np.testing.assert_array_equal(enc.observed[:, 0], [True, False, True])


@pytest.mark.parametrize("frame,text,expected", [
    ({"x": [np.nan, np.nan]}, "x : Normal",
     "data.csv: column 'x' has no values (every cell is missing)"),
    ({"c": ["a", "b", "zz", "b"]}, "\nc : Categorical ; categories = a, b",
     "data.csv:4: column 'c' has the value 'zz', which is not among the "
     "categories declared at model.txt:2; add it to 'categories ='"),
    ({"c": [1, 2, 3]}, "c : Categorical ; categories = 1, 2",
     "data.csv:4: column 'c' has the value '3'"),
    ({"s": ["a", "b", "c"]}, "s : Bernoulli",
     "data.csv: column 's' has 3 distinct values ('a', 'b', 'c') but "
     "model.txt:1 models it as Bernoulli; use Categorical"),
    ({"s": ["a", "b", "c"]}, "s : Bernoulli ; categories = a, b",
     "has 3 distinct values"),
    ({"s": ["a", "a", None]}, "s : Bernoulli",
     "model.txt:1: Bernoulli column 's' has only the value 'a' in data.csv; "
     "declare both labels with 'categories = a, <other label>'"),
    ({"p": [1, 2, -3]}, "p : Poisson",
     "data.csv:4: column 'p' has a negative value -3"),
    ({"p": [1, 2.5, 3]}, "p : Poisson",
     "data.csv:3: column 'p' has a non-integer value 2.5"),
    ({"x": ["1", "2", "abc"]}, "x : Normal",
     "data.csv:4: column 'x' has the non-numeric value 'abc', but it is "
     "modelled as Normal"),
    ({"p": ["1", "two"]}, "p : Poisson",
     "data.csv:3: column 'p' has the non-numeric value 'two'"),
    ({"x": [1.0, np.inf]}, "x : Normal", "data.csv:3: column 'x' has an "
     "infinite value"),
    ({"x": [1.0, 2.0, np.nan]}, "\n\nx : Normal ; missing = no",
     "data.csv:4: column 'x' is missing but model.txt:3 declares 'missing = "
     "no'; declare 'missing' or drop incomplete rows (--drop_na)"),
])
def test_resolve_errors(frame, text, expected):
  with pytest.raises(DataError) as info:
    data.resolve_domain(pd.DataFrame(frame), _spec(text))
  assert expected in str(info.value)
  assert "\n" not in str(info.value)


def test_error_line_follows_the_row_index_after_drop_na():
  df = pd.DataFrame({"a": [1.0, np.nan, 2.0, 3.0], "c": ["x", "y", "x", "q"]})
  spec = _spec("a : Normal\nc : Categorical ; categories = x, y")
  with pytest.raises(DataError, match=r"^data\.csv:5: column 'c'"):
    data.resolve_domain(data.select_columns(df, spec, drop_na=True), spec)


# ------------------------------------------------------- encode and decode


def test_encode_layout():
  df = _df()
  domain = data.resolve_domain(df, _spec(MODEL))
  values, observed = data.encode(df, domain)
  assert values.dtype == np.float32 and values.shape == (6, 6)
  assert observed.dtype == bool
  np.testing.assert_array_equal(observed[:, 0], df.age.notna())
  assert np.all(values[~observed] == 0.0)
  np.testing.assert_array_equal(values[:, 2], [1, 0, 0, 2, 0, 1])
  np.testing.assert_array_equal(values[:, 3], [2, 0, 1, 2, 0, 1])
  np.testing.assert_array_equal(values[:, 5], [0, 3, 1, 5, 0, 2])  # clipped


def test_round_trip_recovers_the_data(tmp_path):
  df = _df()
  domain = data.resolve_domain(df, _spec(MODEL.replace("; bounds = 0, 5", "")))
  out = data.decode(*data.encode(df, domain), domain)
  assert str(out["age"].dtype) == "Int64" and str(out["visits"].dtype) == "Int64"
  assert out["code"].dtype == np.int64
  expected = df.astype({"age": "Int64", "visits": "Int64"})
  pd.testing.assert_frame_equal(out, expected, check_dtype=False, rtol=1e-6)
  path = tmp_path / "out.csv"
  data.write_csv_atomic(out, str(path))
  lines = path.read_text().splitlines()
  assert lines[0] == "age,height,job,code,smoker,visits"
  assert lines[1].startswith("37,") and lines[3].startswith(",1.75,a,10,no,1")
  again = data.read_csv(str(path))
  pd.testing.assert_frame_equal(again, df, check_dtype=False)


def test_decode_clips_rounds_and_handles_nonfinite():
  domain = data.Domain((
      data.ColumnDomain("x", "normal", bounds=(0.0, 10.0), shift=5.0,
                        scale=2.5, integer=True),
      data.ColumnDomain("p", "poisson", integer=True, missing=True),
      data.ColumnDomain("c", "categorical", categories=("a", "b")),
      data.ColumnDomain("f", "categorical", categories=("0.5", "1.5")),
  ))
  values = np.array([[9.0, -2.0, 1.0, 1.0], [0.3, np.nan, 0.0, 0.0],
                     [np.inf, 2.6, 1.0, 1.0]])
  observed = np.ones_like(values, bool)
  observed[0, 1] = False
  out = data.decode(values, observed, domain)
  assert out["x"].tolist()[:2] == [10, 6] and out["x"].isna().tolist() == [
      False, False, True]
  assert out["p"].isna().tolist() == [True, True, False]
  assert out["p"].iloc[2] == 3
  assert out["c"].tolist() == ["b", "a", "b"]
  assert out["f"].tolist() == [1.5, 0.5, 1.5]
  with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
    data.decode(values[:, :3], observed[:, :3], domain)


@pytest.mark.parametrize("code", [2.0, -1.0, 0.6, np.inf])
def test_decode_refuses_category_codes_that_are_not_whole_numbers_in_range(code):
  domain = data.Domain((data.ColumnDomain("x", "normal", shift=0.0, scale=1.0),
                        data.ColumnDomain("c", "categorical", categories=("a", "b"))))
  values = np.array([[0.0, 1.0], [0.0, code]])
  observed = np.ones_like(values, bool)
  if np.isfinite(code):
    with pytest.raises(ValueError, match=r"column 1 \('c'\) has category code .* in row 1; "
                       r"its codes must be whole numbers 0..1"):
      data.decode(values, observed, domain)
  else:   # a non-finite cell is missing, as documented
    assert data.decode(values, observed, domain)["c"].isna().tolist() == [False, True]
  observed[1, 1] = False     # an unobserved cell's placeholder is never checked
  assert data.decode(values, observed, domain)["c"].isna().tolist() == [False, True]


def test_encode_rejects_values_outside_a_saved_domain():
  domain = data.resolve_domain(pd.DataFrame({"c": ["a", "b"]}),
                               _spec("c : Categorical"))
  with pytest.raises(DataError, match="new.csv:3: column 'c' has the value 'z'"):
    data.encode(pd.DataFrame({"c": ["a", "z"]}), domain, source="new.csv")
  with pytest.raises(DataError, match="new.csv:2: column 'c' is missing"):
    data.encode(pd.DataFrame({"c": [None, "a"]}), domain, source="new.csv")
  with pytest.raises(DataError, match="missing column"):
    data.encode(pd.DataFrame({"d": ["a"]}), domain)


def test_out_of_bounds_counts_and_clips():
  df = pd.DataFrame({"x": [-5.0, 1.0, 50.0, np.nan], "y": [1.0, 2.0, 3.0, 4.0]})
  spec = _spec("x : Normal ; bounds = 0, 10 ; missing\ny : Normal")
  domain = data.resolve_domain(df, spec)
  assert data.out_of_bounds(df, domain) == {"x": 2}
  values, _ = data.encode(df, domain)
  np.testing.assert_allclose(values[:3, 0], [-2.0, -1.6, 2.0])


def test_domain_json_round_trip():
  domain = data.resolve_domain(_df(), _spec(MODEL))
  text = json.dumps(domain.to_dict())
  assert data.Domain.from_dict(json.loads(text)) == domain


@pytest.mark.parametrize("kwargs", [
    dict(name="x", family="gamma"),
    dict(name="x", family="categorical"),
    dict(name="x", family="normal", categories=("a",)),
    dict(name="x", family="bernoulli", categories=("a", "b", "c")),
    dict(name="x", family="normal", scale=0.0),
])
def test_column_domain_validation(kwargs):
  with pytest.raises(ValueError):
    data.ColumnDomain(**kwargs)


# ------------------------------------------------------------------- Adult


@pytest.mark.skipif(not os.path.exists(ADULT_CSV), reason="needs Adult data")
def test_adult_example_nothing_inferred():
  spec = parse_model_file(os.path.join(EXAMPLES, "adult_model.txt"))
  df = data.select_columns(data.read_csv(ADULT_CSV), spec)
  assert list(df.columns) == list(pd.read_csv(ADULT_CSV, nrows=1).columns)
  domain = data.resolve_domain(df, spec, source=ADULT_CSV)
  assert domain.inferred_from_data() == []
  assert data.out_of_bounds(df, domain) == {}
  values, observed = data.encode(df, domain)
  assert values.shape == (32561, 15) and observed[:, 1].mean() < 1.0
  out = data.decode(values, observed, domain)
  binned = [c.name for c in domain.columns if c.bins is not None]
  assert binned   # the example bins its numeric columns
  exact = [c for c in df.columns if c not in binned]
  pd.testing.assert_frame_equal(out[exact], df[exact], check_dtype=False)
  for c in domain.columns:
    if c.bins is not None:    # decoded values stay in the original value's bin
      edges = np.asarray(c.bins)
      bin_of = lambda x: np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
      np.testing.assert_array_equal(bin_of(out[c.name].to_numpy(float)),
                                    bin_of(df[c.name].to_numpy(float)))


# ------------------------------------------------------------ atomic writes


def _no_temp_files(directory):
  return [p for p in os.listdir(directory) if p.endswith(".tmp")] == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_leaves_nothing(tmp_path, error):
  path = tmp_path / "out.csv"
  with pytest.raises(error):
    with _atomic.atomic_write(str(path)) as f:
      f.write("partial")
      raise error()
  assert os.listdir(tmp_path) == []


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
  path = tmp_path / "out.csv"
  path.write_text("old")

  class Boom:
    def to_csv(self, f, index):
      f.write("half")
      raise ValueError("boom")

  with pytest.raises(ValueError):
    data.write_csv_atomic(Boom(), str(path))
  assert path.read_text() == "old" and _no_temp_files(tmp_path)


def test_atomic_write_success(tmp_path):
  path = tmp_path / "out.bin"
  path.write_text("old")
  with _atomic.atomic_write(path, "wb") as f:
    f.write(b"new")
  assert path.read_bytes() == b"new" and _no_temp_files(tmp_path)
  umask = os.umask(0)
  os.umask(umask)
  assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_check_output_path(tmp_path):
  data_csv = tmp_path / "data.csv"
  data_csv.write_text("a\n1\n")
  link = tmp_path / "link.csv"
  link.symlink_to(data_csv)
  data.check_output_path(str(tmp_path / "out.csv"), inputs=[str(data_csv),
                                                            None])
  for out in (data_csv, link, tmp_path / "sub" / ".." / "data.csv"):
    (tmp_path / "sub").mkdir(exist_ok=True)
    with pytest.raises(DataError, match="refusing to overwrite the input file"):
      data.check_output_path(str(out), inputs=[str(data_csv)])
  with pytest.raises(DataError, match="does not exist; create it first"):
    data.check_output_path(str(tmp_path / "nodir" / "out.csv"))
  with pytest.raises(DataError, match="is a directory"):
    data.check_output_path(str(tmp_path))


# ------------------------------------------------------------ binned columns
def test_binned_column_encodes_to_bins_and_decodes_within_them():
  import numpy as np
  import pandas as pd
  from jtwin.data import decode, encode, resolve_domain
  from jtwin.spec import parse_model_text
  spec = parse_model_text("g : Categorical ; bins = 0, 1, 10, 100 ; integer ; missing\n")
  df = pd.DataFrame({"g": [0, 0, 5, 9, 10, 99, 100, 150, None]})
  dom = resolve_domain(df, spec)
  assert dom.inferred_from_data() == []
  assert dom.columns[0].categories == ("[0, 1)", "[1, 10)", "[10, 100]") and dom.features()[0].num_categories == 3
  enc = encode(df, dom)
  np.testing.assert_array_equal(enc.values[:, 0], [0, 0, 1, 1, 2, 2, 2, 2, 0])   # 150 -> last bin
  np.testing.assert_array_equal(enc.observed[:, 0], [True] * 8 + [False])
  codes = np.repeat([0.0, 1.0, 2.0], 2000)[:, None]
  out = decode(codes, np.ones_like(codes, bool), dom, rng=np.random.default_rng(1))["g"].to_numpy()
  assert (out[:2000] == 0).all()
  assert set(out[2000:4000]) == set(range(1, 10))                                   # uniform within [1, 10)
  assert out[4000:].min() >= 10 and out[4000:].max() <= 100 and len(set(out[4000:])) > 80


def test_binned_column_rejects_text_and_infers_integer_flag():
  import pandas as pd
  import pytest
  from jtwin.data import resolve_domain
  from jtwin.errors import DataError
  from jtwin.spec import parse_model_text
  spec = parse_model_text("g : Categorical ; bins = 0, 1, 2\n")
  dom = resolve_domain(pd.DataFrame({"g": [0.5, 1.5]}), spec)
  assert dom.columns[0].integer is False and any("integer" in s for s in dom.inferred_from_data())
  with pytest.raises(DataError, match="g"):
    resolve_domain(pd.DataFrame({"g": ["a", "b"]}), spec)
