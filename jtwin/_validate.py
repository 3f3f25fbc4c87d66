"""Argument checks shared by the low-level library functions.

The command line and `Synthesizer` check what a user types; these checks
guard the functions research code calls directly (`jtwin.fit` with encoded
arrays, `sample_synthetic`, `sample_marginals`, `decode`), so that a wrong
argument is a one-line `TypeError`/`ValueError` naming it instead of a JAX
traceback, or, worse, a plausible-looking result.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["as_key", "check_codes", "check_posterior", "count"]


def count(name: str, value, *, minimum: int = 0) -> int:
  """`value` as an int >= `minimum`; a float, bool or string is refused.

  Raises:
    TypeError: not an integer.
    ValueError: below `minimum`.
  """
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} "
                    f"({type(value).__name__})")
  if value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
  return int(value)


def as_key(key, name: str = "key"):
  """A JAX PRNG key from a key (typed or raw uint32 [2]) or an int seed >= 0."""
  import jax
  from jtwin._rng import root_key
  if isinstance(key, (bool, np.bool_)):
    raise TypeError(f"{name} must be a jax.random.key or an int seed, got {key!r}")
  if isinstance(key, (int, np.integer)):
    return root_key(int(key))
  if not hasattr(key, "dtype") or not hasattr(key, "shape"):
    raise TypeError(f"{name} must be a jax.random.key or an int seed, got "
                    f"{type(key).__name__}")
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key
  if key.dtype == np.uint32 and tuple(key.shape) == (2,):
    return key
  raise TypeError(f"{name} must be a jax.random.key or an int seed, got an array of "
                  f"dtype {key.dtype} and shape {tuple(key.shape)}")


def check_posterior(model, posterior) -> None:
  """Refuses a posterior whose parameters do not have the model's shapes
  (e.g. fitted with another K or other columns).

  Raises:
    ValueError: naming the first parameter that differs.
  """
  import jax
  loc = getattr(posterior, "loc", None)
  if loc is None:
    raise TypeError(f"posterior must be a MeanFieldParams (loc, log_scale), got "
                    f"{type(posterior).__name__}")
  want = jax.eval_shape(model.init, jax.random.key(0))
  want_leaves, want_tree = jax.tree_util.tree_flatten_with_path(want)
  got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(loc)
  if want_tree != got_tree:
    raise ValueError("the posterior's parameters do not match the model's (different "
                     "parameter names): was it fitted with this model?")
  for (path, w), (_, g) in zip(want_leaves, got_leaves):
    if tuple(np.shape(g)) != tuple(w.shape):
      where = jax.tree_util.keystr(path)
      raise ValueError(f"the posterior's parameter {where} has shape {tuple(np.shape(g))}, "
                       f"the model's {tuple(w.shape)}: was it fitted with this model "
                       "(the same columns and number of components)?")


def check_codes(values: np.ndarray, observed: np.ndarray, names: Sequence[str],
                num_categories: Sequence[Optional[int]], what: str = "values") -> None:
  """Refuses category codes that are not whole numbers in 0..C-1 where observed.

  Args:
    values: float [N, D]; observed: bool [N, D].
    names: D column names; num_categories: C per column, None for numeric ones.

  Raises:
    ValueError: naming the column, the first bad row and the allowed range.
  """
  for j, (name, c) in enumerate(zip(names, num_categories)):
    if not c:
      continue
    v = values[:, j]
    bad = observed[:, j] & ~((v >= 0) & (v <= c - 1) & (np.abs(v - np.rint(v)) <= 1e-6))
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"{what}: column {j} ('{name}') has category code {float(v[i]):g} in row "
                       f"{i}; its codes must be whole numbers 0..{c - 1}")
