"""Machine-learning utility: train on synthetic, test on real.

Every utility model (scikit-learn's when it is installed, else ours; see
`classifiers.utility_models`) is trained once on the real training table and
once on the synthetic table (features: sparse one-hot codes of all other
columns, numeric columns binned and many-valued columns capped as for the
marginals) and both are scored on the same real test rows. Each of the three
tables is first cut to a seeded sample of at most `max_rows` rows (default
100,000). Reported per model: accuracy and AUROC (binary
target; macro one-vs-rest AUROC for more classes). The synthetic ranking
agreement (SRA) is the fraction of model pairs that the synthetic-trained
AUROCs order the same way as the real-trained ones.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from jtwin.evaluate import classifiers, metrics
from jtwin.evaluate.encoding import ColumnCoder, encode_frame, one_hot
from jtwin.evaluate.propensity import MAX_ROWS

__all__ = ["utility"]


def _scores(pred: np.ndarray, y: np.ndarray, num_classes: int) -> dict:
  if num_classes == 2:
    accuracy = float(np.mean((pred > 0) == (y == 1)))
    auc = metrics.auroc(y == 1, pred)
  else:
    accuracy = float(np.mean(np.argmax(pred, axis=1) == y))
    aucs = [metrics.auroc(y == k, pred[:, k]) for k in range(num_classes)]
    aucs = [a for a in aucs if np.isfinite(a)]
    auc = float(np.mean(aucs)) if aucs else float("nan")
  return {"accuracy": accuracy, "auroc": auc}


def _features(frame: pd.DataFrame, target_coder: ColumnCoder,
              feature_coders: Sequence[ColumnCoder],
              max_rows: Optional[int] = None, seed: int = 0):
  if max_rows is not None and 0 < max_rows < len(frame):
    rng = np.random.default_rng(seed)
    frame = frame.iloc[np.sort(rng.choice(len(frame), max_rows,
                                          replace=False))]
  y = encode_frame(frame, [target_coder])[:, 0]
  keep = y < target_coder.num_codes - 1  # drop rows with a missing target
  sizes = [c.num_codes for c in feature_coders]
  x = one_hot(encode_frame(frame[keep], feature_coders), sizes)
  return x, y[keep], sizes


def utility(train: pd.DataFrame, synth: pd.DataFrame, test: pd.DataFrame,
            target: str, coders: Sequence[ColumnCoder],
            models: Optional[Sequence[classifiers.Classifier]] = None, *,
            backend: str = "auto", max_rows: Optional[int] = MAX_ROWS,
            seed: int = 0) -> dict:
  """Train-on-synthetic / test-on-real scores of several classifiers.

  Args:
    train: real training rows (the real-trained reference models).
    synth: synthetic rows.
    test: real test rows (never used for training).
    target: the target column; it must be categorical in `coders`.
    coders: coders of all columns (see `encoding.make_coders`).
    models: the classifiers; the first is the headline model. Default:
      `classifiers.utility_models(backend)`.
    backend: "auto" (scikit-learn if installed, else ours), "sklearn" or
      "numpy"; ignored when `models` is given.
    max_rows: most rows used of each table (None: all).
    seed: seed of the row subsamples.

  Returns:
    A dict: "utility_accuracy_real", "utility_accuracy_synth",
    "utility_auroc_real", "utility_auroc_synth" (headline model, trained on
    real / synthetic), "utility_accuracy_majority" (predicting the real
    training majority class), "sra", "utility_headline_model",
    "utility_positive_class" (binary), "utility_num_classes",
    "utility_backend" (which classifiers), "utility_rows" (training rows
    used: real, synthetic) and "per_model": {name: {accuracy_real,
    accuracy_synth, auroc_real, auroc_synth}}.

  Raises:
    ValueError: the target is not a column, is numeric (binned), or has
      fewer than two classes.
  """
  by_name = {c.name: c for c in coders}
  if target not in by_name:
    raise ValueError(f"target column {target!r} is not among the evaluated "
                     f"columns")
  target_coder = by_name[target]
  if target_coder.kind != "categorical":
    raise ValueError(f"target column {target!r} is numeric with many values; "
                     "utility needs a categorical target")
  num_classes = len(target_coder.categories)
  if num_classes < 2:
    raise ValueError(f"target column {target!r} has fewer than two classes")
  if models is None:
    models, description = classifiers.utility_models(backend)
  else:
    description = "given models"
  feature_coders = [c for c in coders if c.name != target]
  x_real, y_real, sizes = _features(train, target_coder, feature_coders,
                                    max_rows, seed)
  x_synth, y_synth, _ = _features(synth, target_coder, feature_coders,
                                  max_rows, seed + 1)
  x_test, y_test, _ = _features(test, target_coder, feature_coders,
                                max_rows, seed + 2)
  for what, y in (("real training", y_real), ("synthetic", y_synth), ("test", y_test)):
    if len(y) == 0:
      raise ValueError(f"the {what} rows have no value in the target column {target!r} "
                       "(every cell is missing)")
  if len(np.unique(y_real)) < 2:
    import warnings
    warnings.warn(f"the real training rows have one class of {target!r} only: the "
                  "real-trained scores and the ranking agreement are undefined (n/a)")
  per_model = {}
  for model in models:
    row = {}
    for source, x, y in (("real", x_real, y_real),
                         ("synth", x_synth, y_synth)):
      scorer = classifiers.fit_one_vs_rest(model, x, y, num_classes, sizes)
      for key, value in _scores(scorer(x_test), y_test, num_classes).items():
        row[f"{key}_{source}"] = value
    per_model[model.name] = row
  head = per_model[models[0].name]
  majority = int(np.argmax(np.bincount(y_real, minlength=num_classes)))
  out = {
      "utility_accuracy_real": head["accuracy_real"],
      "utility_accuracy_synth": head["accuracy_synth"],
      "utility_auroc_real": head["auroc_real"],
      "utility_auroc_synth": head["auroc_synth"],
      "utility_accuracy_majority": float(np.mean(y_test == majority)),
      "sra": metrics.synthetic_ranking_agreement(
          [r["auroc_real"] for r in per_model.values()],
          [r["auroc_synth"] for r in per_model.values()]),
      "utility_headline_model": models[0].name,
      "utility_num_classes": num_classes,
      "utility_num_test_rows": int(len(y_test)),
      "utility_backend": description,
      "utility_rows": [int(len(y_real)), int(len(y_synth))],
      "per_model": per_model,
  }
  if num_classes == 2:
    out["utility_positive_class"] = str(target_coder.categories[1])
  return out
