"""The command line's persistent compilation cache: where it is, and that it holds no data."""
import os
import subprocess
import sys
import zlib

import numpy as np
import pandas as pd

from jtwin import _compile_cache

MODEL = "x : Normal ; loc = 0 ; scale = 1 ; integer = no ; missing = no\n" \
        "g : Categorical ; categories = a, b ; missing = no\n"


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("JTWIN_CACHE_DIR", str(tmp_path / "c"))
  assert _compile_cache.cache_dir() == str(tmp_path / "c")
  monkeypatch.setenv("JTWIN_CACHE_DIR", "off")
  assert _compile_cache.cache_dir() is None and _compile_cache.enable() is None
  monkeypatch.delenv("JTWIN_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert _compile_cache.cache_dir() == str(tmp_path / "xdg" / "jtwin" / "xla")


def test_cli_fills_the_cache_without_storing_data_values(tmp_path):
  """A fit in a fresh cache directory writes compiled programs, and none of
  the data's values (as the float32 the model sees) appears in any of them."""
  rng = np.random.default_rng(0)
  x = (1234.5678 + rng.normal(0, 1e-3, 400)).astype(np.float32)   # distinctive values
  data = tmp_path / "d.csv"
  pd.DataFrame({"x": x.astype(np.float64), "g": rng.choice(["a", "b"], 400)}).to_csv(
      data, index=False, float_format="%.9g")
  model = tmp_path / "m.txt"
  model.write_text(MODEL)
  cache = tmp_path / "cache"
  env = {**os.environ, "JTWIN_CACHE_DIR": str(cache)}
  for var in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
    env.pop(var, None)
  run = subprocess.run([sys.executable, "-m", "jtwin", "fit", str(data), str(model),
                        str(tmp_path / "out"), "-e", "1", "-q", "0.1", "--k", "2", "--seed", "0",
                        "--visualize", "none", "--quiet"], env=env, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stderr
  files = [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs]
  assert files, "the cache stayed empty"
  assert oct(cache.stat().st_mode & 0o777) == "0o700"
  blobs = _contents(files)
  needles = {v.tobytes() for v in x[:50]}
  assert not [n for n in needles if n in blobs]


def _contents(files) -> bytes:
  """Cache entries, decompressed (JAX zlib-compresses them unless zstd is installed)."""
  out = []
  for f in files:
    raw = open(f, "rb").read()
    try:
      out.append(zlib.decompress(raw))
    except zlib.error:
      out.append(raw)
  return b"".join(out)


def test_the_scan_finds_a_constant_baked_into_a_program(tmp_path):
  """Positive control for the test above: a program that embeds data as a
  constant is found by the same scan (so an empty result above means something)."""
  code = f"""
import numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", {str(tmp_path)!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
x = (1234.5678 + np.random.default_rng(0).normal(0, 1e-3, 400)).astype(np.float32)
jax.jit(lambda y: jnp.sum(jnp.sin(y * x)))(jnp.ones(400)).block_until_ready()
"""
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION")}
  subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
  files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
  x = (1234.5678 + np.random.default_rng(0).normal(0, 1e-3, 400)).astype(np.float32)
  blobs = _contents(files)
  assert sum(v.tobytes() in blobs for v in x[:50]) == 50
