"""The `jtwin` command line, through its real entry points."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from jtwin.cli import main

MODEL = """\
# a twinify-style model with public domains
age : Normal ; bounds = 0, 100 ; integer
job : Categorical ; categories = a, b, c ; missing
smoker : Bernoulli ; categories = no, yes
visits : Poisson
"""


@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(0)
  n = 300
  df = pd.DataFrame({
      "age": rng.integers(18, 90, n),
      "job": rng.choice(["a", "b", "c", None], n),
      "smoker": rng.choice(["no", "yes"], n),
      "visits": rng.poisson(2.0, n),
      "unused": rng.normal(size=n),
  })
  data = tmp_path / "data.csv"
  df.to_csv(data, index=False)
  model = tmp_path / "model.txt"
  model.write_text(MODEL)
  return tmp_path, str(data), str(model)


def _run(argv, capsys):
  code = main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def _outputs(tmp_path, prefix="out"):
  return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(prefix))


FAST = ["-e", "2", "-q", "0.1", "--k", "3", "--seed", "0", "--visualize", "none"]


def test_fit_writes_decoded_twin_and_result(files, capsys):
  tmp, data, model = files
  code, out, err = _run(["fit", data, model, str(tmp / "out")] + FAST, capsys)
  assert code == 0, err
  synth = pd.read_csv(tmp / "out.csv", keep_default_na=False, na_values=[""])
  assert list(synth.columns) == ["age", "job", "smoker", "visits"]   # model order, unused dropped
  from jtwin.result_io import load_result
  release = load_result(str(tmp / "out.jtwin.npz")).meta["release"]
  # default rows: the DP row count (two-sided geometric, scale 1/0.01), never the exact N
  assert len(synth) == release["rows_estimate"] and abs(len(synth) - 300) < 2000
  assert release["rows_epsilon"] == pytest.approx(0.01)
  assert f"about {len(synth)} rows (DP estimate, noise sd 141)" in out and "300 rows" not in out
  assert set(synth["job"].dropna()) <= {"a", "b", "c"}
  assert set(synth["smoker"]) <= {"no", "yes"}
  assert synth["age"].between(0, 100).all()
  assert pd.api.types.is_integer_dtype(synth["age"]) and pd.api.types.is_integer_dtype(synth["visits"])
  assert "epsilon = " in out and "certified upper bound" in out
  # the undeclared parts are released under DP, not read off the data
  assert "taken from the private data" not in err and "DP domain" in out
  from jtwin.result_io import load_result
  loaded = load_result(str(tmp / "out.jtwin.npz"))
  assert loaded.meta["privacy"]["epsilon"] <= 1.0
  assert loaded.meta["privacy"]["steps"] == 20
  assert "seed" not in json.dumps(loaded.meta)
  assert loaded.meta["inferred_from_data"] == []
  assert any(item.startswith("visits") for item in loaded.meta["release"]["domain"]["released"])
  from jtwin.dp_domain import row_count_sd   # N-hat taken no lower than 3 noise sds
  assert loaded.meta["privacy"]["delta"] == pytest.approx(
      0.1 / max(release["rows_estimate"], 3 * row_count_sd(0.01)))
  assert (tmp / "out.domain.txt").exists()


def test_sample_from_result_without_data(files, capsys):
  tmp, data, model = files
  assert _run(["fit", data, model, str(tmp / "out")] + FAST, capsys)[0] == 0
  os.remove(data)
  code, out, err = _run(["sample", str(tmp / "out.jtwin.npz"), "-n", "1234", "-o",
                         str(tmp / "more.csv"), "--seed", "1"], capsys)
  assert code == 0, err
  more = pd.read_csv(tmp / "more.csv")
  assert len(more) == 1234 and list(more.columns) == ["age", "job", "smoker", "visits"]
  # same seed, same rows
  _run(["sample", str(tmp / "out.jtwin.npz"), "-n", "50", "-o", str(tmp / "a.csv"), "--seed", "7"], capsys)
  _run(["sample", str(tmp / "out.jtwin.npz"), "-n", "50", "-o", str(tmp / "b.csv"), "--seed", "7"], capsys)
  assert (tmp / "a.csv").read_text() == (tmp / "b.csv").read_text()
  # balanced sampling needs categorical columns only: a clean error, nothing written
  code, _, err = _run(["sample", str(tmp / "out.jtwin.npz"), "-n", "50", "-o",
                       str(tmp / "c.csv"), "--sampling", "balanced"], capsys)
  assert code == 1 and "use --sampling iid" in err and "Traceback" not in err
  assert not (tmp / "c.csv").exists()


def test_twinify_command_lines_carry_over(files, capsys):
  tmp, data, model = files
  code, _, err = _run([data, model, str(tmp / "v1"), "--drop_na", "0"] + FAST, capsys)
  assert code == 0, err
  code, _, err = _run(["vi", data, model, str(tmp / "v2"), "--drop_na", "--n", "40"] + FAST, capsys)
  assert code == 0, err
  assert len(pd.read_csv(tmp / "v2.csv")) == 40
  args = tmp / "args.txt"
  args.write_text("\n".join([data, model, str(tmp / "v3")] + FAST))
  assert _run(["%" + str(args)], capsys)[0] == 0
  assert (tmp / "v3.csv").exists()


@pytest.mark.slow
def test_check_reports_inferred_items(files, capsys):
  tmp, data, model = files
  code, out, err = _run(["check", data, model, "--k", "3"], capsys)
  assert code == 0, err
  assert "Everything okay!" in out and "visits" in out
  assert _outputs(tmp) == []


def test_help_shows_defaults(capsys):
  for cmd in (["--help"], ["fit", "--help"], ["sample", "--help"], ["check", "--help"],
              ["evaluate", "--help"]):
    code, out, _ = _run(cmd, capsys)
    assert code == 0 and "usage" in out
  code, out, _ = _run(["fit", "--help"], capsys)
  for flag in ("--epsilon", "--delta", "--num_synthetic", "--k", "--sampling_ratio",
               "--num_epochs", "--clipping_threshold", "--seed", "--drop_na", "--visualize",
               "--noise_multiplier", "--max_epsilon"):
    assert flag in out
  assert "default: 50" in out and "default: 0.01" in out


def _bad(tmp, name, text):
  p = tmp / name
  p.write_text(text)
  return str(p)


def _bad_bytes(tmp, name, data: bytes):
  p = tmp / name
  p.write_bytes(data)
  return str(p)


BAD_CASES = {
    "missing data file": lambda t, d, m: ([str(t / "nope.csv"), m], "nope.csv"),
    "data is a directory": lambda t, d, m: ([str(t), m], str(t)),
    "empty csv": lambda t, d, m: ([_bad(t, "e.csv", ""), m], "e.csv"),
    "header only": lambda t, d, m: ([_bad(t, "h.csv", "age,job,smoker,visits\n"), m], "h.csv"),
    "model syntax": lambda t, d, m: ([d, _bad(t, "m1.txt", "age : Normal\njob Categorical\n")], ":2"),
    "unknown distribution": lambda t, d, m: ([d, _bad(t, "m2.txt", "age : Gaussian\n")], "Gaussian"),
    "column not in data": lambda t, d, m: ([d, _bad(t, "m3.txt", "Age : Normal\n")], "did you mean 'age'"),
    "poisson negative": lambda t, d, m: ([_bad(t, "p.csv", "x\n1\n-2\n3\n" * 50), _bad(t, "m4.txt", "x : Poisson\n")], "x"),
    "poisson non-integer": lambda t, d, m: ([_bad(t, "p2.csv", "x\n1\n2.5\n3\n" * 50), _bad(t, "m5.txt", "x : Poisson\n")], "x"),
    "bernoulli three values": lambda t, d, m: ([_bad(t, "b.csv", "x\na\nb\nc\n" * 50), _bad(t, "m6.txt", "x : Bernoulli\n"), "--domain", "data"], "x"),
    "all missing column": lambda t, d, m: ([_bad(t, "n.csv", "x,y\n,1\n,2\n" * 50), _bad(t, "m7.txt", "x : Normal\ny : Normal\n")], "x"),
    "too small for q": lambda t, d, m: ([_bad(t, "s.csv", "x\n1\n2\n3\n"), _bad(t, "m8.txt", "x : Normal ; bounds = 0, 5\n")], "sampling_ratio"),
    # too few rows for any range of x to clear the DP noise: no range read off noise
    "range hidden by the noise": lambda t, d, m: ([_bad(t, "r.csv", "x\n" + "".join(f"{1.5 + 7.25 * i}\n" for i in range(40))), _bad(t, "m9.txt", "x : Normal\n")], "bounds = lo, hi"),
    "duplicate column name": lambda t, d, m: ([_bad(t, "dup.csv", "x,y,x\n1,2,3\n" * 50), _bad(t, "m10.txt", "x : Normal\n")], "'x' appears twice"),
    "semicolon separated": lambda t, d, m: ([_bad(t, "semi.csv", "x;y\n1;2\n" * 50), _bad(t, "m11.txt", "x : Normal\n")], "semicolons"),
    "not utf-8, named line": lambda t, d, m: ([_bad_bytes(t, "l1.csv", b"x\n" + b"a\n" * 30 + b"caf\xe9\n" + b"b\n" * 5000), _bad(t, "m12.txt", "x : Categorical\n")], "line 32 (byte"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_one_line_error_no_output(files, capsys, case):
  tmp, data, model = files
  argv, needle = BAD_CASES[case](tmp, data, model)
  before = _outputs(tmp, "twin")
  code, out, err = _run(["fit"] + argv + [str(tmp / "twin")] + FAST, capsys)
  assert code != 0
  assert "Traceback" not in err
  lines = [l for l in err.strip().splitlines() if l.startswith("jtwin: error")]
  assert len(lines) == 1, err
  assert needle in lines[0]
  assert _outputs(tmp, "twin") == before == []


@pytest.mark.parametrize("flags,needle", [
    (["--epsilon", "0"], "--epsilon"), (["--epsilon", "-1"], "--epsilon"),
    (["--delta", "0"], "--delta"), (["--delta", "1"], "--delta"),
    (["-q", "0"], "--sampling_ratio"), (["-q", "1.5"], "--sampling_ratio"),
    (["-e", "0"], "--num_epochs"), (["--k", "0"], "--k"), (["--k", "-3"], "--k"),
])
def test_bad_options(files, capsys, flags, needle):
  tmp, data, model = files
  code, out, err = _run(["fit", data, model, str(tmp / "twin")] + flags, capsys)
  assert code == 2 and needle in err and "Traceback" not in err
  assert _outputs(tmp, "twin") == []


def test_output_directory_missing_and_input_protected(files, capsys):
  tmp, data, model = files
  code, _, err = _run(["fit", data, model, str(tmp / "no" / "such" / "dir" / "x")] + FAST, capsys)
  assert code != 0 and "directory" in err and "Traceback" not in err
  # OUTPUT_PREFIX.csv would be the data file itself
  original = open(data).read()
  code, _, err = _run(["fit", data, model, data[:-4]] + FAST, capsys)
  assert code != 0 and "overwrite" in err
  assert open(data).read() == original


def test_large_delta_refused(files, capsys):
  tmp, data, model = files
  code, _, err = _run(["fit", data, model, str(tmp / "twin"), "--delta", "0.5"] + FAST, capsys)
  assert code == 4 and "--allow_large_delta" in err
  assert _outputs(tmp, "twin") == []


def test_custom_model_errors_name_the_file(files, capsys):
  tmp, data, _ = files
  bad = _bad(tmp, "mymodel.py", "x = 1\n")
  code, _, err = _run(["fit", data, bad, str(tmp / "twin")] + FAST, capsys)
  assert code == 1 and "mymodel.py" in err and "make_model" in err


@pytest.mark.slow
def test_python_dash_m_and_console_script(files):
  tmp, data, model = files
  r = subprocess.run([sys.executable, "-m", "jtwin", "fit", data, str(tmp / "missing_model.txt"),
                      str(tmp / "twin")], capture_output=True, text=True)
  assert r.returncode == 3 and "missing_model.txt" in r.stderr and "Traceback" not in r.stderr
  r = subprocess.run([sys.executable, "-m", "jtwin", "--version"], capture_output=True, text=True)
  assert r.returncode == 0 and "jtwin" in r.stdout


def test_printed_epsilon_is_rounded_up_never_down():
  from jtwin._commands import format_up
  rng = np.random.default_rng(0)
  for x in np.concatenate([rng.uniform(0.01, 20, 2000), [0.50461, 0.99999, 1.0, 12.34561]]):
    assert float(format_up(float(x))) >= x
    assert float(format_up(float(x))) <= x * (1 + 2e-3)
  assert format_up(0.50461) == "0.5047" and format_up(0.998) == "0.9980"
