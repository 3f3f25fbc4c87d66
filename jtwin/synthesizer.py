"""The high-level API: one object that fits, samples, saves and loads.

In the conventions of SDV (`fit(df)`, `sample(n)`, `save(path)`,
`load(path)`) and smartnoise-synth (`Synthesizer.create("mst",
epsilon=...).fit_sample(df)`), on top of jtwin's pure functions
(`jtwin.fit`, `jtwin.fit_marginals`, `jtwin.sample_synthetic`, ...), which
stay the low-level layer::

  import jtwin
  synth = jtwin.Synthesizer("model.txt", epsilon=1.0)   # or method="napsumq"
  synth.fit(df)                  # df: a pandas DataFrame of the private data
  print(synth.privacy)           # the certified (epsilon, delta) record
  twin = synth.sample(1000)      # a new random seed on every call
  synth.save("twin.jtwin.npz")   # npz + JSON, no pickle, no data, no seed
  again = jtwin.load("twin.jtwin.npz")

The result file is the one `jtwin fit` and `jtwin napsumq` write, so
`jtwin sample` reads it too, and `jtwin.load` reads theirs.
"""
from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np

from jtwin.errors import JtwinInputError

__all__ = ["Synthesizer", "fit", "load"]

METHODS = ("vi", "napsumq")
# purpose tags folded into the root key: the fit's keys and every sample()
# call's keys are distinct, so sampling never reuses the noise's keys
# (an explicit sample(seed=...) has its own tag)
_FIT_TAG, _SAMPLE_TAG, _SEEDED_SAMPLE_TAG = 0x6A746669, 0x6A74736D, 0x6A747373


# the options of `jtwin.fit` that the privacy plan takes, with `jtwin.fit`'s defaults
_PLAN_DEFAULTS = {"sampling_ratio": 0.01, "num_epochs": 200, "clipping_threshold": 1.0,
                  "noise_multiplier": None, "max_epsilon": None, "non_private": False,
                  "warm_start": 0.1}


# what `fit` passes itself: not options a user may give
_SET_BY_SYNTHESIZER = {"key", "model", "data", "frame", "spec", "epsilon", "delta", "privacy",
                       "num_components", "domain", "domain_epsilon", "check_delta", "source"}


def _check_arguments(method, epsilon, delta, num_components, options) -> None:
  """Refuses bad constructor arguments before any data is read (one clear line each)."""
  import difflib
  import inspect
  import numbers
  def real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
  if not (real(epsilon) and epsilon > 0):
    raise JtwinInputError(f"epsilon must be a finite number > 0, got {epsilon!r}")
  if delta is not None and not (real(delta) and 0 < delta < 1):
    raise JtwinInputError(f"delta must be a number in (0, 1) or None, got {delta!r}")
  if num_components is not None and not (isinstance(num_components, numbers.Integral)
                                         and not isinstance(num_components, bool)
                                         and num_components >= 1):
    raise JtwinInputError(f"num_components must be an integer >= 1 or None, got "
                          f"{num_components!r}")
  if method == "vi":
    from jtwin import infer
    known = set(_PLAN_DEFAULTS) | set(inspect.signature(infer.fit).parameters)
  else:
    from jtwin import napsumq
    known = {k for k in inspect.signature(napsumq._fit_marginals).parameters
             if not k.startswith("_")}
  known -= _SET_BY_SYNTHESIZER
  for name in options:
    if name not in known:
      near = difflib.get_close_matches(name, sorted(known), n=1)
      raise JtwinInputError(f"unknown option {name!r} for method {method!r}"
                            + (f" (did you mean {near[0]!r}?)" if near else "")
                            + f"; options: {', '.join(sorted(known))}")


def _model_source(model):
  """A `ModelSpec`, or the path of a `.py` custom model, from what the user gave."""
  from jtwin.spec import ModelSpec, parse_model_file, parse_model_text
  if isinstance(model, ModelSpec):
    return model
  if not isinstance(model, (str, os.PathLike)):
    raise TypeError("model must be a model file path, the text of a model file or a "
                    f"jtwin.spec.ModelSpec, got {type(model).__name__}")
  text = os.fspath(model)
  if "\n" not in text and os.path.isfile(text):
    return text if text.endswith(".py") else parse_model_file(text)
  if "\n" in text or ":" in text and not text.endswith((".txt", ".py")):
    return parse_model_text(text, path="<model text>")
  raise JtwinInputError(f"{text}: model file not found; give the path of a model file or "
                        "its text ('column : Distribution' lines)")


