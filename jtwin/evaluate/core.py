"""`evaluate`: how close is a synthetic twin to the real data?"""
from __future__ import annotations

import time
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from jtwin.evaluate import encoding, metrics, propensity
from jtwin.evaluate.utility import utility

__all__ = ["evaluate"]


def _numeric_columns(real: pd.DataFrame, categorical: set) -> list[str]:
  """Numeric, non-bool, non-constant columns not declared categorical."""
  return [name for name in real.columns
          if name not in categorical
          and pd.api.types.is_numeric_dtype(real[name])
          and not pd.api.types.is_bool_dtype(real[name])
          and real[name].nunique(dropna=True) > 1]


def _w1_columns(coders, numeric: list[str], declared: set) -> set:
  """Columns that get a W1 ratio: binned, or declared numeric, and numeric.

  A few-valued integer column (education_num) is categorical: its codes are
  labels, so it gets no W1 ratio unless declared numeric.
  """
  return {c.name for c in coders
          if c.name in numeric and (c.kind == "numeric" or c.name in declared)}


def _upper(matrix: np.ndarray) -> np.ndarray:
  return matrix[np.triu_indices(matrix.shape[0], k=1)]


def _nan_stats(values: np.ndarray) -> tuple[float, float]:
  values = values[np.isfinite(values)]
  if values.size == 0:
    return float("nan"), float("nan")
  return float(values.mean()), float(values.max())


def _w1_ratio(real: pd.Series, synth: pd.Series,
              rng: np.random.Generator) -> tuple[float, float, float]:
  r = pd.to_numeric(real, errors="coerce").to_numpy(float)
  s = pd.to_numeric(synth, errors="coerce").to_numpy(float)
  r = r[np.isfinite(r)]
  s = s[np.isfinite(s)]
  nan = float("nan")
  if r.size < 4 or s.size == 0 or not r.std() > 0:
    return nan, nan, nan
  loc, scale = r.mean(), r.std()
  r, s = (r - loc) / scale, (s - loc) / scale
  w1 = metrics.wasserstein1(r, s)
  perm = rng.permutation(r.size)
  half = r.size // 2
  base = metrics.wasserstein1(r[perm[:half]], r[perm[half:]])
  return w1, base, (w1 / base if base > 0 else nan)


MAX_MARGINAL_PAIRS = 10_000   # 2-way TVD and Cramér's V: a seeded sample of pairs above this
MAX_MATRIX_COLUMNS = 150      # association matrices in the result (and report) up to this


def first_infinite(table: pd.DataFrame):
  """(column, how many, first row position) of the first numeric column holding
  +-inf, or None (bins between the real minimum and maximum would be undefined;
  NaN, a missing value, is fine)."""
  for column in table.columns:
    x = table[column]
    if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
      bad = np.isinf(x.to_numpy(dtype=float, na_value=np.nan))
      if bad.any():
        return column, int(bad.sum()), int(np.argmax(bad))
  return None


def _check_finite(table: pd.DataFrame, name: str) -> None:
  found = first_infinite(table)
  if found is not None:
    column, count, row = found
    raise ValueError(f"the {name} table's column '{column}' has {count} infinite value(s) "
                     f"(the first in row {row}); give finite numbers, or empty cells for "
                     "missing values")


