"""The evaluation report: a text summary, `{prefix}.json`, `{prefix}.html`."""
from __future__ import annotations

import datetime
import html
import json
import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from jtwin import plots

__all__ = ["NOTE", "format_summary", "summary_rows", "to_json",
           "write_report"]

NOTE = ("This report reads the real data: it is for the data holder, "
        "not for release.")

# (key, label, how to read it); a missing key is skipped.
_ROWS = (
    ("n_real", "real rows", ""),
    ("n_synth", "synthetic rows", ""),
    ("tvd_1way_mean", "1-way TVD, mean", "0 = identical marginals"),
    ("tvd_1way_max", "1-way TVD, max", ""),
    ("tvd_2way_mean", "2-way TVD, mean", "all column pairs"),
    ("tvd_2way_max", "2-way TVD, max", ""),
    ("tvd_3way_mean", "3-way TVD, mean", "sampled column triples"),
    ("tvd_3way_max", "3-way TVD, max", ""),
    ("missing_abs_error_mean", "missing-rate error, mean", "|real - synth|"),
    ("missing_abs_error_max", "missing-rate error, max", ""),
    ("cramers_v_diff_mean", "Cramér's V diff, mean",
     "all pairs, |real - synth|"),
    ("cramers_v_diff_max", "Cramér's V diff, max", ""),
    ("pearson_diff_mean", "Pearson r diff, mean", "numeric pairs"),
    ("pearson_diff_max", "Pearson r diff, max", ""),
    ("pmse_ratio", "pMSE / null, main effects",
     "1-way only; ~1-2 ideal (see docs)"),
    ("pmse_pairs_ratio", "pMSE / null, pairwise",
     "2-way; ~1-2 ideal, larger = distinguishable"),
    ("w1_ratio_median", "W1 ratio, median",
     "W1(real, synth) / W1(real halves)"),
    ("utility_accuracy_real", "accuracy, trained on real", "headline model"),
    ("utility_accuracy_synth", "accuracy, trained on synth", "tested on real"),
    ("utility_accuracy_majority", "accuracy, majority class", "baseline"),
    ("utility_auroc_real", "AUROC, trained on real", ""),
    ("utility_auroc_synth", "AUROC, trained on synth", ""),
    ("sra", "synthetic ranking agreement", "1 = same model ranking"),
)


def _fmt(value: Any) -> str:
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return f"{int(value):,}"
  if isinstance(value, (float, np.floating)):
    if not math.isfinite(value):
      return "n/a"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
  return str(value)


def summary_rows(results: dict) -> list[tuple[str, str, str]]:
  """(label, formatted value, how to read it) for the summary table."""
  return [(label, _fmt(results[key]), hint)
          for key, label, hint in _ROWS if key in results]


def _notes(results: dict) -> list[str]:
  """Plain-text notes: utility source and models, capping, subsampling."""
  out = []
  if "utility_test_source" in results:
    out.append(f"utility tested on {results['utility_test_source']}")
  if "utility_backend" in results:
    out.append(f"utility models: {results['utility_backend']}")
  settings = results.get("settings", {})
  capped = settings.get("capped_columns")
  if capped:
    out.append(f"columns with more than {settings.get('max_levels')} values "
               f"(kept the most frequent, pooled the rest as '(other)'): "
               f"{', '.join(map(str, capped))}")
  limit = settings.get("max_model_rows")
  if limit and max(results.get("n_real", 0), results.get("n_synth", 0)) > limit:
    out.append(f"pMSE and utility models fitted on a seeded sample of at "
               f"most {limit:,} rows per table")
  return out


def format_summary(results: dict) -> str:
  """The summary as an aligned plain-text table, headed by `NOTE`."""
  rows = summary_rows(results)
  width = max(len(r[0]) for r in rows)
  vwidth = max(len(r[1]) for r in rows)
  lines = [NOTE, ""]
  lines += [f"{label:<{width}}  {value:>{vwidth}}  {hint}".rstrip()
            for label, value, hint in rows]
  lines += _notes(results)
  return "\n".join(lines)


