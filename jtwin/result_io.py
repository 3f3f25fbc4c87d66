"""Result files: everything `jtwin sample` needs, without the data and without pickle.

A result is one `.npz` file (read with `allow_pickle=False`) holding
  * the posterior arrays, named `loc/<param>` and `raw_scale/<param>`;
  * `meta.json`, a UTF-8 JSON document (stored as a uint8 array): format
    version, jtwin version, the model description (automatic mixture: K and
    the features; custom: the model file's path and SHA-256), the public
    domain and encoders (`jtwin.data.Domain`), the privacy record, and the
    list of items taken from the private data without noise.

It never contains the seed (whoever knows the seed can recompute the noise),
per-epoch diagnostics or any other non-private statistic.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
from typing import Any, NamedTuple, Optional

import numpy as np

from jtwin._atomic import atomic_write
from jtwin.errors import JtwinInputError

FORMAT = "jtwin-result"
FORMAT_VERSION = 1


class LoadedResult(NamedTuple):
  """A result file's contents.

  Attributes:
    posterior: `jtwin.models.MeanFieldParams` of numpy arrays (dicts).
    meta: the JSON metadata (dict).
    domain: `jtwin.data.Domain` or None (custom models without a domain).
  """
  posterior: Any
  meta: dict
  domain: Any


def _clean(x):
  """JSON-safe copy: inf/nan floats become strings."""
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  if isinstance(x, dict):
    return {k: _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    return _clean(x.item())
  return x


def file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def save_result(path: str, posterior, *, model_info: dict, privacy, domain=None,
                inferred_from_data: Optional[list] = None, extra: Optional[dict] = None) -> None:
  """Writes a result file atomically.

  Args:
    path: output path (conventionally `PREFIX.jtwin.npz`).
    posterior: `MeanFieldParams` whose loc/raw_scale are dicts of arrays.
    model_info: {"kind": "mixture", "num_components": K, "features": [...]}
      or {"kind": "custom", "path": ..., "sha256": ...}.
    privacy: `jtwin.infer.PrivacyRecord`.
    domain: `jtwin.data.Domain` or None.
    inferred_from_data: items taken from the private data without noise.
    extra: more JSON-able metadata.
  """
  from jtwin import __version__
  from jtwin._atomic import check_output_path
  check_output_path(path)     # a directory, a missing folder: one clear error, nothing written
  arrays = {}
  for part in ("loc", "raw_scale"):
    tree = getattr(posterior, part)
    if not isinstance(tree, dict):
      raise TypeError("posterior parameters must be dicts of arrays to be saved")
    for name, value in tree.items():
      arrays[f"{part}/{name}"] = np.asarray(value)
  meta = {
      "format": FORMAT, "format_version": FORMAT_VERSION, "jtwin_version": __version__,
      "model": model_info, "privacy": privacy._asdict() if hasattr(privacy, "_asdict") else privacy,
      "domain": domain.to_dict() if domain is not None else None,
      "inferred_from_data": list(inferred_from_data or []),
      **(extra or {}),
  }
  blob = json.dumps(_clean(meta), indent=1, sort_keys=True).encode("utf-8")
  arrays["meta.json"] = np.frombuffer(blob, np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  with atomic_write(path, "wb") as f:
    f.write(buffer.getvalue())


def load_result(path: str) -> LoadedResult:
  """Reads a result file (no pickle is ever loaded).

  Raises:
    JtwinInputError: missing, unreadable or not a jtwin result file.
  """
  from jtwin.data import Domain
  from jtwin.models.posterior import MeanFieldParams
  if not os.path.isfile(path):
    raise JtwinInputError(f"{path}: no such result file (it is written by 'jtwin fit' as "
                          "PREFIX.jtwin.npz)")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # zipfile/ValueError/OSError: not an npz
    raise JtwinInputError(f"{path}: not a readable jtwin result file ({e.__class__.__name__})") from None
  if "meta.json" not in arrays:
    raise JtwinInputError(f"{path}: not a jtwin result file (no meta.json entry)")
  try:
    meta = json.loads(arrays.pop("meta.json").tobytes().decode("utf-8"))
  except ValueError:
    raise JtwinInputError(f"{path}: corrupt metadata in result file") from None
  if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
    raise JtwinInputError(f"{path}: corrupt metadata in result file (no model description)")
  try:
    version = int(meta.get("format_version", 0))
  except (TypeError, ValueError):
    version = None
  if meta.get("format") != FORMAT or version is None or version > FORMAT_VERSION:
    raise JtwinInputError(f"{path}: unsupported result format {meta.get('format')!r} "
                          f"version {meta.get('format_version')!r}; upgrade jtwin")
  loc = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("loc/")}
  raw = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("raw_scale/")}
  for name, value in [*loc.items(), *raw.items()]:
    if value.dtype.kind != "f" or not np.all(np.isfinite(value)):
      raise JtwinInputError(f"{path}: corrupt result file (posterior parameter '{name}' is "
                            "not all finite floating-point numbers)")
  try:
    domain = Domain.from_dict(meta["domain"]) if meta.get("domain") else None
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise JtwinInputError(f"{path}: corrupt result file (its domain: "
                          f"{e.__class__.__name__} {e})") from None
  return LoadedResult(MeanFieldParams(loc, raw), meta, domain)


def provenance_warnings(meta: dict) -> list:
  """What a result's epsilon does not cover, for a warning wherever it is loaded:
  a non-private fit, and domain items read off the private data."""
  from jtwin.data import inferred_warning
  out = []
  privacy = meta.get("privacy") or {}
  if privacy.get("mode") == "non-private" or str(privacy.get("epsilon")) == "inf":
    out.append("this result was fitted with NO differential privacy (--no-privacy): what is "
               "sampled from it is NOT private; do not release it")
  inferred = meta.get("inferred_from_data") or []
  if inferred:
    out.append("this result's model uses items " + inferred_warning(inferred))
  return out


class Rebuilt(NamedTuple):
  """A loaded result made ready to sample from (see `rebuild`).

  Attributes:
    model: the `jtwin.models.Model` the result was fitted with.
    posterior: `MeanFieldParams` in the model's parameter structure (jax arrays).
    decode: `decode(values, observed, rng=None) -> DataFrame`, the inverse of
      the encoding (`rng`: a numpy Generator for within-cell draws).
  """
  model: Any
  posterior: Any
  decode: Any


def rebuild(loaded: LoadedResult, *, custom_model_path: Optional[str] = None,
            source: str = "result file") -> Rebuilt:
  """The model, posterior and decoder of a loaded result, without the data.

  Works for results of `jtwin fit` (automatic mixture or custom model) and
  `jtwin napsumq`. Rebuilding reads only the result file (and, for a custom
  model, its `.py` file): it costs no privacy.

  Args:
    loaded: `load_result(path)`.
    custom_model_path: the `.py` file of a custom model (default: the path
      stored in the result). Ignored for the automatic mixture.
    source: the result's name in error messages.

  Returns:
    A `Rebuilt` (model, posterior, decode).

  Raises:
    JtwinInputError: the custom model file is missing, or the result does
      not match the model.

  Examples:
    >>> from jtwin.result_io import load_result, rebuild   # doctest: +SKIP
    >>> model, posterior, decode = rebuild(load_result("out.jtwin.npz"))  # doctest: +SKIP
  """
  try:
    return _rebuild(loaded, custom_model_path, source)
  except JtwinInputError:
    raise
  except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
    raise JtwinInputError(f"{source}: corrupt or unsupported jtwin result file "
                          f"({e.__class__.__name__}: {e})") from None


def _rebuild(loaded: LoadedResult, custom_model_path, source) -> Rebuilt:
  import warnings
  import pandas as pd
  info = loaded.meta["model"]
  if info["kind"] not in ("mixture", "custom"):
    raise JtwinInputError(f"{source}: unsupported model kind {info['kind']!r} in the result "
                          "file; upgrade jtwin")
  if info["kind"] == "mixture":
    from jtwin.models import make_mixture_model
    from jtwin.models.interface import Feature
    model = make_mixture_model([Feature(*f) for f in info["features"]], info["num_components"])
    if info.get("method") == "napsumq":
      decode = cells_decoder(info)
    else:
      from jtwin import data as jdata
      features = [Feature(*f) for f in info["features"]]
      if loaded.domain is None or list(loaded.domain.features()) != features:
        raise JtwinInputError(f"{source}: corrupt result file (its domain does not match "
                              "its model's columns)")
      decode = lambda v, o, rng=None: jdata.decode(v, o, loaded.domain, rng=rng)
  else:
    from jtwin.custom import custom_decoder, load_custom_model, make_custom_model
    path = custom_model_path or info["path"]
    if not custom_model_path and not os.path.isfile(path):
      # result files store the model's file name only: look beside the result
      path = os.path.join(os.path.dirname(os.path.abspath(source)), os.path.basename(path))
    if not os.path.isfile(path):
      raise JtwinInputError(f"{source}: was fitted with the custom model {info['path']}, "
                            "which is not there (nor beside the result); pass it with "
                            "--model MODEL.py, or custom_model_path= to jtwin.load")
    if not str(path).endswith(".py"):
      raise JtwinInputError(f"{path}: the custom model must be its .py file (--model "
                            "MODEL.py, or custom_model_path=)")
    if file_sha256(path) != info["sha256"]:
      warnings.warn(f"{path} differs from the model file the result was fitted with")
    custom = load_custom_model(path)
    model = make_custom_model(custom, list(info["columns"]), path)
    decode = custom_decoder(custom, list(info["columns"]), path)
  return Rebuilt(model, rebuild_posterior(model, loaded.posterior, source), decode)


def cells_decoder(info: dict):
  """`decode(values, observed, rng=None)` for a napsumq result's model description
  (its cells: `jtwin.marginals.cells.CellColumn`)."""
  from jtwin.marginals.cells import CellColumn, decode_cells
  from jtwin.marginals.derived import DerivedColumn
  cells = tuple(CellColumn.from_dict(c) for c in info["cells"])
  derived = tuple(DerivedColumn.from_dict(d) for d in info.get("derived", ()))
  return lambda v, o, rng=None: decode_cells(np.rint(v).astype(np.int64), o, cells,
                                             rng if rng is not None else np.random.default_rng(0),
                                             derived=derived)


def rebuild_posterior(model, saved_posterior, source: str = "the result file"):
  """Puts saved posterior leaves (dicts of arrays) back into `model`'s structure.

  Raises:
    JtwinInputError: the saved parameters do not match the model.
  """
  import jax
  import jax.numpy as jnp
  from jtwin.models.posterior import MeanFieldParams
  # only the structure and shapes of the parameters are needed: no values drawn
  template = jax.eval_shape(model.init, jax.random.key(0))
  leaves, treedef = jax.tree.flatten(template)

  def build(saved):
    names = sorted(saved)
    if isinstance(template, dict) and set(saved) == set(template):
      return {k_: jnp.asarray(saved[k_]) for k_ in template}
    if len(names) != len(leaves):
      raise JtwinInputError(f"{source}: does not match the model (parameter count)")
    return jax.tree.unflatten(treedef, [jnp.asarray(saved[k_]) for k_ in names])

  post = MeanFieldParams(build(saved_posterior.loc), build(saved_posterior.raw_scale))
  for a, b in zip(jax.tree.leaves(post.loc), leaves):
    if a.shape != tuple(b.shape):
      raise JtwinInputError(f"{source}: does not match the model (parameter shapes)")
  return post
