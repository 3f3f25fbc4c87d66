"""Tests for jtwin.plots: valid SVG files, the privacy note, atomic writes."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from jtwin import plots


@pytest.fixture()
def tables():
  rng = np.random.default_rng(0)
  n = 300
  long_label = "A very long category label that must be truncated"
  categories = [f"cat{i:02d}" for i in range(25)] + [long_label]

  def make(seed):
    r = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": r.normal(40, 12, n).round(),
        "income": r.lognormal(10, 1, n),
        "colour": r.choice(["red", "green", "blue"], n),
        "many": r.choice(categories, n),
        "flag": r.random(n) < 0.3,
        "count": r.integers(0, 5, n),
    })
    frame.loc[r.random(n) < 0.1, "colour"] = None
    frame.loc[r.random(n) < 0.05, "age"] = np.nan
    return frame

  del rng
  return make(1), make(2)


def _text(path):
  root = ET.parse(path).getroot()  # raises if not well-formed XML
  assert root.tag.endswith("svg")
  return " ".join(" ".join(root.itertext()).split())


def _tmp_files(directory):
  return [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_make_plots_store(tmp_path, tables):
  real, synth = tables
  made = plots.make_plots(real, synth, str(tmp_path / "out"), "store")
  assert made.shown is False
  names = [os.path.basename(f) for f in made.files]
  assert names == ["out_missing_value_plots.svg", "out_marginal_plots.svg",
                   "out_correlation_plots.svg"]
  for path in made.files:
    text = _text(path)
    assert plots.NOTE in text, path
  marginals = _text(made.files[1])
  for label in ("red", "green", "True", "other", "cat00", "colour"):
    assert label in marginals
  assert "A very long category label that must be truncated" not in marginals
  assert "A very long cat" in marginals
  correlations = _text(made.files[2])
  assert "Cramér's V: real" in correlations
  assert "Pearson r: synthetic" in correlations
  assert "income" in correlations
  assert not _tmp_files(tmp_path)


def test_individual_plot_functions(tmp_path, tables):
  real, synth = tables
  prefix = str(tmp_path / "p")
  assert plots.plot_missing_values(real, synth, prefix) == \
      prefix + "_missing_value_plots.svg"
  assert plots.plot_marginals(real, synth, prefix) == \
      prefix + "_marginal_plots.svg"
  assert plots.plot_correlations(real, synth, prefix) == \
      prefix + "_correlation_plots.svg"
  assert "colour" in _text(prefix + "_missing_value_plots.svg")
  assert not _tmp_files(tmp_path)


def test_popup_without_display_is_skipped(tmp_path, tables, monkeypatch):
  monkeypatch.delenv("DISPLAY", raising=False)
  monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
  monkeypatch.setattr(sys, "platform", "linux")
  real, synth = tables
  assert plots.has_display() is False
  assert plots.make_plots(real, synth, str(tmp_path / "a"), "popup") == \
      plots.MadePlots([], False)
  both = plots.make_plots(real, synth, str(tmp_path / "b"), "both")
  assert both.shown is False and len(both.files) == 3
  assert plots.make_plots(real, synth, str(tmp_path / "c"), "none") == \
      plots.MadePlots([], False)
  assert sorted(os.listdir(tmp_path)) == sorted(
      os.path.basename(f) for f in both.files)
  with pytest.raises(ValueError, match="mode"):
    plots.make_plots(real, synth, str(tmp_path / "d"), "show")


def test_write_atomic_leaves_no_temp_on_failure(tmp_path):
  target = tmp_path / "x.svg"
  plots.write_atomic(target, b"old")
  with pytest.raises(TypeError):
    plots.write_atomic(target, "not bytes")
  assert target.read_bytes() == b"old"
  assert not _tmp_files(tmp_path)


def test_no_common_columns(tmp_path):
  with pytest.raises(ValueError, match="no column in common"):
    plots.plot_marginals(pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]}),
                         str(tmp_path / "p"))


def test_svg_string_is_inline_svg(tables):
  real, synth = tables
  fig = plots.figure_marginals(real, synth, columns=["colour"], ncols=1)
  text = plots.svg_string(fig)
  assert text.startswith("<svg") and "<?xml" not in text
  ET.fromstring(text)


def test_import_does_not_load_matplotlib():
  code = ("import sys, jtwin.plots; "
          "print('matplotlib' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True).stdout.strip()
  assert out == "False"


# ------------------------------------------------ scales (issue 13, item 7) --

def _assoc(v_diff, r_diff):
  """A 3-column association dict whose (0, 1) entries differ as given."""
  v_real, r_real = np.eye(3), np.eye(3)
  v_real[0, 1] = v_real[1, 0] = 0.3
  r_real[0, 1] = r_real[1, 0] = 0.4
  v_synth, r_synth = v_real.copy(), r_real.copy()
  v_synth[0, 1] = v_synth[1, 0] = 0.3 + v_diff
  r_synth[0, 1] = r_synth[1, 0] = 0.4 + r_diff
  return {"columns": ["a", "b", "c"], "cramers_v_real": v_real.tolist(),
          "cramers_v_synth": v_synth.tolist(),
          "pearson_columns": ["a", "b", "c"], "pearson_real": r_real.tolist(),
          "pearson_synth": r_synth.tolist()}


def _diff_limits(fig):
  """(vmin, vmax) of every difference heatmap, row by row."""
  return [im.get_clim() for ax in fig.axes for im in ax.get_images()
          if "synthetic \u2212 real" in ax.get_title()]


def test_difference_maps_share_a_floored_symmetric_scale():
  """Small differences (0.03, 0.08) sit on the +-0.2 floor, not +-0.08."""
  fig = plots.figure_correlations(_assoc(0.03, -0.08), panels=("diff",))
  assert _diff_limits(fig) == [(-0.2, 0.2), (-0.2, 0.2)]
  text = plots.svg_string(fig)
  assert "scale \u00b10.20" in text and "max |diff| 0.08" in text
  big = plots.figure_correlations(_assoc(0.6, 0.05))
  limits = _diff_limits(big)
  assert len(limits) == 2
  for lo, hi in limits:
    assert (lo, hi) == pytest.approx((-0.6, 0.6))


def test_skewed_categorical_gets_a_log_axis():
  import matplotlib.figure

  rng = np.random.default_rng(0)
  countries = ["United-States"] * 900 + [f"c{i}" for i in range(40)] * 2
  real = pd.Series(rng.permutation(countries))
  fig = matplotlib.figure.Figure()
  ax = fig.add_subplot()
  plots.draw_marginal(ax, real, real, "native_country")
  assert ax.get_yscale() == "log"
  even = pd.Series(list("abc") * 100)
  ax2 = fig.add_subplot(2, 1, 2)
  plots.draw_marginal(ax2, even, even, "even")
  assert ax2.get_yscale() == "linear"


def test_figures_without_the_note(tables):
  real, synth = tables
  fig = plots.figure_marginals(real, synth, columns=["age"], note=False,
                               numeric=[])
  text = plots.svg_string(fig)
  assert plots.NOTE.split(":")[0] not in text
  # numeric=[] forces bars: the panel has category ticks, not a density axis.
  assert "fraction of non-missing" in text and "density" not in text
