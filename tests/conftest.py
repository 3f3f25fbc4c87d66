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
