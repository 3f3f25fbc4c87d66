import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# JAX's persistent compilation cache, shared by every test process and by the
# command line run in-process (`jtwin._compile_cache`): most of the suite's
# time is compilation, and a warm cache makes a rerun about 2-3x faster. It
# lives in the user's cache directory and is safe to delete; set
# JTWIN_CACHE_DIR=off to run without it.
_base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
_cache = os.environ.setdefault("JTWIN_CACHE_DIR", os.path.join(_base, "jtwin", "xla-tests"))
if _cache.strip().lower() not in ("off", "0", "no", "none", ""):
  try:
    os.makedirs(_cache, mode=0o700, exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  except OSError:
    pass


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

DECLARED_MODEL = """\
age : Normal ; bounds = 0, 100 ; integer ; missing = no
job : Categorical ; categories = a, b, c ; missing = no
"""


@pytest.fixture
def declared_files(tmp_path):
  """(tmp_path, data.csv, model.txt): 200 rows and a fully declared model file."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame({"age": rng.integers(18, 90, 200), "job": rng.choice(["a", "b", "c"], 200)})
  df.to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "model.txt").write_text(DECLARED_MODEL)
  return tmp_path, str(tmp_path / "data.csv"), str(tmp_path / "model.txt")
