"""Bad input found by a bad-input audit of `jtwin napsumq` and `jtwin evaluate`
(twelfth session): each ends in one line, a non-zero exit code and no output
files, or, where the run may go on, a warning that names what is wrong."""
import os

import numpy as np
import pandas as pd
import pytest

from _cli_run import one_error as _one_error
from _cli_run import outputs as _outputs
from _cli_run import run as _run

FAST = ["--k", "2", "--steps", "5", "--ensemble", "1", "--seed", "0", "--visualize", "none",
        "--quiet"]


@pytest.fixture
def files(declared_files):
  return declared_files





@pytest.mark.parametrize("flags,needle", [
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--epsilon", "inf", "--allow_large_epsilon"], "--epsilon must be a finite number"),
])
@pytest.mark.parametrize("command", ["fit", "napsumq"])
def test_option_values_are_refused_by_the_parser(files, capsys, command, flags, needle):
  tmp, data, model = files
  code, _, err = _run([command, data, model, str(tmp / "out")] + flags, capsys)
  assert code == 2 and needle in _one_error(err)
  assert _outputs(tmp) == []


def test_an_epsilon_no_noise_reaches_is_one_line(files, capsys):
  tmp, data, model = files
  code, _, err = _run(["napsumq", data, model, str(tmp / "out"), "--epsilon", "1e-12"] + FAST,
                      capsys)
  assert code == 1 and "too small" in _one_error(err)
  assert _outputs(tmp) == []


def test_a_prefix_that_names_a_directory_is_refused(files, capsys):
  tmp, data, model = files
  (tmp / "outdir").mkdir()
  code, _, err = _run(["napsumq", data, model, str(tmp / "outdir") + os.sep] + FAST, capsys)
  assert code == 1 and "names a directory" in _one_error(err)
  assert os.listdir(tmp / "outdir") == []


@pytest.mark.parametrize("command", ["fit", "napsumq"])
def test_a_file_where_the_plots_folder_goes_is_found_before_the_fit(files, capsys, command):
  tmp, data, model = files
  (tmp / "out.real_data_plots").write_text("mine")
  flags = FAST if command == "napsumq" else ["-e", "1", "--k", "2", "--seed", "0"]
  flags = [f for f in flags if f != "none" and f != "--visualize"]      # plots stored
  code, _, err = _run([command, data, model, str(tmp / "out")] + flags, capsys)
  assert code == 1 and "real_data_plots: is a file" in _one_error(err)
  assert _outputs(tmp) == ["out.real_data_plots"]
  assert (tmp / "out.real_data_plots").read_text() == "mine"