def _privacy_record(method: str, stored: dict):
  """The privacy record NamedTuple from a result file's JSON."""
  from jtwin.infer import PrivacyRecord
  from jtwin.napsumq import MarginalPrivacyRecord
  cls = MarginalPrivacyRecord if method == "napsumq" else PrivacyRecord

  def number(v):
    return float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v
  fields = {k: number(stored[k]) for k in cls._fields if k in stored}
  try:
    return cls(**fields)
  except TypeError:     # an older or newer record: keep the dict
    return dict(stored)


class Synthesizer:
  """A differentially private synthesizer for one table.

  Args:
    model: the model file's path (`model.txt`, or a custom `.py` model for
      method "vi"), its text, or a parsed `jtwin.spec.ModelSpec`.
    method: "vi" (DP variational inference of a mixture model, `jtwin.fit`,
      as `jtwin fit`) or "napsumq" (a mixture fitted to DP marginal queries,
      `jtwin.fit_marginals`, as `jtwin napsumq`).
    epsilon: target epsilon; the certified upper bound is at most this.
      Above 10 a warning says what such an epsilon means; above 100 it is
      refused unless `allow_large_epsilon`.
    delta: delta (default 0.1 / N, N the DP estimate of the row count, as on
      the command line). A delta above 1/N is refused unless
      `allow_large_delta`.
    seed: int seed of the fit and of `sample` (default: drawn from the OS). A
      known seed lets anyone recompute the noise: keep it secret.
    num_components: K mixture components (default 50 for "vi", 400 for
      "napsumq").
    drop_na: drop rows with a missing value in a modelled column.
    domain: where domain items the model file does not declare come from:
      "dp" (default, as `jtwin fit --domain dp`) releases them under DP from a
      share of epsilon (`public_spec` then declares them); "data" reads them
      off the data (NOT covered by epsilon; warned and listed in
      `inferred_from_data`).
    domain_epsilon: epsilon of the DP domain step (default: as the CLI's
      --domain_epsilon).
    group_clip: "vi": per-group clipping of the automatic mixture (False:
      one global clip, as twinify).
    allow_large_delta: accept delta > 1/N.
    allow_large_epsilon: accept epsilon > 100.
    **options: passed to `jtwin.fit` ("vi": sampling_ratio, num_epochs,
      clipping_threshold, learning_rate, warm_start, ...) or to
      `jtwin.fit_marginals` ("napsumq": selection, target, queries, ...).

  Privacy:
    `fit` is the only method that reads the private data. The row count and
    undeclared domain items are released under DP (with `domain="data"`,
    undeclared items are read off the data: listed in `inferred_from_data`
    and warned about). Everything else the object holds after `fit` is the
    DP posterior and public settings; `sample`, `save` and `load` are
    post-processing. Every `fit` call draws fresh noise keys (refitting the
    same object never reuses a previous fit's noise), and every `sample`
    call fresh sampling keys.
  """

  def __init__(self, model, *, method: str = "vi", epsilon: float = 1.0,
               delta: Optional[float] = None, seed: Optional[int] = None,
               num_components: Optional[int] = None, drop_na: bool = False,
               domain: str = "dp", domain_epsilon: Optional[float] = None,
               group_clip: bool = True, allow_large_delta: bool = False,
               allow_large_epsilon: bool = False, **options):
    if method not in METHODS:
      raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    self.method = method
    self.model_source = _model_source(model) if model is not None else None
    if method == "napsumq" and isinstance(self.model_source, str):
      raise JtwinInputError(f"{self.model_source}: custom .py models are for method 'vi'")
    _check_arguments(method, epsilon, delta, num_components, options)
    self.epsilon, self.delta, self.drop_na = epsilon, delta, bool(drop_na)
    self.num_components = num_components or (50 if method == "vi" else 400)
    self.allow_large_delta, self.allow_large_epsilon = allow_large_delta, allow_large_epsilon
    if domain not in ("dp", "data"):
      raise ValueError(f"domain must be 'dp' or 'data', got {domain!r}")
    self.domain_mode, self.domain_epsilon, self.group_clip = domain, domain_epsilon, group_clip
    self.public_spec = None       # the model spec with the DP-released domain declared
    self.options = options
    self._seed = seed
    self._root = None             # the root PRNG key, made on first use
    self._num_samples = 0         # sample() calls so far (each gets its own key)
    self._num_fits = 0            # fit() calls so far (each gets its own noise keys)
    self.model = self.posterior = self._decode = None
    self.privacy = None
    self.domain = None
    self.inferred_from_data: list = []
    self.num_rows_estimate: Optional[float] = None
    self._model_info: Optional[dict] = None
    self._extra: dict = {}

  @classmethod
  def create(cls, method: str = "vi", *, model, epsilon: float = 1.0, **kwargs) -> "Synthesizer":
    """smartnoise-style constructor: `Synthesizer.create("napsumq", model=..., epsilon=1)`."""
    return cls(model, method=method, epsilon=epsilon, **kwargs)

  # ------------------------------------------------------------------ keys

  def _root_key(self):
    if self._root is None:
      from jtwin._rng import root_key
      self._root = root_key(self._seed)
    return self._root

  def _sample_key(self, seed):
    import jax
    from jtwin._rng import root_key
    if seed is not None:
      return jax.random.fold_in(root_key(seed), _SEEDED_SAMPLE_TAG)
    key = jax.random.fold_in(jax.random.fold_in(self._root_key(), _SAMPLE_TAG),
                             self._num_samples)
    self._num_samples += 1
    return key

  # ------------------------------------------------------------------ fit

  @property
  def fitted(self) -> bool:
    return self.posterior is not None

  def fit(self, data) -> "Synthesizer":
    """Fits the synthesizer to `data` (a pandas DataFrame); returns self.

    Raises:
      JtwinInputError: the data do not fit the model file, or an unsafe
        epsilon or delta (see the class docstring).
    """
    import jax
    import pandas as pd
    from jtwin._guidance import check_epsilon
    if not isinstance(data, pd.DataFrame):
      raise TypeError(f"fit() takes a pandas DataFrame, got {type(data).__name__}; read a "
                      "CSV file with jtwin.read_csv(path)")
    if self.model_source is None:
      raise JtwinInputError("this synthesizer was loaded from a result file: it has no "
                            "model file to fit; create a new Synthesizer(model) to fit")
    check_epsilon(self.epsilon, allow_large=self.allow_large_epsilon, what="epsilon",
                  flag="allow_large_epsilon=True")
    key = jax.random.fold_in(jax.random.fold_in(self._root_key(), _FIT_TAG), self._num_fits)
    self._num_fits += 1
    if self.method == "vi":
      self._fit_vi(key, data)
    else:
      self._fit_napsumq(key, data)
    return self

  def _unsafe_delta(self):
    """`check_delta` for the release: refuses delta > 1/N unless allowed."""
    if self.allow_large_delta or self.options.get("non_private"):
      return None

    def refuse(delta, rows):
      from jtwin.errors import UnsafeDeltaError
      return UnsafeDeltaError(f"delta = {delta:g} is larger than 1/N (N about {rows}): that "
                              "allows publishing a whole row; use a smaller delta or pass "
                              "allow_large_delta=True")
    return refuse

  def _fit_vi(self, key, data):
    """As `jtwin fit`: DP row count and domain release, then DP-VI on the rest."""
    import types
    import warnings
    import jax
    from jtwin import _commands
    from jtwin import infer
    opts = dict(self.options)
    plan = {k: opts.pop(k, default) for k, default in _PLAN_DEFAULTS.items()}
    calibrated = plan["noise_multiplier"] is None
    args = types.SimpleNamespace(delta=self.delta, domain=self.domain_mode,
                                 domain_epsilon=self.domain_epsilon,
                                 non_private=plan["non_private"])
    release = _commands.public_release(args, key, self.epsilon if calibrated else None,
                                       source="data")
    prep = _commands.prepare(data, self.model_source, k=self.num_components,
                             drop_na=self.drop_na, source="data", release=release)
    if not self.group_clip:
      prep = _commands._without_group_clip(prep, self.num_components)
    _commands._warn_inferred(prep.inferred)
    public, n = prep.public, prep.values.shape[0]
    refuse = self._unsafe_delta()
    if refuse is not None and public.delta > 1.0 / public.rows:
      raise refuse(public.delta, public.rows)
    max_eps = plan["max_epsilon"]
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message="delta = .* is larger than 1/N")
      privacy = infer.privacy_plan(
          n, epsilon=public.epsilon_rest if calibrated else self.epsilon,
          delta=public.delta_rest, sampling_ratio=plan["sampling_ratio"],
          num_epochs=plan["num_epochs"], clipping_threshold=plan["clipping_threshold"],
          noise_multiplier=plan["noise_multiplier"],
          max_epsilon=(None if max_eps is None or plan["non_private"]
                       else _commands._rest_ceiling(max_eps, public)),
          non_private=plan["non_private"],
          warm_start=plan["warm_start"] if prep.model.warm_start is not None else 0.0)
      privacy = _commands.compose_public(privacy, public, self.epsilon if calibrated else None)
    if privacy.mode == "noise_multiplier":
      from jtwin._guidance import check_epsilon
      check_epsilon(privacy.epsilon, allow_large=self.allow_large_epsilon,
                    what="the epsilon spent with this noise_multiplier",
                    flag="allow_large_epsilon=True")
    result = infer.fit(jax.random.fold_in(key, 1), prep.model,
                       (prep.values, prep.observed), privacy=privacy,
                       warm_start=plan["warm_start"], **opts)
    self.model, self.posterior, self._decode = prep.model, result.posterior, prep.decode
    self.privacy, self.domain = privacy, prep.domain
    self.inferred_from_data = list(prep.inferred)
    self._model_info, self._extra = prep.model_info, {"release": public.record()}
    self.num_rows_estimate = float(public.rows)
    self.public_spec = public.spec

  def _fit_napsumq(self, key, data):
    """As `jtwin napsumq`."""
    import jax.numpy as jnp
    from jtwin import _commands
    from jtwin import data as jdata
    from jtwin import napsumq as nq
    from jtwin._napsumq_command import model_info
    from jtwin.models.posterior import MeanFieldParams
    from jtwin.result_io import cells_decoder
    spec = self.model_source
    frame = jdata.select_columns(data, spec, self.drop_na, source="data")
    result = nq.fit_marginals(key, frame, spec, epsilon=self.epsilon, delta=self.delta,
                              num_components=self.num_components, domain=self.domain_mode,
                              domain_epsilon=self.domain_epsilon,
                              check_delta=self._unsafe_delta(), source="data",
                              **self.options)
    _commands._warn_inferred(result.inferred_from_data)
    info = model_info(result)
    self.model = result.model
    self.posterior = MeanFieldParams(*[{k: jnp.asarray(v) for k, v in part.items()}
                                       for part in result.posterior])
    self._decode = cells_decoder(info)
    self.privacy, self.domain = result.privacy, None
    self.inferred_from_data = list(result.inferred_from_data)
    self.num_rows_estimate = float(result.num_rows_estimate)
    self._model_info = info
    self._extra = {"measurements": result.measurements,
                   "num_rows_estimate": result.num_rows_estimate,
                   "release": result.public.record()}
    self.public_spec = result.public.spec

  # ------------------------------------------------------------------ sample

  def sample(self, num_rows: int, *, seed: Optional[int] = None,
             records_per_draw: int = 1, sampling: Optional[str] = None):
    """Synthetic rows as a DataFrame (post-processing: no privacy cost).

    Args:
      num_rows: rows to draw (>= 0).
      seed: an int for a reproducible draw. By default every call uses a new
        key derived from the synthesizer's root key (never one of the fit's
        noise keys), so two calls give different rows.
      records_per_draw: rows per posterior parameter draw (twinify's --m).
      sampling: "balanced" or "iid" (see `jtwin.sample_marginals`); default:
        balanced for the marginal method with one row per draw, else iid.
    """
    import jax
    from jtwin._rng import numpy_generator
    from jtwin.marginals.cells import coarse_maps
    from jtwin.marginals.ensemble import resolve_sampling, sample_posterior
    if not self.fitted:
      raise JtwinInputError("the synthesizer is not fitted: call fit(df) or jtwin.load(path)")
    if not isinstance(num_rows, (int, np.integer)) or num_rows < 0:
      raise ValueError(f"num_rows must be an integer >= 0, got {num_rows!r}")
    info = self._model_info or {}
    sampling = resolve_sampling(sampling, records_per_draw,
                                marginal=info.get("method") == "napsumq")
    k_sample, k_decode = jax.random.split(self._sample_key(seed))
    values, observed = sample_posterior(
        k_sample, self.model, self.posterior, int(num_rows), records_per_draw=records_per_draw,
        members=int(info.get("ensemble") or 1), sampling=sampling,
        coarse=coarse_maps(info.get("cells")))
    return self._decode(values, observed, numpy_generator(k_decode))

  def fit_sample(self, data, num_rows: Optional[int] = None):
    """`fit(data)` then `sample(num_rows)`.

    By default the DP estimate of the number of rows.
    """
    self.fit(data)
    if num_rows is None:
      num_rows = (max(int(round(self.num_rows_estimate)), 0)
                  if self.num_rows_estimate is not None else len(data))
    return self.sample(num_rows)

  # ------------------------------------------------------------------ files

  def save(self, path) -> None:
    """Writes the result file (npz + JSON; no pickle, no data, no seed).

    The same file `jtwin fit` / `jtwin napsumq` write: `jtwin sample` and
    `jtwin.load` read it.
    """
    from jtwin.result_io import save_result
    if not self.fitted:
      raise JtwinInputError("nothing to save: the synthesizer is not fitted")
    post = self.posterior
    save_result(os.fspath(path), post, model_info=self._model_info, privacy=self.privacy,
                domain=self.domain, inferred_from_data=self.inferred_from_data,
                extra=self._extra)

  @classmethod
  def load(cls, path, *, custom_model_path: Optional[str] = None,
           seed: Optional[int] = None) -> "Synthesizer":
    """Rebuilds a fitted synthesizer from a result file, without the data.

    Args:
      path: a result file (`save`, `jtwin fit` or `jtwin napsumq`).
      custom_model_path: for a custom model, its `.py` file (default: the
        path stored in the result).
      seed: root seed of later `sample` calls (default: from the OS).
    """
    import warnings
    from jtwin.result_io import load_result, provenance_warnings, rebuild
    loaded = load_result(os.fspath(path))
    for text in provenance_warnings(loaded.meta):
      warnings.warn(text, stacklevel=2)
    info = loaded.meta["model"]
    method = "napsumq" if info.get("method") == "napsumq" else "vi"
    model, posterior, decode = rebuild(loaded, custom_model_path=custom_model_path,
                                       source=os.fspath(path))
    privacy = _privacy_record(method, loaded.meta.get("privacy") or {})
    self = cls(None, method=method, seed=seed,
               num_components=info.get("num_components"))
    self.epsilon = getattr(privacy, "epsilon_target", None)
    self.delta = getattr(privacy, "delta", None)
    self.model, self.posterior, self._decode = model, posterior, decode
    self.privacy, self.domain = privacy, loaded.domain
    self.inferred_from_data = list(loaded.meta.get("inferred_from_data", []))
    self._model_info = info
    self._extra = {k: loaded.meta[k] for k in ("measurements", "num_rows_estimate", "release")
                   if k in loaded.meta}
    estimate = loaded.meta.get("num_rows_estimate",
                               (loaded.meta.get("release") or {}).get("rows_estimate"))
    self.num_rows_estimate = float(estimate) if estimate is not None else None
    return self

  def __repr__(self):
    if not self.fitted:
      return f"Synthesizer(method={self.method!r}, epsilon={self.epsilon}, not fitted)"
    eps = getattr(self.privacy, "epsilon", None)
    delta = getattr(self.privacy, "delta", None)
    return (f"Synthesizer(method={self.method!r}, fitted, certified epsilon <= {eps:.4g}, "
            f"delta = {delta:.3g})" if isinstance(eps, float) and isinstance(delta, float)
            else f"Synthesizer(method={self.method!r}, fitted)")


