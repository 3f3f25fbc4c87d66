"""twinify NAPSU-MQ query files."""
import pandas as pd
import pytest

from jtwin.errors import ModelFileError
from jtwin.marginals import queries as mq


def test_parse_strips_whitespace_and_skips_comments(tmp_path):
  f = tmp_path / "q.txt"
  f.write_text("# cliques\nAge, Height (cm)\n\n  sex ,Age , sex\n")
  assert mq.is_query_file(str(f))
  assert mq.parse_query_file(str(f), columns={"Age", "Height (cm)", "sex"}) == \
      [["Age", "Height (cm)"], ["sex", "Age"]]


def test_model_file_is_not_a_query_file(tmp_path):
  f = tmp_path / "model.txt"
  f.write_text("age : Normal\n# a, b\n")
  assert not mq.is_query_file(str(f))


@pytest.mark.parametrize("text,message", [
    ("", "no queries or columns"),
    ("# only a comment\n", "no queries or columns"),
    ("a,,b\n", "empty column name"),
    ("a, zz\n", ":1: column 'zz' is not in the data"),
])
def test_bad_query_files(tmp_path, text, message):
  f = tmp_path / "q.txt"
  f.write_text(text)
  with pytest.raises(ModelFileError, match=message):
    if mq.is_query_file(str(f)):
      mq.parse_query_file(str(f), columns={"a", "b"})


def test_missing_file_and_directory(tmp_path):
  with pytest.raises(ModelFileError, match="not found"):
    mq.is_query_file(str(tmp_path / "nope.txt"))
  with pytest.raises(ModelFileError, match="directory"):
    mq.is_query_file(str(tmp_path))


def test_spec_from_data_models_every_column():
  df = pd.DataFrame({"x": range(100), "g": ["a", "b"] * 50, "n": [1, 2] * 50})
  spec = mq.spec_from_data(df)
  assert [(f.name, f.family) for f in spec.features] == \
      [("x", "normal"), ("g", "categorical"), ("n", "categorical")]
