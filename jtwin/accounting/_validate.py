"""Host-side checks of the public accounting inputs (private helpers).

Each raises `jtwin.errors.JtwinInputError` (a `ValueError`) whose message
names the argument, and returns the value as a plain Python float / int so
that it can key a cache.
"""
from __future__ import annotations

import math
import numbers

from jtwin.errors import JtwinInputError


def _real(name: str, value) -> float:
  if isinstance(value, (bool, str, bytes)):
    raise JtwinInputError(f"{name} must be a real number, got {value!r}")
  if not isinstance(value, numbers.Real):
    try:  # numpy / jax scalars and 0-d arrays
      value = float(value)
    except (TypeError, ValueError):
      raise JtwinInputError(f"{name} must be a real number, got {value!r}") from None
  value = float(value)
  if not math.isfinite(value):
    raise JtwinInputError(f"{name} must be finite, got {value!r}")
  return value


def positive(name: str, value) -> float:
  """value > 0 (finite)."""
  value = _real(name, value)
  if value <= 0:
    raise JtwinInputError(f"{name} must be > 0, got {value!r}")
  return value


def delta(value, name: str = "delta") -> float:
  """0 < value < 1."""
  value = _real(name, value)
  if not 0.0 < value < 1.0:
    raise JtwinInputError(f"{name} must satisfy 0 < {name} < 1, got {value!r}")
  return value


def probability(name: str, value) -> float:
  """0 < value <= 1."""
  value = _real(name, value)
  if not 0.0 < value <= 1.0:
    raise JtwinInputError(f"{name} must satisfy 0 < {name} <= 1, got {value!r}")
  return value


def steps(value, name: str = "steps") -> int:
  """An integer >= 1 (integral floats such as 1e4 are accepted)."""
  if isinstance(value, bool):
    raise JtwinInputError(f"{name} must be an integer >= 1, got {value!r}")
  if isinstance(value, numbers.Integral):
    value = int(value)
  else:
    real = _real(name, value)
    if real != math.floor(real):
      raise JtwinInputError(f"{name} must be an integer >= 1, got {value!r}")
    value = int(real)
  if value < 1:
    raise JtwinInputError(f"{name} must be an integer >= 1, got {value!r}")
  return value
