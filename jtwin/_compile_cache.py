"""JAX's persistent compilation cache for the command line.

A `jtwin fit` spends seconds compiling the same programs every run. With the
cache on, later runs with the same shapes load the compiled programs from a
user directory instead (`benchmarks/README.md` §9 has the before/after).

Where: `$JTWIN_CACHE_DIR`, else `$XDG_CACHE_HOME/jtwin/xla`, else
`~/.cache/jtwin/xla`; made with mode 0700. Safe to delete at any time.
`JTWIN_CACHE_DIR=off` turns it off. The library never turns it on by itself
(call `enable()`).

Privacy: the cache holds compiled programs keyed by their code and shapes.
jtwin passes data to compiled functions as arguments, never as baked-in
constants, and `tests/test_compile_cache.py` checks that a run's data values
do not appear in the cache files. Shapes (such as the padded batch size) are
in the keys, as they are in the result file.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["cache_dir", "enable"]

_OFF = ("off", "0", "no", "none", "")


def cache_dir() -> Optional[str]:
  """The cache directory the command line uses, or None when turned off."""
  env = os.environ.get("JTWIN_CACHE_DIR")
  if env is not None:
    return None if env.strip().lower() in _OFF else env
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jtwin", "xla")


def enable(path: Optional[str] = None) -> Optional[str]:
  """Turns on JAX's persistent compilation cache in `path` (default `cache_dir()`).

  Returns:
    the directory used, or None if the cache is off or the directory cannot
    be made (the run then simply compiles, as without a cache).
  """
  path = path or cache_dir()
  if path is None:
    return None
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
  except OSError:
    return None
  import jax
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
