"""Loading a custom model from a `.py` file (twinify's "NumPyro model file", in JAX).

The file is ordinary Python that defines

  * `model`: a `jtwin.models.Model`, or `make_model(columns)` returning one
    (`columns` is the list of data columns after `preprocess`);
  * optionally `preprocess(df) -> DataFrame` (must return numeric columns;
    NaN marks a missing cell) and `postprocess(df) -> DataFrame`, which maps
    synthetic rows back to the original representation, as in twinify.

Privacy: `preprocess` sees the raw private data. Whatever it derives from the
data (category sets, scales, ...) is not covered by the DP guarantee; jtwin
says so when it runs one.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import Callable, NamedTuple, Optional

import numpy as np

from jtwin.errors import JtwinInputError
from jtwin.models.interface import Model


def _numpyro_message(path: str) -> Optional[str]:
  """The error for a twinify NumPyro model file, or None if `path` is not one."""
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      source = f.read()
  except OSError:
    return None
  if not re.search(r"^\s*(import|from)\s+(numpyro|d3p|twinify)\b", source, re.MULTILINE):
    return None
  return (f"{path}: is a twinify NumPyro model file; jtwin does not run NumPyro models: "
          "write the model as a jtwin.models.Model in plain jax.numpy (docs/custom_models.md "
          "shows how, with a runnable example), or describe the columns in a model.txt")


class CustomModel(NamedTuple):
  path: str
  make_model: Callable[[list], Model]
  preprocess: Optional[Callable]
  postprocess: Optional[Callable]


def load_custom_model(path: str) -> CustomModel:
  """Imports a custom model file.

  Raises:
    JtwinInputError: the file is missing, fails to import, or defines
      neither `model` nor `make_model` (the message names the file).
  """
  if not os.path.isfile(path):
    raise JtwinInputError(f"{path}: no such model file")
  numpyro = _numpyro_message(path)
  name = "jtwin_custom_model_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # the user's code failed: say where, briefly
    if numpyro and isinstance(e, ImportError):
      raise JtwinInputError(numpyro) from None
    raise JtwinInputError(f"{path}: importing the model file failed: "
                          f"{e.__class__.__name__}: {e}") from None
  finally:
    sys.modules.pop(name, None)
  model = getattr(module, "model", None)
  factory = getattr(module, "make_model", None)
  if isinstance(model, Model):
    make = lambda columns: model
  elif callable(factory):
    def make(columns):
      built = factory(list(columns))
      if not isinstance(built, Model):
        raise JtwinInputError(f"{path}: make_model() must return a jtwin.models.Model, "
                              f"got {type(built).__name__}")
      return built
  elif numpyro and callable(model):
    raise JtwinInputError(numpyro)
  elif callable(model):
    raise JtwinInputError(f"{path}: 'model' is a function, not a jtwin.models.Model; define "
                          "'make_model(columns)' returning a Model, or set 'model' to one; "
                          "see docs/custom_models.md")
  else:
    raise JtwinInputError(f"{path}: defines neither 'model' (a jtwin.models.Model) nor "
                          "'make_model(columns)'; see docs/custom_models.md")
  for fn in ("preprocess", "postprocess"):
    f = getattr(module, fn, None)
    if f is not None and not callable(f):
      raise JtwinInputError(f"{path}: '{fn}' must be a function")
  return CustomModel(path, make, getattr(module, "preprocess", None),
                     getattr(module, "postprocess", None))


def make_custom_model(custom: CustomModel, columns: list, path: str) -> Model:
  """`custom.make_model(columns)`; a failure is a `JtwinInputError` naming `path`."""
  try:
    return custom.make_model(columns)
  except JtwinInputError:
    raise
  except Exception as e:
    raise JtwinInputError(f"{path}: make_model() failed: {e.__class__.__name__}: {e}") from None


def custom_decoder(custom: CustomModel, columns: list, path: str) -> Callable:
  """`decode(values, observed, rng=None) -> DataFrame` of a custom model's samples.

  Missing cells become NaN, then `postprocess` (if any) runs. A model whose
  `sample` gives the wrong number of columns or non-finite observed values,
  or a `postprocess` that fails or returns no DataFrame, is a
  `JtwinInputError` naming `path`.
  """
  import pandas as pd

  def decode(values, observed, rng=None):
    del rng
    v, o = np.asarray(values, np.float64), np.asarray(observed, bool)
    if v.size == 0:
      v, o = v.reshape(0, len(columns)), o.reshape(0, len(columns))
    if v.ndim != 2 or v.shape[1] != len(columns) or o.shape != v.shape:
      raise JtwinInputError(f"{path}: sample() returned values {v.shape} and observed "
                            f"{o.shape}; expected [rows, {len(columns)}] for the columns "
                            f"{', '.join(columns)}")
    if not np.all(np.isfinite(v[o])):
      raise JtwinInputError(f"{path}: sample() returned non-finite values where observed; "
                            "fix the model")
    out = pd.DataFrame(np.where(o, v, np.nan), columns=columns)
    if custom.postprocess is None:
      return out
    try:
      out = custom.postprocess(out)
    except Exception as e:
      raise JtwinInputError(f"{path}: postprocess() failed: {e.__class__.__name__}: "
                            f"{e}") from None
    if not isinstance(out, pd.DataFrame):
      raise JtwinInputError(f"{path}: postprocess() must return a pandas DataFrame, got "
                            f"{type(out).__name__}")
    return out
  return decode