def evaluate(real: pd.DataFrame, synth: pd.DataFrame, *,
             test: Optional[pd.DataFrame] = None,
             target: Optional[str] = None,
             bins: encoding.Bins = None,
             categorical: Optional[Iterable[str]] = None,
             numeric: Optional[Iterable[str]] = None,
             seed: int = 0, max_triples: int = 200,
             max_pairs: int = 300,
             max_marginal_pairs: int = MAX_MARGINAL_PAIRS,
             max_levels: Optional[int] = encoding.DEFAULT_MAX_LEVELS,
             max_model_rows: Optional[int] = propensity.MAX_ROWS,
             backend: str = "auto") -> dict:
  """Fidelity, distinguishability and (with a target) utility of a twin.

  Both tables hold decoded values (original labels, NaN for missing). Only
  the columns of `real` that are also in `synth` are compared, in `real`'s
  order. Every column is encoded once to integer codes (see
  `jtwin.evaluate.encoding`): numeric columns with more than 20 distinct
  real values are cut into 20 equal-width bins between the real minimum and
  maximum (or `bins`), other columns are categorical, with at most
  `max_levels` categories (the most frequent real ones; the rest pooled as
  "(other)"), missing is its own category. Memory therefore grows with
  rows x columns, not with the number of distinct values.

  Metrics (keys of the returned dict):

  * `tvd_{1,2,3}way_{mean,max}`: total variation distance of the 1-way, all
    2-way and (a seeded sample of `max_triples`) 3-way marginals.
  * `missing_abs_error_{mean,max}`: |missing rate real - synthetic|.
  * `cramers_v_diff_{mean,max}`: |Cramér's V real - synthetic| over all
    column pairs (codes); `pearson_diff_{mean,max}` over numeric pairs.
  * `pmse`, `pmse_null`, `pmse_ratio`: main-effects logistic pMSE;
    `pmse_pairs*`: with pairwise interactions (see
    `jtwin.evaluate.propensity`).
  * `w1_ratio_{mean,median}`: per numeric column (binned, or named in
    `numeric`; never one declared categorical), W1(real, synth) on
    standardised values divided by W1 between two random halves of real.
  * with `target`: `utility_*`, `sra` and `per_model` (see
    `jtwin.evaluate.utility.utility`). Without `test`, a seeded 30% of the
    real rows is held out for testing and the real-trained models use the
    other 70%; `utility_test_source` says which was used.
  * `per_column`: a table {column: {kind, tvd, missing_real,
    missing_synth, missing_abs_error, w1, w1_halves, w1_ratio}};
    `association`: the Cramér's V and Pearson matrices; `settings`;
    `seconds`: timings.

  Args:
    real: the real data.
    synth: the synthetic data.
    test: real rows held out from the generator, for utility.
    target: a categorical column to predict, for utility.
    bins: binning of numeric columns (see `encoding.make_coders`).
    categorical: columns to treat as categorical whatever their dtype (no
      W1 ratio, no Pearson r).
    numeric: columns declared numeric (a model file's Normal, Poisson and
      binned columns): they get a W1 ratio even with few distinct values.
    seed: seeds the triple and pair samples, the real halves of the W1
      baseline and the hold-out split.
    max_triples: most 3-way marginals compared.
    max_pairs: most column pairs in the interaction pMSE model.
    max_marginal_pairs: most column pairs whose 2-way TVD and Cramér's V are
      computed (a seeded sample when there are more: 142 columns and up;
      the V matrices are NaN for the others).
    max_levels: most categories kept per categorical column (None: all).
    max_model_rows: most rows of each table used by the pMSE and utility
      models (a seeded subsample; None: all). Marginals, associations and
      W1 always use every row.
    backend: utility classifiers: "auto" (scikit-learn if installed),
      "sklearn" or "numpy" (jtwin's own).

  Returns:
    A JSON-serialisable dict (NaN marks an undefined value).

  Raises:
    ValueError: a table that is not a DataFrame or has no rows, no common
      columns, infinite values, a bad target or an unknown backend.

  Privacy:
    Reads the real data and returns non-private statistics of it: for the
    data holder only, never for release.
  """
  clock = {"start": time.perf_counter()}
  rng = np.random.default_rng(seed)
  for name, table in (("real", real), ("synth", synth), ("test", test)):
    if table is not None and not isinstance(table, pd.DataFrame):
      raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
  for name, table in (("real", real), ("synthetic", synth), ("test", test)):
    if table is not None and len(table) == 0:
      raise ValueError(f"the {name} table has no rows")
  if backend not in ("auto", "sklearn", "numpy"):
    raise ValueError(f"backend must be 'auto', 'sklearn' or 'numpy', got {backend!r}")
  columns = [c for c in real.columns if c in synth.columns]
  if not columns:
    raise ValueError("the real and synthetic tables have no column in common")
  real, synth = real[columns], synth[columns]
  if target is not None and target not in columns:
    raise ValueError(f"target column {target!r} is not in both tables")
  if test is not None:
    missing = [c for c in columns if c not in test.columns]
    if missing:
      raise ValueError(f"the test table lacks column(s) {missing}")
    test = test[columns]
  for name, table in (("real", real), ("synthetic", synth), ("test", test)):
    if table is not None:
      _check_finite(table, name)
  others = [synth] + ([test] if test is not None else [])
  categorical = set(categorical or ())
  declared_numeric = set(numeric or ()) - categorical
  coders = encoding.make_coders(real, others, bins=bins,
                                categorical=categorical,
                                max_levels=max_levels)
  sizes = [c.num_codes for c in coders]
  codes_r = encoding.encode_frame(real, coders)
  codes_s = encoding.encode_frame(synth, coders)
  d = len(columns)
  tvd1 = metrics.kway_tvds(codes_r, codes_s, sizes, [(j,) for j in range(d)])
  pairs = metrics.sample_subsets(d, 2, max_marginal_pairs, rng)
  tvd2 = metrics.kway_tvds(codes_r, codes_s, sizes, pairs)
  triples = metrics.sample_subsets(d, 3, max_triples, rng)
  tvd3 = metrics.kway_tvds(codes_r, codes_s, sizes, triples)
  miss_r = real.isna().mean().to_numpy(float)
  miss_s = synth.isna().mean().to_numpy(float)
  miss_err = np.abs(miss_r - miss_s)
  clock["marginals"] = time.perf_counter()

  every = len(pairs) == d * (d - 1) // 2       # else a sample: the other entries are NaN
  v_real = metrics.cramers_v_matrix(codes_r, sizes, None if every else pairs)
  v_synth = metrics.cramers_v_matrix(codes_s, sizes, None if every else pairs)
  numeric = _numeric_columns(real, categorical)
  w1_columns = _w1_columns(coders, numeric, declared_numeric)
  p_real = metrics.pearson_matrix(real[numeric])
  p_synth = metrics.pearson_matrix(synth[numeric])
  clock["association"] = time.perf_counter()

  out = {"n_real": len(real), "n_synth": len(synth), "columns": columns}
  for k, values in ((1, tvd1), (2, tvd2), (3, tvd3)):
    mean, top = _nan_stats(values)
    out[f"tvd_{k}way_mean"], out[f"tvd_{k}way_max"] = mean, top
  out["tvd_3way_num_triples"] = len(triples)
  out["tvd_2way_num_pairs"] = len(pairs)
  out["missing_abs_error_mean"], out["missing_abs_error_max"] = (
      float(miss_err.mean()), float(miss_err.max()))
  out["cramers_v_diff_mean"], out["cramers_v_diff_max"] = _nan_stats(
      np.abs(_upper(v_real) - _upper(v_synth)))
  out["pearson_diff_mean"], out["pearson_diff_max"] = _nan_stats(
      np.abs(_upper(p_real) - _upper(p_synth)))

  out.update(propensity.propensity_mse(codes_r, codes_s, sizes,
                                       max_rows=max_model_rows, seed=seed))
  ordered = [c.kind == "numeric" for c in coders]
  out.update(propensity.propensity_mse_pairs(
      codes_r, codes_s, sizes, ordered, max_pairs=max_pairs, seed=seed,
      max_rows=max_model_rows))
  clock["pmse"] = time.perf_counter()

  per_column = {}
  w1_ratios = []
  for j, coder in enumerate(coders):
    row = {"kind": coder.kind, "tvd": float(tvd1[j]),
           "missing_real": float(miss_r[j]), "missing_synth": float(miss_s[j]),
           "missing_abs_error": float(miss_err[j])}
    if coder.name in w1_columns:
      w1, base, ratio = _w1_ratio(real[coder.name], synth[coder.name], rng)
      row.update(w1=w1, w1_halves=base, w1_ratio=ratio)
      if np.isfinite(ratio):
        w1_ratios.append(ratio)
    per_column[coder.name] = row
  out["w1_ratio_mean"] = float(np.mean(w1_ratios)) if w1_ratios else np.nan
  out["w1_ratio_median"] = (float(np.median(w1_ratios)) if w1_ratios
                            else np.nan)
  clock["w1"] = time.perf_counter()

  if target is not None:
    if test is None:
      perm = rng.permutation(len(real))
      cut = int(round(0.7 * len(real)))
      train, test_rows = real.iloc[perm[:cut]], real.iloc[perm[cut:]]
      source = ("held-out 30% of the real data (no test table given; the "
                "twin may have been trained on these rows, which flatters it)")
    else:
      train, test_rows = real, test
      source = "the given real test table"
    out.update(utility(train, synth, test_rows, target, coders,
                       backend=backend, max_rows=max_model_rows, seed=seed))
    out["utility_test_source"] = source
  clock["utility"] = time.perf_counter()

  out["per_column"] = per_column
  if d <= MAX_MATRIX_COLUMNS:
    out["association"] = {
        "columns": columns,
        "cramers_v_real": v_real.tolist(), "cramers_v_synth": v_synth.tolist(),
        "pearson_columns": numeric,
        "pearson_real": p_real.tolist(), "pearson_synth": p_synth.tolist(),
    }
  else:      # d^2 entries x 4 would dominate the report (1,000 columns: 85 MB of JSON)
    out["association"] = {"columns": columns, "omitted": (
        f"{d} columns: the matrices are left out of the report above "
        f"{MAX_MATRIX_COLUMNS} columns (their summaries are kept)")}
  out["settings"] = {
      "seed": seed, "target": target, "max_triples": max_triples,
      "max_pairs": max_pairs, "max_marginal_pairs": max_marginal_pairs,
      "binned_columns": {c.name: c.edges.tolist() for c in coders
                         if c.kind == "numeric"},
      "max_levels": max_levels, "max_model_rows": max_model_rows,
      "capped_columns": [c.name for c in coders if c.other],
      "encoded_width": int(sum(sizes)),
  }
  marks = list(clock.items())
  out["seconds"] = {name: t - prev for (_, prev), (name, t)
                    in zip(marks[:-1], marks[1:])}
  out["seconds"]["total"] = marks[-1][1] - marks[0][1]
  return out
