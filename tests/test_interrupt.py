"""Ctrl-C: exit 130 in every phase, and a message that names exactly what was written."""
import signal

import numpy as np
import pandas as pd
import pytest

from jtwin.cli import main

FAST = ["-e", "2", "-q", "0.1", "--k", "2", "--seed", "0"]


@pytest.fixture
def files(declared_files):
  return declared_files


def _interrupt(*args, **kwargs):
  raise KeyboardInterrupt


def _outputs(tmp):
  return sorted(p.name for p in tmp.iterdir() if p.name.startswith("out"))


def _fit(files, capsys, visualize="none"):
  tmp, data, model = files
  code = main(["fit", data, model, str(tmp / "out"), "--visualize", visualize] + FAST)
  return code, capsys.readouterr().err


@pytest.mark.parametrize("module,name", [
    ("jtwin.data", "read_csv"),            # loading
    ("jtwin.infer", "privacy_plan"),       # noise calibration
    ("jtwin.infer", "fit"),                # training
    pytest.param("jtwin.sampling", "sample_synthetic", marks=pytest.mark.slow),  # sampling
])
def test_interrupt_before_writing_writes_nothing(files, capsys, monkeypatch, module, name):
  import importlib
  monkeypatch.setattr(importlib.import_module(module), name, _interrupt)
  code, err = _fit(files, capsys)
  assert code == 130
  assert "interrupted; no output was written" in err
  assert _outputs(files[0]) == []


@pytest.mark.slow
def test_interrupt_while_writing_names_the_complete_csv(files, capsys, monkeypatch):
  import jtwin.result_io
  monkeypatch.setattr(jtwin.result_io, "save_result", _interrupt)
  code, err = _fit(files, capsys)
  assert code == 130
  assert _outputs(files[0]) == ["out.csv"]
  assert "already written: " + str(files[0] / "out.csv") in err
  assert "no output was written" not in err


def test_interrupt_while_plotting_names_every_file_written(files, capsys, monkeypatch):
  import jtwin.plots

  def one_plot_then_interrupt(real, synth, prefix, mode):
    with open(prefix + "_missing_value_plots.svg", "w") as f:
      f.write("<svg/>")
    raise KeyboardInterrupt
  monkeypatch.setattr(jtwin.plots, "make_plots", one_plot_then_interrupt)
  code, err = _fit(files, capsys, visualize="store")
  tmp = files[0]
  assert code == 130
  written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("out*") if p.is_file())
  assert len(written) == 3 and written[:2] == ["out.csv", "out.jtwin.npz"]
  assert written[2].endswith("_missing_value_plots.svg")
  for name in written:
    assert str(tmp / name) in err
  assert "no output was written" not in err


def test_swallowed_interrupt_still_exits_130(files, capsys, monkeypatch):
  """A SIGINT whose KeyboardInterrupt is swallowed (as in a GC callback) is not lost."""
  import jtwin.sampling
  real = jtwin.sampling.sample_synthetic

  def swallowing(*args, **kwargs):
    try:
      signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
      pass                         # "Exception ignored in ..."
    return real(*args, **kwargs)
  monkeypatch.setattr(jtwin.sampling, "sample_synthetic", swallowing)
  code, err = _fit(files, capsys)
  assert code == 130
  assert "interrupted; no output was written" in err
  assert _outputs(files[0]) == []


def test_interrupt_in_napsumq(files, capsys, monkeypatch):
  import jtwin.napsumq
  monkeypatch.setattr(jtwin.napsumq, "fit_marginals", _interrupt)
  tmp, data, model = files
  code = main(["napsumq", data, model, str(tmp / "out"), "--seed", "0"])
  assert code == 130
  assert "no output was written" in capsys.readouterr().err
  assert _outputs(tmp) == []


def test_sigint_handler_is_restored(files, capsys, monkeypatch):
  before = signal.getsignal(signal.SIGINT)
  import jtwin.infer
  monkeypatch.setattr(jtwin.infer, "fit", _interrupt)
  assert _fit(files, capsys)[0] == 130
  assert signal.getsignal(signal.SIGINT) is before


def test_interrupt_in_a_finalizer_is_recorded_quietly(files, capsys, monkeypatch):
  """A Ctrl-C that lands in a `__del__` (as in JAX's GC callback): no "Exception
  ignored" traceback, and the run still stops at the end of the phase."""
  import gc
  import jtwin.data

  class Finalized:
    def __del__(self):
      signal.raise_signal(signal.SIGINT)

  real = jtwin.data.read_csv

  def read_csv(path):
    Finalized()          # dropped at once: its __del__'s KeyboardInterrupt is unraisable
    gc.collect()
    return real(path)    # the phase goes on, as it would after a swallowed interrupt
  monkeypatch.setattr(jtwin.data, "read_csv", read_csv)
  code, err = _fit(files, capsys)
  assert code == 130
  assert "Exception ignored" not in err and "interrupted; no output was written" in err
  assert _outputs(files[0]) == []
