"""Edges of the command line found by trying jtwin as a new user (issue 13):
epsilon guidance, twinify compatibility, polish."""
import numpy as np
import pandas as pd
import pytest

from jtwin.cli import main

FAST = ["-e", "2", "-q", "0.1", "--k", "2", "--seed", "0", "--visualize", "none"]


@pytest.fixture
def files(declared_files):
  return declared_files


def _run(argv, capsys):
  code = main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def _outputs(tmp):
  return sorted(p.name for p in tmp.iterdir() if p.name.startswith("out"))


def _interrupt(*args, **kwargs):
  raise KeyboardInterrupt


# ------------------------------------------------------------------ epsilon


def test_large_epsilon_warns_what_it_means(files, capsys, monkeypatch):
  import jtwin.infer
  monkeypatch.setattr(jtwin.infer, "fit", _interrupt)      # the warning comes before training
  tmp, data, model = files
  code, out, err = _run(["fit", data, model, str(tmp / "out"), "--epsilon", "50"] + FAST, capsys)
  assert code == 130, err
  assert "--epsilon = 50, above 10" in err and "e^epsilon" in err


@pytest.mark.parametrize("command", ["fit", "napsumq"])
def test_extreme_epsilon_is_refused_without_the_flag(files, capsys, command):
  tmp, data, model = files
  code, _, err = _run([command, data, model, str(tmp / "out"), "--epsilon", "1e6"], capsys)
  assert code == 4
  assert err.count("\n") == 1 and "--allow_large_epsilon" in err and "protects nothing" in err
  assert _outputs(tmp) == []


@pytest.mark.parametrize("command,module,name", [("fit", "jtwin.infer", "fit"),
                                                 ("napsumq", "jtwin.napsumq", "fit_marginals")])
def test_extreme_epsilon_runs_with_the_flag(files, capsys, monkeypatch, command, module, name):
  import importlib
  monkeypatch.setattr(importlib.import_module(module), name, _interrupt)   # stop at training
  tmp, data, model = files
  code, _, err = _run([command, data, model, str(tmp / "out"), "--epsilon", "1e6",
                       "--allow_large_epsilon", "--seed", "0"], capsys)
  assert code == 130, err           # it got as far as training
  assert "above 10" in err


@pytest.mark.slow
def test_noise_multiplier_spending_an_extreme_epsilon_is_refused(files, capsys):
  tmp, data, model = files
  code, _, err = _run(["fit", data, model, str(tmp / "out"), "--noise_multiplier", "0.05"] + FAST,
                      capsys)
  assert code == 4 and "the epsilon spent with --noise_multiplier 0.05" in err
  assert _outputs(tmp) == []


# ------------------------------------------------------------------ twinify compatibility

TWINIFY_NUMPYRO_MODEL = """\
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dists


def model(x=None, num_obs_total=None):
  mu = numpyro.sample("mu", dists.Normal(0., 10.))
  with numpyro.plate("batch", num_obs_total, x.shape[0] if x is not None else 1):
    numpyro.sample("x", dists.Normal(mu, 1.), obs=x)
"""


def test_numpyro_model_file_gets_a_clear_message(files, capsys):
  tmp, data, _ = files
  path = tmp / "numpyro_model.py"
  path.write_text(TWINIFY_NUMPYRO_MODEL)
  code, _, err = _run(["fit", data, str(path), str(tmp / "out")] + FAST, capsys)
  assert code == 1
  assert "NumPyro model" in err and "docs/custom_models.md" in err and err.count("\n") == 1
  assert "defines neither" not in err


def test_group_clip_off_is_twinify_global_clipping(files, capsys, monkeypatch):
  import jtwin.models
  seen = []
  real = jtwin.models.make_mixture_model

  def spy(*args, **kwargs):
    seen.append(kwargs.get("group_clip", True))
    return real(*args, **kwargs)
  monkeypatch.setattr(jtwin.models, "make_mixture_model", spy)
  trained = []

  def fit(key, model, data, **kwargs):
    trained.append(model)
    raise KeyboardInterrupt
  import jtwin.infer
  monkeypatch.setattr(jtwin.infer, "fit", fit)
  tmp, data, model = files
  code, _, err = _run(["fit", data, model, str(tmp / "out"), "--group_clip", "off"] + FAST, capsys)
  assert code == 130, err
  assert seen[-1] is False and trained        # the model trained is the globally clipped one


