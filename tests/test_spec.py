"""Tests for jtwin.spec: twinify's model.txt grammar and the domain options."""
import os
import sys

import pytest

from jtwin import spec as spec_lib
from jtwin.errors import ModelFileError
from jtwin.spec import FeatureSpec, ModelSpec, parse_model_file, parse_model_text

ADULT_MODEL = os.path.join(os.path.dirname(spec_lib.__file__), "examples",
                           "adult_model.txt")


def _twinify_parse(text):
  """twinify's `automodel.parse_model`, reduced to (name, family) pairs."""
  out = []
  for line in text.splitlines():
    line = line.split("#")[0].strip()
    if not line:
      continue
    parts = line.split(":")
    assert len(parts) == 2
    family = parts[1].strip().lower()
    assert family in spec_lib.FAMILIES
    out.append((parts[0].strip(), family))
  return out


TWINIFY_FILES = [
    "age : Normal\nsex : Bernoulli\n",
    ("# COVID-style model\n\n   Height (cm)  :  NORMAL   # measured\n"
     "Weight kg:normal\r\nSmoker : bErNoUlLi\n\t\n# trailing comment\n"
     "Number of visits : Poisson\nblood type: Categorical#x:y\n"),
    "a;b : Categorical\n (x) : poisson \n",
    "only: categorical",
]


@pytest.mark.parametrize("text", TWINIFY_FILES)
def test_twinify_files_parse_identically(text):
  spec = parse_model_text(text)
  assert [(f.name, f.family) for f in spec.features] == _twinify_parse(text)
  for f in spec.features:
    assert (f.categories, f.bounds, f.loc, f.scale, f.integer, f.missing) == (
        None,) * 6


def test_line_numbers_are_one_based_and_count_comments():
  spec = parse_model_text("# c\n\nx : Normal\n  # c\ny : Poisson\n")
  assert [f.line for f in spec.features] == [3, 5]


def test_extension_example():
  text = """
age            : Normal      ; bounds = 17, 90 ; integer
fnlwgt         : Normal      ; bounds = 10000, 1500000 ; integer
workclass      : Categorical ; categories = Federal-gov, Local-gov, Private ; missing
sex            : Bernoulli   ; categories = Female, Male
hours_per_week : Poisson     ; bounds = 1, 99
income         : Categorical ; categories = <=50K, >50K ; missing = no
z              : normal      ; LOC = -1.5 ; scale = 2e3 ; integer = No ; missing = YES
"""
  f = parse_model_text(text).features
  assert f[0] == FeatureSpec("age", "normal", bounds=(17.0, 90.0), integer=True)
  assert f[1].bounds == (10000.0, 1500000.0)
  assert f[2].categories == ("Federal-gov", "Local-gov", "Private")
  assert f[2].missing is True
  assert f[3].categories == ("Female", "Male") and f[3].missing is None
  assert f[4] == FeatureSpec("hours_per_week", "poisson", bounds=(1.0, 99.0))
  assert f[5].categories == ("<=50K", ">50K") and f[5].missing is False
  assert f[6] == FeatureSpec("z", "normal", loc=-1.5, scale=2000.0,
                             integer=False, missing=True)


def test_quoted_categories():
  f = parse_model_text(
      'c : Categorical ; categories = "a, b" , c,"d;e", "say ""hi""",  13\n'
  ).features[0]
  assert f.categories == ("a, b", "c", "d;e", 'say "hi"', "13")


def test_trailing_and_empty_option_segments_are_ignored():
  f = parse_model_text("x : Normal ; ; integer ;\n").features[0]
  assert f.integer is True