def load(path, *, custom_model_path: Optional[str] = None,
         seed: Optional[int] = None) -> Synthesizer:
  """`Synthesizer.load`: a fitted synthesizer from a result file, without the data."""
  return Synthesizer.load(path, custom_model_path=custom_model_path, seed=seed)


def fit(key, model, data, **kwargs):
  """`jtwin.infer.fit` that also takes an int seed as `key`.

  `data` is the encoded data, `(values, observed)` or `jtwin.encode(df,
  domain)`. A DataFrame is refused with a TypeError that says what to pass
  (the model alone cannot encode category labels); `jtwin.Synthesizer(model
  file).fit(df)` takes a DataFrame. See `jtwin.infer.fit` for the arguments.
  """
  from jtwin import infer
  from jtwin._rng import root_key
  if _is_dataframe(data):
    raise TypeError(
        "jtwin.fit takes encoded data: (values, observed) arrays or jtwin.encode(df, domain) "
        "(domain = jtwin.resolve_domain(df, spec)), not a DataFrame; to fit a DataFrame "
        "directly use jtwin.Synthesizer('model.txt', epsilon=...).fit(df)")
  if isinstance(data, (tuple, list)) and len(data) != 2:
    raise TypeError(f"data must be (values, observed), got a sequence of {len(data)} items")
  if isinstance(key, bool) or not (key is None or isinstance(key, (int, np.integer))
                                   or hasattr(key, "dtype")):
    raise TypeError(f"key must be a jax.random.key, an int seed or None, got "
                    f"{type(key).__name__}")
  if isinstance(key, (int, np.integer)):
    key = root_key(int(key))
  return infer.fit(key, model, data, **kwargs)



def _is_dataframe(x: Any) -> bool:
  import sys
  pd = sys.modules.get("pandas")
  return pd is not None and isinstance(x, (pd.DataFrame, pd.Series))