def test_a_file_in_the_output_path_is_named(files, capsys):
  tmp, data, model = files
  code, _, err = _run(["napsumq", data, model, os.path.join(data, "out")] + FAST, capsys)
  assert code == 1 and "is a file, not a directory" in _one_error(err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_directory_the_os_will_not_write_is_found_before_the_fit(files, capsys, monkeypatch):
  import jtwin.napsumq
  monkeypatch.setattr(jtwin.napsumq, "fit_marginals", lambda *a, **k: pytest.fail("fitted"))
  tmp, data, model = files
  code, _, err = _run(["napsumq", data, model, "/proc/out"] + FAST, capsys)
  line = _one_error(err)     # root passes os.access and meets the OS's refusal instead
  assert code == 1 and "output directory '/proc'" in line
  assert "cannot write" in line or "is not writable" in line


def test_a_failed_write_is_one_line(files, capsys, monkeypatch):
  def full(*a, **k):
    raise OSError(28, "No space left on device", "out.csv")
  tmp, data, model = files
  monkeypatch.setattr(pd.DataFrame, "to_csv", full)
  code, _, err = _run(["napsumq", data, model, str(tmp / "out")] + FAST, capsys)
  assert code == 1 and "No space left on device" in _one_error(err)
  assert not any(p.endswith(".csv") for p in _outputs(tmp))


def test_too_few_rows_for_a_range_names_the_column_and_the_fix(tmp_path, capsys):
  rng = np.random.default_rng(0)
  data = tmp_path / "small.csv"
  pd.DataFrame({"size": np.round(rng.normal(10, 2, 60), 3),
                "flag": rng.choice(["yes", "no"], 60)}).to_csv(data, index=False)
  model = tmp_path / "m.txt"
  model.write_text("size : Normal\nflag : Bernoulli\n")
  code, _, err = _run(["napsumq", str(data), str(model), str(tmp_path / "out")] + FAST, capsys)
  line = _one_error(err)
  assert code == 1 and "column 'size'" in line and f"{model}:1" in line
  assert "bounds = lo, hi" in line
  # a query file has no line to point at: the message says to write a model file
  queries = tmp_path / "q.txt"
  queries.write_text("size, flag\n")
  code, _, err = _run(["napsumq", str(data), str(queries), str(tmp_path / "out")] + FAST, capsys)
  line = _one_error(err)
  assert code == 1 and "a model file line for 'size'" in line
  assert _outputs(tmp_path) == []


def test_query_file_with_a_byte_order_mark_and_repeated_cliques(tmp_path):
  from jtwin.marginals import queries as mq
  q = tmp_path / "q.txt"
  q.write_bytes("\ufeffa, b\nb,a\nc\n".encode("utf-8"))
  assert mq.parse_query_file(str(q), columns={"a", "b", "c"}) == [["a", "b"], ["b", "a"], ["c"]]


def test_repeated_and_one_column_cliques_are_measured_once(tmp_path):
  import jtwin
  rng = np.random.default_rng(0)
  frame = pd.DataFrame({"a": rng.choice(["x", "y"], 2000), "b": rng.choice(["u", "v"], 2000),
                        "c": rng.choice(["p", "q"], 2000)})
  from jtwin.spec import parse_model_text
  spec = parse_model_text("a : Categorical\nb : Categorical\nc : Categorical\n")
  once = jtwin.fit_marginals(0, frame, spec, selection="none", queries=[["a", "b"]],
                             num_components=2, final_steps=5, posterior_steps=2, ensemble=1)
  many = jtwin.fit_marginals(0, frame, spec, selection="none",
                             queries=[["a", "b"], ["b", "a"], ["a", "b"], ["c"], ["a", "a"]],
                             num_components=2, final_steps=5, posterior_steps=2, ensemble=1)
  assert len(many.measurements) == len(once.measurements)
  assert many.privacy.epsilon == pytest.approx(once.privacy.epsilon)


def test_evaluate_warns_of_columns_it_cannot_score(tmp_path, capsys):
  rng = np.random.default_rng(0)
  real = pd.DataFrame({"age": rng.integers(18, 80, 400), "color": rng.choice(["r", "g"], 400),
                       "flag": rng.choice(["yes", "no"], 400)})
  paths = {}
  for name, frame in {"real": real, "missing": real.drop(columns="age"),
                      "numbers": real.assign(color=rng.integers(1, 3, 400)),
                      "labels": real.assign(flag=rng.choice([True, False], 400)),
                      "ok": real.sample(frac=1.0, random_state=1)}.items():
    paths[name] = str(tmp_path / f"{name}.csv")
    frame.to_csv(paths[name], index=False)
  expected = {"missing": "lacks column(s) ['age']", "numbers": "column 'color' holds labels",
              "labels": "column 'flag': no label", "ok": None}
  for name, needle in expected.items():
    code, _, err = _run(["evaluate", paths["real"], paths[name]], capsys)
    assert code == 0 and "Traceback" not in err
    warned = [l for l in err.splitlines() if "warning" in l]
    assert (warned == []) if needle is None else (len(warned) == 1 and needle in warned[0])


def test_query_file_warning_gives_advice_that_applies(files, capsys):
  tmp, data, model = files
  queries = tmp / "q.txt"
  queries.write_text("age, job\n")
  code, _, err = _run(["napsumq", data, str(queries), str(tmp / "out"), "--domain", "data"]
                      + FAST, capsys)
  assert code == 0, err
  family = [l for l in err.splitlines() if "write a model file to choose" in l]
  assert len(family) == 1 and "--domain dp" not in family[0]
