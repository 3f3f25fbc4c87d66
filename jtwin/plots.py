"""Plots comparing a synthetic twin with real data (`jtwin fit --visualize`).

All functions take *decoded* DataFrames (original labels, NaN for missing).
Three figures, as twinify v0.1 drew them but readable:

* missing values: grouped bars of each column's missing fraction;
* marginals: one panel per column; bars of category frequencies for
  categorical, boolean and few-valued columns (the 20 most frequent real
  categories plus "other"; on a log axis when one category dwarfs the others,
  as the United States does in Adult's native_country), overlaid histograms
  on common bins for numeric columns with more than 20 distinct values;
* correlations: association matrices for real | synthetic | difference:
  Cramér's V for every column pair (numeric columns binned, missing its own
  category) and, with two or more numeric columns, Pearson's r for the
  numeric pairs. The difference maps share one symmetric colour scale,
  +-max(|difference|) with a floor of `DIFF_SCALE_FLOOR` (0.2), stated on
  the colour bar, so that small differences look small.

Every figure carries the note `NOTE` (`note=False` leaves it out, for pages
such as the evaluation report that show it once): the plots show statistics
of the real data and are for the data holder only.

matplotlib is imported inside the functions, never at module import. Figures
to be stored are plain `matplotlib.figure.Figure` objects rendered by the SVG
canvas, so no GUI backend (and no pyplot state) is involved unless a popup is
asked for and a display exists.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
import sys
import textwrap
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DIFF_SCALE_FLOOR",
    "MODES",
    "NOTE",
    "MadePlots",
    "association_matrices",
    "diff_scale",
    "draw_marginal",
    "figure_correlations",
    "figure_marginals",
    "figure_missing_values",
    "has_display",
    "make_plots",
    "plot_correlations",
    "plot_marginals",
    "plot_missing_values",
    "svg_string",
    "write_atomic",
]

NOTE = ("Compares against the REAL data: for the data holder only, "
        "not for release.")
MODES = ("none", "store", "popup", "both")
REAL_COLOR = "#1f77b4"
SYNTH_COLOR = "#d62728"
MAX_CATEGORIES = 20
LABEL_CHARS = 18
DIFF_SCALE_FLOOR = 0.2
SKEW_RATIO = 20.0
_SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "jtwin"}
_NON_INTERACTIVE = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


class MadePlots(NamedTuple):
  """What `make_plots` did.

  Attributes:
    files: the SVG files written.
    shown: whether the figures were shown in windows (False when a popup
      was asked for but no display is available).
  """
  files: list
  shown: bool


# ----------------------------------------------------------------- output --

def write_atomic(path, data: bytes) -> str:
  """Writes `data` to `path` via a temporary file in the same directory.

  The temporary file is renamed over `path` with `os.replace` (atomic on
  POSIX and Windows) and deleted if anything fails, so `path` is either the
  old file or the complete new one.

  Returns:
    `path` as a string.
  """
  path = os.fspath(path)
  directory, base = os.path.split(os.path.abspath(path))
  tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
  try:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  return path


def _svg_bytes(fig) -> bytes:
  import matplotlib

  buffer = io.BytesIO()
  with matplotlib.rc_context(_SVG_RC):
    fig.savefig(buffer, format="svg")
  return buffer.getvalue()


def svg_string(fig) -> str:
  """The figure as an `<svg>` element (no XML header), for inline HTML."""
  text = _svg_bytes(fig).decode("utf-8")
  return text[text.index("<svg"):]


def _save(fig, path: str) -> str:
  try:
    return write_atomic(path, _svg_bytes(fig))
  finally:
    _close(fig)


def _close(fig) -> None:
  if "matplotlib.pyplot" in sys.modules:
    sys.modules["matplotlib.pyplot"].close(fig)


def has_display() -> bool:
  """True if a window can plausibly be opened (macOS, Windows, X or Wayland)."""
  if sys.platform in ("darwin", "win32"):
    return True
  return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _can_pop_up() -> bool:
  if not has_display():
    return False
  import matplotlib.pyplot as plt

  return plt.get_backend().lower() not in _NON_INTERACTIVE


def _figure(figsize, pyplot: bool = False, note: bool = True):
  if pyplot:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize, layout="constrained")
  else:
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
  if note:
    chars = int(figsize[0] * 72 / (0.6 * 9))  # ~0.6 em per character
    fig.suptitle(textwrap.fill(NOTE, max(chars, 20)), color="darkred",
                 fontsize=9, fontweight="bold")
  return fig


# ---------------------------------------------------------------- helpers --

def _short(label, chars: int = LABEL_CHARS) -> str:
  label = str(label)
  return label if len(label) <= chars else label[:chars - 1] + "\u2026"


def _common(real: pd.DataFrame, synth: pd.DataFrame) -> list:
  columns = [c for c in real.columns if c in synth.columns]
  if not columns:
    raise ValueError("the real and synthetic tables have no column in common")
  return columns


def _is_numeric(column: pd.Series) -> bool:
  from jtwin.evaluate.encoding import is_numeric_column

  return is_numeric_column(column, MAX_CATEGORIES)


def _draw_categorical(ax, real: pd.Series, synth: pd.Series) -> None:
  r, s = real.dropna(), synth.dropna()
  rc, sc = r.value_counts(), s.value_counts()
  both = rc.add(sc, fill_value=0)
  values = list(both.index)
  numeric = all(isinstance(v, (int, float, np.number, bool, np.bool_))
                for v in values)
  if numeric:
    values.sort()
  else:
    values.sort(key=lambda v: (-rc.get(v, 0), -sc.get(v, 0), str(v)))
  top = values[:MAX_CATEGORIES]
  if len(values) > MAX_CATEGORIES and numeric:  # keep the most frequent
    top = sorted(sorted(values, key=lambda v: -rc.get(v, 0))[:MAX_CATEGORIES])
  fr = np.array([rc.get(v, 0) for v in top], float) / max(len(r), 1)
  fs = np.array([sc.get(v, 0) for v in top], float) / max(len(s), 1)
  labels = [_short(v) for v in top]
  if len(values) > len(top):
    fr = np.append(fr, 1 - fr.sum() if len(r) else 0.0)
    fs = np.append(fs, 1 - fs.sum() if len(s) else 0.0)
    labels.append("other")
  x = np.arange(len(labels))
  ax.bar(x - 0.2, fr, 0.4, color=REAL_COLOR, label="real")
  ax.bar(x + 0.2, fs, 0.4, color=SYNTH_COLOR, label="synthetic")
  rotate = len(labels) > 4 or max((len(t) for t in labels), default=0) > 6
  ax.set_xticks(x, labels, rotation=60 if rotate else 0,
                ha="right" if rotate else "center",
                rotation_mode="anchor", fontsize=7)
  log = _skewed(np.concatenate([fr, fs]))
  if log:  # one category dwarfs the rest: a linear axis would hide them
    ax.set_yscale("log")
  ax.set_ylabel("fraction of non-missing" + (" (log)" if log else ""),
                fontsize=7)


def _skewed(fractions: np.ndarray) -> bool:
  """True if the largest bar is `SKEW_RATIO` times a visible smaller one.

  Then a linear axis shows one bar and flat lines, so a log axis is used.
  """
  positive = fractions[fractions > 0]
  return positive.size > 1 and positive.max() > SKEW_RATIO * np.median(
      positive)


def _draw_numeric(ax, real: pd.Series, synth: pd.Series) -> None:
  r = pd.to_numeric(real, errors="coerce").to_numpy(float)
  s = pd.to_numeric(synth, errors="coerce").to_numpy(float)
  r, s = r[np.isfinite(r)], s[np.isfinite(s)]
  both = np.concatenate([r, s])
  if both.size == 0:
    ax.text(0.5, 0.5, "all missing", ha="center", transform=ax.transAxes)
    return
  lo, hi = both.min(), both.max()
  edges = np.linspace(lo, hi, 31) if hi > lo else np.array([lo - .5, lo + .5])
  skewed = False
  for values, color, label in ((r, REAL_COLOR, "real"),
                               (s, SYNTH_COLOR, "synthetic")):
    if values.size:
      counts, _, _ = ax.hist(values, bins=edges, density=True, alpha=0.45,
                             color=color, label=label)
      skewed |= counts.max() * np.diff(edges).max() > 0.5
  if skewed:  # one bin holds most of the mass: show the tail on a log scale
    ax.set_yscale("log")
  ax.set_ylabel("density (log)" if skewed else "density", fontsize=7)
  ax.tick_params(labelsize=7)


def draw_marginal(ax, real: pd.Series, synth: pd.Series, name: str,
                  numeric: Optional[bool] = None) -> None:
  """Draws one column's real vs synthetic marginal on `ax`.

  `numeric` forces a histogram (True) or bars (False); None decides from the
  data (a numeric dtype with more than 20 distinct values: histogram).
  """
  if numeric is None:
    numeric = _is_numeric(real)
  if numeric:
    _draw_numeric(ax, real, synth)
  else:
    _draw_categorical(ax, real, synth)
  ax.set_title(_short(name, 40), fontsize=9)
  ax.tick_params(axis="y", labelsize=7)


# ---------------------------------------------------------------- figures --

def figure_missing_values(real: pd.DataFrame, synth: pd.DataFrame, *,
                          pyplot: bool = False):
  """A Figure of grouped bars: the missing fraction of every column."""
  columns = _common(real, synth)
  fr = real[columns].isna().mean().to_numpy(float)
  fs = synth[columns].isna().mean().to_numpy(float)
  fig = _figure((max(6.0, 0.45 * len(columns) + 2.0), 4.5), pyplot)
  ax = fig.add_subplot()
  x = np.arange(len(columns))
  ax.bar(x - 0.2, fr, 0.4, color=REAL_COLOR, label="real")
  ax.bar(x + 0.2, fs, 0.4, color=SYNTH_COLOR, label="synthetic")
  ax.set_xticks(x, [_short(c) for c in columns], rotation=45, ha="right",
                rotation_mode="anchor", fontsize=8)
  ax.set_ylabel("fraction missing")
  ax.set_title("Missing values per column")
  if not (fr.any() or fs.any()):
    ax.set_ylim(0, 1)
    ax.text(0.5, 0.5, "no missing values in either table", ha="center",
            transform=ax.transAxes)
  ax.legend(fontsize=8)
  return fig


def figure_marginals(real: pd.DataFrame, synth: pd.DataFrame, *,
                     columns: Optional[Sequence[str]] = None, ncols: int = 4,
                     pyplot: bool = False, note: bool = True,
                     numeric: Optional[Sequence[str]] = None):
  """A Figure with a grid of per-column marginal panels.

  Args:
    real: the real data, decoded.
    synth: the synthetic data, decoded.
    columns: the columns to draw (default: all common ones).
    ncols: panels per row.
    pyplot: create the figure through pyplot (for a popup).
    note: print `NOTE` above the panels.
    numeric: columns drawn as histograms; the others as bars. None decides
      per column from the data.
  """
  columns = list(columns) if columns is not None else _common(real, synth)
  ncols = max(1, min(ncols, len(columns)))
  nrows = math.ceil(len(columns) / ncols)
  fig = _figure((3.6 * ncols, 3.0 * nrows + (0.5 if note else 0.0)), pyplot,
                note)
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, name in zip(axes, columns):
    draw_marginal(ax, real[name], synth[name], name,
                  None if numeric is None else name in set(numeric))
  for ax in axes[len(columns):]:
    ax.set_visible(False)
  axes[0].legend(fontsize=7)
  return fig


def association_matrices(real: pd.DataFrame, synth: pd.DataFrame) -> dict:
  """Cramér's V (all pairs, binned codes) and Pearson (numeric pairs).

  Returns:
    dict with "columns", "cramers_v_real", "cramers_v_synth",
    "pearson_columns", "pearson_real", "pearson_synth" (nested lists), the
    layout of `jtwin.evaluate.evaluate(...)["association"]`.
  """
  from jtwin.evaluate import encoding, metrics

  columns = _common(real, synth)
  real, synth = real[columns], synth[columns]
  coders = encoding.make_coders(real, [synth])
  sizes = [c.num_codes for c in coders]
  numeric = [c for c in columns
             if pd.api.types.is_numeric_dtype(real[c])
             and not pd.api.types.is_bool_dtype(real[c])
             and real[c].nunique() > 1]
  return {
      "columns": columns,
      "cramers_v_real": metrics.cramers_v_matrix(
          encoding.encode_frame(real, coders), sizes).tolist(),
      "cramers_v_synth": metrics.cramers_v_matrix(
          encoding.encode_frame(synth, coders), sizes).tolist(),
      "pearson_columns": numeric,
      "pearson_real": metrics.pearson_matrix(real[numeric]).tolist(),
      "pearson_synth": metrics.pearson_matrix(synth[numeric]).tolist(),
  }


def _heatmap(ax, matrix, labels, vmin, vmax, cmap, title):
  import matplotlib as mpl

  matrix = np.asarray(matrix, dtype=float)
  cmap = mpl.colormaps[cmap].with_extremes(bad="#dddddd")
  image = ax.imshow(np.ma.masked_invalid(matrix), vmin=vmin, vmax=vmax,
                    cmap=cmap)
  d = len(labels)
  size = max(4.0, min(8.0, 160.0 / max(d, 1)))
  short = [_short(t, 16) for t in labels]
  ax.set_xticks(range(d), short, rotation=90, fontsize=size)
  ax.set_yticks(range(d), short, fontsize=size)
  ax.set_title(title, fontsize=9)
  if d <= 12:
    for i in range(d):
      for j in range(d):
        if np.isfinite(matrix[i, j]):
          ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                  fontsize=6)
  return image


def diff_scale(assoc: dict) -> float:
  """The symmetric colour limit of the difference maps.

  max |synthetic - real| over the Cramér's V and (two or more numeric
  columns) Pearson matrices, and at least `DIFF_SCALE_FLOOR`, so that both
  maps share one scale and differences of 0.01 never look saturated.
  """
  diffs = [np.asarray(assoc["cramers_v_synth"], float)
           - np.asarray(assoc["cramers_v_real"], float)]
  if len(assoc["pearson_columns"]) >= 2:
    diffs.append(np.asarray(assoc["pearson_synth"], float)
                 - np.asarray(assoc["pearson_real"], float))
  values = np.concatenate([np.abs(d).ravel() for d in diffs])
  values = values[np.isfinite(values)]
  return max(DIFF_SCALE_FLOOR, float(values.max()) if values.size else 0.0)


def figure_correlations(assoc: dict, *, panels=("real", "synth", "diff"),
                        pyplot: bool = False, note: bool = True):
  """A Figure of association heatmaps from `association_matrices` output.

  Rows: Cramér's V (all columns) and, with two or more numeric columns,
  Pearson's r. Columns: `panels`, a subset of "real", "synth", "diff"
  (synthetic minus real). Real and synthetic share one colour scale; the
  difference maps of both rows share the symmetric scale `diff_scale`,
  written on their colour bars. `note=False` leaves out `NOTE`.
  """
  rows = [("Cramér's V", assoc["columns"], assoc["cramers_v_real"],
           assoc["cramers_v_synth"], 0.0, "viridis")]
  if len(assoc["pearson_columns"]) >= 2:
    rows.append(("Pearson r", assoc["pearson_columns"], assoc["pearson_real"],
                 assoc["pearson_synth"], -1.0, "RdBu_r"))
  d = len(assoc["columns"])
  side = max(3.4, 0.24 * d + 1.8)
  fig = _figure((len(panels) * side + 1.0,
                 len(rows) * side + (0.5 if note else 0.0)), pyplot, note)
  axes = fig.subplots(len(rows), len(panels), squeeze=False)
  lim = diff_scale(assoc)
  for r, (measure, labels, real_m, synth_m, vmin, cmap) in enumerate(rows):
    real_m, synth_m = np.asarray(real_m, float), np.asarray(synth_m, float)
    diff = synth_m - real_m
    with np.errstate(invalid="ignore"):
      top = np.nanmax(np.abs(diff)) if np.isfinite(diff).any() else 0.0
    shared, image = [], None
    for c, panel in enumerate(panels):
      ax = axes[r, c]
      if panel == "diff":
        im = _heatmap(ax, diff, labels, -lim, lim, "RdBu_r",
                      f"{measure}: synthetic \u2212 real "
                      f"(max |diff| {float(top):.2f})")
        bar = fig.colorbar(im, ax=ax, shrink=0.8)
        bar.set_label(f"synthetic \u2212 real; scale \u00b1{lim:.2f}, "
                      "shared by the difference maps", fontsize=7)
      else:
        matrix = real_m if panel == "real" else synth_m
        name = "real" if panel == "real" else "synthetic"
        image = _heatmap(ax, matrix, labels, vmin, 1.0, cmap,
                         f"{measure}: {name}")
        shared.append(ax)
    if shared:
      fig.colorbar(image, ax=shared, shrink=0.8)
  return fig


# ----------------------------------------------------------------- public --

def plot_missing_values(real: pd.DataFrame, synth: pd.DataFrame,
                        prefix: str) -> str:
  """Saves `{prefix}_missing_value_plots.svg`; returns its path."""
  return _save(figure_missing_values(real, synth),
               f"{prefix}_missing_value_plots.svg")


def plot_marginals(real: pd.DataFrame, synth: pd.DataFrame,
                   prefix: str) -> str:
  """Saves `{prefix}_marginal_plots.svg`; returns its path."""
  return _save(figure_marginals(real, synth), f"{prefix}_marginal_plots.svg")


def plot_correlations(real: pd.DataFrame, synth: pd.DataFrame,
                      prefix: str) -> str:
  """Saves `{prefix}_correlation_plots.svg`; returns its path."""
  return _save(figure_correlations(association_matrices(real, synth)),
               f"{prefix}_correlation_plots.svg")


def make_plots(real: pd.DataFrame, synth: pd.DataFrame, prefix: str,
               mode: str = "store") -> MadePlots:
  """Draws the three comparison figures for `jtwin fit --visualize`.

  Args:
    real: the real data, decoded.
    synth: the synthetic data, decoded.
    prefix: output prefix; files are `{prefix}_missing_value_plots.svg`,
      `{prefix}_marginal_plots.svg` and `{prefix}_correlation_plots.svg`.
    mode: "none" (nothing), "store" (save the SVGs), "popup" (show them in
      windows) or "both". Windows open only if a display exists
      (`has_display`) and matplotlib has an interactive backend; otherwise
      the popup is skipped silently and `shown` is False.

  Returns:
    `MadePlots(files, shown)`.

  Raises:
    ValueError: unknown mode, or no common columns.

  Privacy:
    The figures show statistics of the real data: not for release.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  store = mode in ("store", "both")
  popup = mode in ("popup", "both") and _can_pop_up()
  if not (store or popup):
    return MadePlots([], False)
  figures = [
      ("_missing_value_plots.svg",
       figure_missing_values(real, synth, pyplot=popup)),
      ("_marginal_plots.svg", figure_marginals(real, synth, pyplot=popup)),
      ("_correlation_plots.svg", figure_correlations(
          association_matrices(real, synth), pyplot=popup)),
  ]
  files = []
  try:
    if store:
      files = [write_atomic(f"{prefix}{suffix}", _svg_bytes(fig))
               for suffix, fig in figures]
    if popup:
      import matplotlib.pyplot as plt

      plt.show()
  finally:
    for _, fig in figures:
      _close(fig)
  return MadePlots(files, popup)