@pytest.mark.parametrize("text,expected", [
    ("x : Normal\nage Normal\n",
     "model.txt:2: expected 'column name : Distribution'"),
    ("a : Normal\nb : Normal\n\nage : Gaussian\n",
     "model.txt:4: unknown distribution 'Gaussian' for column 'age' (use "
     "Normal, Bernoulli, Categorical or Poisson)"),
    ("x : a : Normal\n", "model.txt:1: unknown distribution 'a : Normal'"),
    ("x : \n", "model.txt:1: unknown distribution ''"),
    ("# h\n\nage : Normal ; bound = 1, 2\n",
     "model.txt:3: unknown option 'bound' for 'age' (expected one of: bounds, "
     "loc, scale, integer, missing, determined_by)"),
    ("age : Normal ; categories = a, b\n",
     "model.txt:1: option 'categories' does not apply to Normal column 'age'"),
    ("s : Bernoulli ; bounds = 0, 1\n",
     "model.txt:1: option 'bounds' does not apply to Bernoulli column 's' "
     "(expected one of: categories, missing, determined_by)"),
    ("p : Poisson ; loc = 1\n", "model.txt:1: option 'loc' does not apply"),
    ("x : Normal ; integer ; integer = no\n",
     "model.txt:1: option 'integer' given twice for 'x'"),
    ("x : Normal ; bounds = a, 90\n",
     "model.txt:1: bounds for 'x' must be a finite number, got 'a'"),
    ("x : Normal ; bounds = 1, 2, 3\n",
     "model.txt:1: bounds for 'x' must be two numbers"),
    ("x : Normal ; bounds = 5, 5\n", "model.txt:1: bounds for 'x' need lo < hi"),
    ("x : Normal ; bounds = 0, inf\n", "must be a finite number, got 'inf'"),
    ("x : Normal ; scale = 0\n", "model.txt:1: scale for 'x' must be > 0"),
    ("x : Normal ; loc = nan\n", "model.txt:1: loc for 'x' must be a finite"),
    ("x : Normal ; loc\n", "model.txt:1: option 'loc' for 'x' needs a value"),
    ("x : Normal ; missing = maybe\n",
     "model.txt:1: option 'missing' for 'x' must be yes or no, not 'maybe'"),
    ("p : Poisson ; bounds = -1, 5\n",
     "model.txt:1: bounds for Poisson column 'p' must be non-negative integers"),
    ("p : Poisson ; integer = no\n",
     "model.txt:1: Poisson column 'p' is always integer"),
    ("s : Bernoulli ; categories = a, b, c\n",
     "model.txt:1: Bernoulli column 's' needs exactly 2 categories, got 3"),
    ("c : Categorical ; categories = a, , b\n",
     "model.txt:1: empty category label for 'c'"),
    ("c : Categorical ; categories = a, b, a\n",
     "model.txt:1: category 'a' listed twice for 'c'"),
    ('c : Categorical ; categories = "a, b\n',
     "model.txt:1: unterminated '\"' quote"),
    ("age : Normal\nsex : Bernoulli\nage : Poisson\n",
     "model.txt:3: column 'age' is already modelled on line 1"),
    ("  : Normal\n", "model.txt:1: empty column name"),
    ("# nothing here\n\n", "model.txt: the model file lists no columns"),
    ("", "model.txt: the model file lists no columns"),
    ("a : Normal\nb : Normal ; determined_by = c\n",
     "model.txt:2: 'determined_by = c' for 'b': no such column in this model file"),
    ("a : Normal ; determined_by = a\n", "model.txt:1: 'a' cannot be determined by itself"),
    ("a : Normal ; determined_by = b\nb : Normal ; determined_by = c\nc : Normal\n",
     "model.txt:1: 'a' is determined by 'b', which is itself determined by 'c'; name 'c'"),
    ("a : Normal\nb : Normal ; determined_by\n",
     "model.txt:2: option 'determined_by' for 'b' needs a value, e.g. "
     "'determined_by = education'"),
])
def test_errors_name_the_line(text, expected):
  with pytest.raises(ModelFileError) as info:
    parse_model_text(text, path="model.txt")
  message = str(info.value)
  assert expected in message
  assert "\n" not in message


