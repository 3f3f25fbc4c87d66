"""Findings of a bad-input audit of `jtwin fit`, `sample` and `check` (twelfth
session, fixed in the thirteenth): overflowing values, private facts printed
without --verbose, contradictory privacy options, stale files, undecidable
integer flags and option errors."""
import numpy as np
import pandas as pd
import pytest

from jtwin import dp_domain as dd
from jtwin import spec as jspec
from _cli_run import one_error as _one_error
from _cli_run import outputs as _outputs
from _cli_run import run as _run
from jtwin.cli import main
from jtwin.errors import DataError

FAST = ["-e", "2", "-q", "0.1", "--k", "2", "--seed", "0", "--visualize", "none", "--quiet"]

UNBOUNDED = """\
age : Normal ; bounds = 0, 100 ; integer ; missing = no
x : Normal
"""





@pytest.fixture
def huge_value(tmp_path):
  """2,000 rows of N(100, 10) with one cell 1e308 (beyond float32) in line 6."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"age": rng.integers(18, 90, 2000), "x": rng.normal(100, 10, 2000)})
  df.loc[4, "x"] = 1e308
  df.to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "model.txt").write_text(UNBOUNDED)
  return tmp_path, str(tmp_path / "data.csv"), str(tmp_path / "model.txt")


@pytest.mark.parametrize("flags", [[], ["--domain", "data"], ["--stream", "on"]])
def test_a_value_beyond_float32_is_one_line_on_every_path(huge_value, capsys, flags):
  tmp, data, model = huge_value
  code, _, err = _run(["fit", data, model, str(tmp / "out")] + FAST + flags, capsys)
  line = _one_error(err)
  assert code == 1 and "data.csv:6: column 'x' has the value 1e+308" in line
  assert "32-bit" in line and _outputs(tmp) == []


def test_check_refuses_the_value_beyond_float32_too(huge_value, capsys):
  tmp, data, model = huge_value
  code, _, err = _run(["check", data, model], capsys)
  assert code == 1 and "column 'x' has the value 1e+308" in _one_error(err)


def test_a_value_that_overflows_once_standardised_is_refused():
  from jtwin import data as jdata
  df = pd.DataFrame({"x": [1.0, 2.0, 1e36]})
  spec = jspec.parse_model_text("x : Normal ; loc = 0 ; scale = 0.001 ; integer = no ; "
                                "missing = no\n")
  domain = jdata.resolve_domain(df, spec, warn=False)
  with pytest.raises(DataError, match=r"line:4: column 'x' has the value 1e\+36, beyond the range "
                     r"of 32-bit floats once standardised, \(x - 0\) / 0.001"):
    jdata.encode(df, domain, source="line")
  ok = jdata.encode(df.iloc[:2], domain, source="line")           # in range: encoded as before
  np.testing.assert_allclose(ok.values[:, 0], [1000.0, 2000.0])


@pytest.mark.parametrize("stream", ["off", "on"])
def test_clipped_counts_only_with_verbose(declared_files, capsys, stream):
  tmp, data, model = declared_files
  df = pd.read_csv(data)
  df.loc[[3, 7], "age"] = [150, -4]                      # two values outside bounds 0, 100
  df.to_csv(data, index=False)
  argv = ["fit", data, model, str(tmp / "out"), "--stream", stream] + FAST[:-1]
  code, out, err = _run(argv, capsys)
  assert code == 0, err
  assert "outside the declared" not in out + err         # a fact about single rows: hidden
  code, out, err = _run(argv + ["--verbose"], capsys)
  assert code == 0, err
  line = next(l for l in out.splitlines() if "outside the declared range" in l)
  assert "'age': 2 value(s)" in line and "NOT private" in line


def test_check_labels_its_exact_counts_as_not_private(declared_files, capsys):
  tmp, data, model = declared_files
  df = pd.read_csv(data)
  df.loc[0, "age"] = 150
  df.to_csv(data, index=False)
  code, out, _ = _run(["check", data, model], capsys)
  assert code == 0
  assert "200 rows" in out and "exact, NOT private; do not release it" in out
  assert "'age': 1 value(s) outside the declared range" in out
  assert "nothing is taken from the private data" not in out        # the old, false line
  assert "fit and napsumq take nothing from the private data without noise" in out


def test_epsilon_beside_noise_multiplier_is_refused_before_reading(declared_files, capsys):
  tmp, data, model = declared_files
  code, _, err = _run(["fit", "absent.csv", model, str(tmp / "out"), "--epsilon", "0.3",
                       "--noise_multiplier", "0.3"] + FAST, capsys)
  line = _one_error(err)
  assert code == 1 and "--epsilon 0.3 and --noise_multiplier 0.3 both given" in line
  assert "--max_epsilon 0.3" in line and _outputs(tmp) == []


def test_noise_multiplier_alone_reports_its_epsilon(declared_files, capsys):
  tmp, data, model = declared_files
  code, out, err = _run(["fit", data, model, str(tmp / "out"), "--noise_multiplier", "3"]
                        + FAST[:-1], capsys)
  assert code == 0, err
  assert "epsilon = " in out and "target" not in out.split("epsilon = ")[1].split(",")[0]


def test_max_epsilon_below_epsilon_quotes_the_flags_as_given(declared_files, capsys):
  tmp, data, model = declared_files
  code, _, err = _run(["fit", data, model, str(tmp / "out"), "--epsilon", "2",
                       "--max_epsilon", "1"] + FAST, capsys)
  assert code == 1
  assert "--epsilon 2 exceeds --max_epsilon 1" in _one_error(err)
  assert _outputs(tmp) == []


def test_a_run_without_a_domain_release_removes_a_stale_domain_file(tmp_path, capsys):
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"age": rng.integers(18, 90, 300), "job": rng.choice(["a", "b"], 300)})
  df.to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "undeclared.txt").write_text("age : Normal ; bounds = 0, 100\n"
                                           "job : Categorical ; categories = a, b\n")
  (tmp_path / "declared.txt").write_text("age : Normal ; bounds = 0, 100 ; integer ; "
                                         "missing = no\njob : Categorical ; categories = a, b ; "
                                         "missing = no\n")
  data, out = str(tmp_path / "data.csv"), str(tmp_path / "out")
  code, _, err = _run(["fit", data, str(tmp_path / "undeclared.txt"), out] + FAST, capsys)
  assert code == 0, err
  assert (tmp_path / "out.domain.txt").exists()
  code, _, err = _run(["fit", data, str(tmp_path / "declared.txt"), out] + FAST, capsys)
  assert code == 0, err
  assert not (tmp_path / "out.domain.txt").exists()          # jtwin's own stale file: gone
  (tmp_path / "out.domain.txt").write_text("my notes\n")     # someone else's file: kept
  code, _, err = _run(["fit", data, str(tmp_path / "declared.txt"), out] + FAST, capsys)
  assert code == 0 and (tmp_path / "out.domain.txt").read_text() == "my notes\n"


def test_the_release_note_names_the_real_domain_file(declared_files, capsys):
  tmp, data, _ = declared_files
  (tmp / "m.txt").write_text("age : Normal ; bounds = 0, 100\n"
                             "job : Categorical ; categories = a, b, c\n")
  code, out, err = _run(["fit", data, str(tmp / "m.txt"), str(tmp / "out")] + FAST[:-1],
                        capsys)
  assert code == 0, err
  assert f"to be written to {tmp / 'out'}.domain.txt" in out and "OUTPUT_PREFIX" not in out


def _integer_release(values, epsilon, seed=0):
  spec = jspec.parse_model_text("x : Normal ; bounds = -5, 50 ; missing = no\n")
  return dd.release_domain(np.random.default_rng(seed), pd.DataFrame({"x": values}), spec,
                           epsilon=epsilon, delta=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_few_continuous_values_are_not_called_integer(seed):
  """500 N(0, 1) values at a budget where no cell clears the noise alone: the
  old rule (non-integer counts within the noise) called them integer."""
  x = np.random.default_rng(seed).normal(0, 1, 500)
  rel = _integer_release(x, 0.09, seed)
  (f,) = rel.spec.features
  assert f.integer is False and rel.undecided_integer == ("x",)


@pytest.mark.parametrize("n,undecided", [(500, True), (20_000, False)])
def test_integers_are_integer_once_their_counts_clear_the_noise(n, undecided):
  x = np.random.default_rng(0).integers(-5, 50, n).astype(float)
  rel = _integer_release(x, 0.09)
  (f,) = rel.spec.features
  assert f.integer is (not undecided) and (rel.undecided_integer == ("x",)) is undecided
  assert rel.to_dict()["undecided_integer"] == list(rel.undecided_integer)


def test_continuous_values_with_enough_rows_are_decided_non_integer():
  x = np.random.default_rng(0).normal(10, 3, 20_000)
  rel = _integer_release(x, 0.09)
  assert rel.spec.features[0].integer is False and rel.undecided_integer == ()


def test_the_cli_warns_of_an_undecided_integer_flag(tmp_path, capsys):
  rng = np.random.default_rng(0)
  pd.DataFrame({"x": rng.normal(0, 1, 500)}).to_csv(tmp_path / "d.csv", index=False)
  (tmp_path / "m.txt").write_text("x : Normal ; bounds = -5, 5 ; missing = no\n")
  code, _, err = _run(["fit", str(tmp_path / "d.csv"), str(tmp_path / "m.txt"),
                       str(tmp_path / "out"), "--epsilon", "1"] + FAST[2:], capsys)
  assert code == 0, err
  assert "treated as continuous: x (declare 'integer'" in err
  assert "integer = no" in (tmp_path / "out.domain.txt").read_text()


@pytest.mark.parametrize("argv,needle", [
    (["fit", "D", "M", "O", "--warm_start", "1"], "--warm_start must be in [0, 1), got 1"),
    (["fit", "D", "M", "O", "--average_decay", "-0.5"], "--average_decay must be in [0, 1)"),
    (["fit", "D", "M", "O", "--num_synthetic", "-1"], "--num_synthetic must be >= 0"),
    (["napsumq", "D", "M", "O", "--one_way_fraction", "1"], "--one_way_fraction must be in (0, 1)"),
    (["napsumq", "D", "M", "O", "--num_synthetic", "-3"], "--num_synthetic must be >= 0"),
    (["sample", "R.jtwin.npz", "-n", "-1", "-o", "o.csv"], "-n must be >= 0"),
    (["evaluate", "a.csv", "b.csv", "--bins", "0"], "--bins must be >= 1"),
    (["evaluate", "a.csv", "b.csv", "--max_model_rows", "-1"], "--max_model_rows must be >= 0"),
    (["fit", "D", "M"], "the following arguments are required: OUTPUT_PREFIX"),
])
def test_bad_option_values_are_one_usage_line_with_exit_code_2(capsys, argv, needle):
  code, out, err = _run(argv, capsys)
  assert code == 2 and out == ""
  (line,) = err.strip().splitlines()                       # no usage dump
  assert needle in line and line.endswith(f"(see 'jtwin {argv[0]} --help')")


@pytest.mark.parametrize("column,line,refused", [
    (["2000-01-%02d" % (i % 28 + 1) for i in range(300)], "x : Categorical", True),
    (["F"] * 300, "x : Bernoulli ; missing = no", False),
])
def test_check_and_fit_agree_on_the_dp_domain_step(tmp_path, capsys, column, line, refused):
  """check runs the DP domain step as fit does: a date column as Categorical
  (no label clears the noise) is refused by both; a one-valued Bernoulli column
  (its other label is '(other)') passes both."""
  rng = np.random.default_rng(0)
  pd.DataFrame({"age": rng.integers(18, 90, 300), "x": column}).to_csv(tmp_path / "d.csv",
                                                                       index=False)
  (tmp_path / "m.txt").write_text("age : Normal ; bounds = 0, 100 ; integer ; missing = no\n"
                                  + line + "\n")
  data, model = str(tmp_path / "d.csv"), str(tmp_path / "m.txt")
  check_code, _, check_err = _run(["check", data, model], capsys)
  fit_code, _, fit_err = _run(["fit", data, model, str(tmp_path / "out")] + FAST, capsys)
  assert (check_code, fit_code) == ((1, 1) if refused else (0, 0)), check_err + fit_err
  if refused:
    assert "no category is frequent enough" in _one_error(check_err)
    assert "no category is frequent enough" in _one_error(fit_err)