# ------------------------------------------------------------------ polish


@pytest.mark.slow
def test_prefix_popup_sample_epsilon_and_model_flag(files, capsys, monkeypatch):
  import re
  import jtwin.plots
  monkeypatch.setattr(jtwin.plots, "_can_pop_up", lambda: False)     # no display
  tmp, data, model = files
  argv = ["fit", data, model, str(tmp / "out.csv")] + FAST[:-2] + ["--visualize", "popup"]
  code, out, err = _run(argv, capsys)
  assert code == 0, err
  # `out.csv` is the prefix `out`, not `out.csv.csv`
  outputs = _outputs(tmp)
  assert "out.csv" in outputs and "out.jtwin.npz" in outputs
  assert not any(name.startswith("out.csv.") for name in outputs)
  # a popup that cannot be shown is not a silent no-op
  assert "--visualize popup: no window was shown" in err
  assert out.count("certified upper bound") == 1
  # `jtwin sample`: epsilon as in fit (4 significant digits, rounded up), and
  # --model on a mixture result is not silently ignored
  code, out, err = _run(["sample", str(tmp / "out.jtwin.npz"), "-n", "5", "-o",
                         str(tmp / "more.csv"), "--model", model], capsys)
  assert code == 0, err
  assert "--model" in err and "ignored" in err
  from jtwin.result_io import load_result
  stored = load_result(str(tmp / "out.jtwin.npz")).meta["privacy"]["epsilon"]
  printed = re.search(r"epsilon = ([0-9.e+-]+),", out).group(1)
  assert len(printed.replace(".", "").lstrip("0")) <= 4 and float(printed) >= stored


def test_eta_is_measured_after_the_first_chunk(monkeypatch):
  import io
  import types
  from jtwin import _progress
  clock = iter([0.0, 100.0, 101.0])        # start; first chunk (with compilation); second
  monkeypatch.setattr(_progress, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  stream = io.StringIO()
  bar = _progress.ProgressBar("training", 100, stream=stream)
  bar.update(10)
  bar.update(20)
  first, second = stream.getvalue().splitlines()
  assert "eta     ?" in first
  assert "eta   8.0s" in second                # 1 s per 10 steps, 80 steps left


@pytest.mark.parametrize("command", ["fit", "napsumq", "sample", "check"])
def test_help_states_each_default_once(command):
  from jtwin.cli import build_parser
  parser = build_parser()
  sub = next(a for a in parser._actions if a.dest == "command").choices[command]
  formatter = sub._get_formatter()
  for action in sub._actions:
    if action.help:
      text = formatter._get_help_string(action).lower()
      stated = text.count("(default:") + text.count("[default:") + text.count("(default ")
      assert stated <= 1, (command, action.dest, text)


@pytest.mark.slow
def test_check_names_columns_whose_synthetic_values_are_not_clipped(tmp_path, capsys):
  pd.DataFrame({"w": [1.5, 2.5, 3.0], "x": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "d.csv", index=False)
  (tmp_path / "m.txt").write_text("w : Normal ; missing = no\nx : Normal ; bounds = 0, 5 ; missing = no\n")
  code, out, err = _run(["check", str(tmp_path / "d.csv"), str(tmp_path / "m.txt"),
                         "--sampling_ratio", "0.5", "--domain", "data"], capsys)
  line = next(l for l in out.splitlines() if "not clipped" in l)
  named = line.split("go negative): ")[1].split(";")[0]
  assert named == "w"


def test_check_names_narrow_columns_far_from_zero(tmp_path, capsys):
  rng = np.random.default_rng(0)
  frame = pd.DataFrame({"year": rng.integers(2000, 2016, 5000), "x": rng.normal(size=5000),
                        "count": rng.poisson(3, 5000) + 1})
  data, model = tmp_path / "d.csv", tmp_path / "m.txt"
  frame.to_csv(data, index=False)
  model.write_text("year : Poisson\nx : Normal\ncount : Poisson\n")
  assert main(["check", str(data), str(model)]) == 0
  line = [l for l in capsys.readouterr().out.splitlines() if "narrow spread" in l]
  assert len(line) == 1 and ": year; declare" in line[0]