@pytest.mark.parametrize("text", [
    "x : Normal\n",
    "x : Normal ; bounds = -2.5, 1e20 ; loc = 0.1 ; scale = 3 ; integer = no\n",
    "Height (cm) : Normal ; integer ; missing = no\n",
    "p : Poisson ; bounds = 0, 12 ; integer ; missing\n",
    ('c : Categorical ; categories = "a, b", "d;e", "q""uote", <=50K, 13 ; '
     "missing\n"),
    "s : Bernoulli ; categories = No, Yes ; missing = no\n",
    "Level of study : Categorical\nyears : Poisson ; missing ; determined_by = Level of study\n",
])
def test_to_text_round_trip(text):
  spec = parse_model_text(text)
  again = parse_model_text(spec.to_text())
  assert again == spec
  assert again.to_text() == spec.to_text()


def test_adult_example_round_trips():
  spec = parse_model_file(ADULT_MODEL)
  assert parse_model_text(spec.to_text()) == spec


def test_to_text_refuses_unwritable_labels():
  spec = ModelSpec((FeatureSpec("c", "categorical", categories=("a#b",)),))
  with pytest.raises(ValueError, match="cannot be written"):
    spec.to_text()


def test_equality_ignores_line_and_path():
  a = parse_model_text("x : Normal\n", path="a.txt")
  b = parse_model_text("\n\nx : normal\n", path="b.txt")
  assert a == b and a.features[0].line == 1 and b.features[0].line == 3
  assert hash(a) == hash(b)


def test_parse_model_file(tmp_path):
  path = tmp_path / "model.txt"
  path.write_bytes("\ufeffage : Normal\r\nname with spaces : Poisson\r\n"
                   .encode("utf-8"))
  spec = parse_model_file(str(path))
  assert spec.names == ("age", "name with spaces")
  assert spec.path == str(path)
  assert spec.where(spec.features[1]) == f"{path}:2"


def test_parse_model_file_errors(tmp_path):
  missing = tmp_path / "nope.txt"
  with pytest.raises(ModelFileError, match=f"{missing}: model file not found"):
    parse_model_file(str(missing))
  with pytest.raises(ModelFileError, match="is a directory"):
    parse_model_file(str(tmp_path))
  bad = tmp_path / "latin1.txt"
  bad.write_bytes("caf\xe9 : Normal\n".encode("latin-1"))
  with pytest.raises(ModelFileError, match="not UTF-8"):
    parse_model_file(str(bad))
  syntax = tmp_path / "m.txt"
  syntax.write_text("a : Normal\nb Normal\n")
  with pytest.raises(ModelFileError, match=f"^{syntax}:2: expected"):
    parse_model_file(str(syntax))


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="needs POSIX permissions and a non-root user")
def test_unreadable_model_file(tmp_path):
  path = tmp_path / "m.txt"
  path.write_text("a : Normal\n")
  path.chmod(0)
  with pytest.raises(ModelFileError, match="cannot read the model file"):
    parse_model_file(str(path))


def test_spec_imports_neither_pandas_nor_jax():
  import ast
  with open(spec_lib.__file__) as f:
    tree = ast.parse(f.read())
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      imported.add(node.module.split(".")[0])
  assert imported <= {"__future__", "csv", "dataclasses", "math", "typing",
                      "jtwin"}


# ------------------------------------------------------------ binned columns
def test_bins_option_parses_and_round_trips():
  spec = parse_model_text("gain : Categorical ; bins = 0, 1, 5000, 99999 ; integer ; missing = no\n")
  f = spec.features[0]
  assert f.bins == (0.0, 1.0, 5000.0, 99999.0) and f.integer is True and f.categories is None
  assert parse_model_text(spec.to_text()) == spec


@pytest.mark.parametrize("line,needle", [
    ("x : Categorical ; bins = 0, 1\n", "at least 3"),
    ("x : Categorical ; bins = 0, 2, 1\n", "increase"),
    ("x : Categorical ; bins = 0, a, 1\n", "finite number"),
    ("x : Categorical ; bins = 0, 1, 2 ; categories = a, b\n", "not both"),
    ("x : Categorical ; integer\n", "binned"),
    ("x : Normal ; bins = 0, 1, 2\n", "does not apply"),
])
def test_bins_errors_name_the_line(line, needle):
  with pytest.raises(ModelFileError, match=needle) as e:
    parse_model_text("# header\n" + line, path="m.txt")
  assert "m.txt:2" in str(e.value)