def _clean(value):
  """Recursively converts to JSON types; NaN and infinities become None."""
  if isinstance(value, dict):
    return {str(k): _clean(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_clean(v) for v in value]
  if isinstance(value, np.ndarray):
    return _clean(value.tolist())
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def to_json(results: dict, header: Optional[dict] = None) -> str:
  """`results` as strict JSON (NaN as null), with the note as first key.

  `header` (see `write_report`) is stored under "report".
  """
  extra = {"report": _clean(header)} if header is not None else {}
  return json.dumps({"note": NOTE, **extra, **_clean(results)}, indent=1,
                    allow_nan=False)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;
padding:0 1em;color:#222}
.note{background:#fde8e8;border:2px solid #b00;color:#900;padding:.6em 1em;
font-weight:bold}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}
.figs{display:flex;flex-wrap:wrap;gap:.5em}
.figs svg{width:320px;height:auto}
.wide svg{max-width:100%;height:auto}
dl.header{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}
dl.header dt{font-weight:bold}
dl.header dd{margin:0;font-family:monospace}
"""


def _header_rows(header: Optional[dict], results: dict
                 ) -> list[tuple[str, str]]:
  """(label, text) rows of the report header: inputs, version, privacy."""
  header = dict(header or {})
  rows = []
  for key, label in (("real", "real data"), ("synthetic", "synthetic data"),
                     ("test", "real test data"), ("model", "model file")):
    if header.get(key):
      rows.append((label, str(header[key])))
  rows.append(("rows", f"{_fmt(results.get('n_real', 0))} real, "
                       f"{_fmt(results.get('n_synth', 0))} synthetic"))
  privacy = header.get("privacy")
  if privacy and privacy.get("epsilon") is not None:
    eps, delta = privacy.get("epsilon"), privacy.get("delta")
    text = (f"epsilon = {_fmt_number(eps)}, delta = {_fmt_number(delta)}"
            if privacy.get("mode") != "non-private"
            else "NO differential privacy (non-private run)")
    rows.append(("privacy", f"{text} (from {privacy.get('path')})"))
  else:
    rows.append(("privacy", "unknown: no result file given (--result)"))
  version = header.get("jtwin_version")
  if version is None:
    from jtwin import __version__ as version
  rows.append(("jtwin version", str(version)))
  rows.append(("created", header.get("created") or _now()))
  return rows


def _fmt_number(value) -> str:
  try:
    return f"{float(value):.4g}"
  except (TypeError, ValueError):
    return str(value)


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime(
      "%Y-%m-%d %H:%M:%S UTC")


def _table(header, rows) -> str:
  out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>"
                                 for h in header) + "</tr>"]
  for row in rows:
    out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                for c in row) + "</tr>")
  out.append("</table>")
  return "\n".join(out)


def _html(results: dict, real: pd.DataFrame, synth: pd.DataFrame,
          header: Optional[dict] = None) -> str:
  """The one-page report: one privacy banner, a header, tables, figures."""
  rows = _header_rows(header, results)
  parts = [
      "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
      "<title>jtwin evaluation</title>", f"<style>{_CSS}</style></head><body>",
      f'<p class="note">{html.escape(NOTE)}</p>',
      "<h1>jtwin evaluation</h1>", '<dl class="header">',
      *[f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows],
      "</dl>", "<h2>Summary</h2>",
      _table(("metric", "value", "how to read it"), summary_rows(results)),
  ]
  if "utility_test_source" in results:
    target = html.escape(str(results["settings"]["target"]))
    source = html.escape(results["utility_test_source"])
    parts.append(f"<p>Utility: target <b>{target}</b>, tested on {source}.</p>")
  for line in _notes(results)[1 if "utility_test_source" in results else 0:]:
    parts.append(f"<p>{html.escape(line[0].upper() + line[1:])}.</p>")
  if "per_model" in results:
    parts.append("<h2>Utility per model</h2>")
    parts.append(_table(
        ("model", "accuracy (real-trained)", "accuracy (synth-trained)",
         "AUROC (real-trained)", "AUROC (synth-trained)"),
        [(name, _fmt(r["accuracy_real"]), _fmt(r["accuracy_synth"]),
          _fmt(r["auroc_real"]), _fmt(r["auroc_synth"]))
         for name, r in results["per_model"].items()]))
  parts.append("<h2>Per column</h2>")
  parts.append(_table(
      ("column", "kind", "TVD", "missing (real)", "missing (synth)",
       "W1 ratio"),
      [(name, r["kind"], _fmt(r["tvd"]), _fmt(r["missing_real"]),
        _fmt(r["missing_synth"]),
        _fmt(r["w1_ratio"]) if "w1_ratio" in r else "\u2013")
       for name, r in results["per_column"].items()]))
  parts.append("<p>W1 ratios are given for numeric columns only (binned, or "
               "declared Normal, Poisson or binned in the model file).</p>")
  parts.append("<h2>Association: synthetic \u2212 real</h2>")
  if "omitted" in results["association"]:
    parts.append(f"<p>{results['association']['omitted']}.</p>")
  else:
    fig = plots.figure_correlations(results["association"], panels=("diff",),
                                    note=False)
    parts.append(f'<div class="wide">{plots.svg_string(fig)}</div>')
  parts.append("<h2>Marginals</h2>")
  parts.append('<div class="figs">')
  numeric = {c for c, r in results["per_column"].items()
             if r["kind"] == "numeric"}
  for name in results["columns"]:
    fig = plots.figure_marginals(real, synth, columns=[name], ncols=1,
                                 note=False, numeric=numeric)
    parts.append(plots.svg_string(fig))
  parts.append("</div>")
  parts.append("</body></html>")
  return "\n".join(parts)


def write_report(results: dict, real: pd.DataFrame, synth: pd.DataFrame,
                 prefix: str, *, header: Optional[dict] = None) -> list[str]:
  """Writes `{prefix}.json` (all figures) and `{prefix}.html` (one page).

  The HTML page has one privacy banner (`NOTE`), a header (input files,
  rows, epsilon and delta when known, jtwin version, creation time), the
  summary table, the per-model utility table, a per-column table, the
  association difference heatmaps and one marginal comparison figure per
  column, all inline (SVG). Both files are written atomically and start
  with `NOTE`; the JSON holds the header under "report".

  Args:
    results: the output of `jtwin.evaluate.evaluate`.
    real: the real data that was evaluated (for the marginal figures).
    synth: the synthetic data that was evaluated.
    prefix: output path prefix.
    header: optional {"real", "synthetic", "test", "model": paths,
      "jtwin_version", "privacy": {"epsilon", "delta", "mode", "path"} or
      None, "created"}; missing entries are left out (version and time are
      filled in).

  Returns:
    [json path, html path].

  Privacy:
    The report shows statistics of the real data: not for release.
  """
  header = dict(header or {})
  header.setdefault("created", _now())
  if header.get("jtwin_version") is None:
    from jtwin import __version__
    header["jtwin_version"] = __version__
  # both are made first and written one after the other: an interrupted
  # rendering (the figures take the time) leaves neither file
  html = _html(results, real, synth, header).encode("utf-8")
  json_bytes = to_json(results, header).encode("utf-8")
  json_path = plots.write_atomic(f"{prefix}.json", json_bytes)
  html_path = plots.write_atomic(f"{prefix}.html", html)
  return [json_path, html_path]
