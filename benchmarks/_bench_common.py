"""Shared helpers of the benchmark scripts: header, timing, child processes.

Not a benchmark itself. Every script prints `header()` first: jax version,
device, commit, machine and load, so that a figure can be traced to where
and when it was measured.
"""
from __future__ import annotations

import datetime
import functools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADULT_CSV = os.path.join(REPO, "jtwin", "examples", "adult.csv.gz")
ADULT_MODEL = os.path.join(REPO, "jtwin", "examples", "adult_model.txt")


def commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False, timeout=5, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False, timeout=5,
                           cwd=REPO).stdout.strip()
    return (out or "?") + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "?"


def loadavg() -> str:
  try:
    return "%.2f %.2f %.2f" % os.getloadavg()
  except OSError:
    return "?"


def device_info() -> str:
  """The default JAX device, e.g. 'cpu: TFRT_CPU_0' or 'gpu: NVIDIA H100 80GB HBM3'."""
  import jax
  d = jax.devices()[0]
  kind = getattr(d, "device_kind", "") or str(d)
  return f"{d.platform}: {kind} (x{len(jax.devices())})"


def header(title: str) -> str:
  import jax
  lines = [
      f"# {title}",
      f"# date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} "
      f"commit {commit()} jax {jax.__version__} device {device_info()}",
      f"# host {platform.node()} {platform.machine()} cpus={os.cpu_count()} "
      f"python {platform.python_version()} loadavg(1,5,15 min) {loadavg()}",
  ]
  return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
  return float(statistics.median(xs)) if xs else float("nan")


def time_jitted(fn, args, *, repeat: int = 5, min_time: float = 0.2,
                max_inner: int = 1000) -> float:
  """Median seconds per call of an already-jitted `fn(*args)` (block_until_ready).

  The first call (compile) is discarded. Each of `repeat` samples runs enough
  back-to-back calls to last about `min_time` seconds.
  """
  import jax
  jax.block_until_ready(fn(*args))          # compile + warm
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  one = max(time.perf_counter() - start, 1e-7)
  inner = int(min(max_inner, max(1, min_time / one)))
  samples = []
  for _ in range(repeat):
    start = time.perf_counter()
    for _ in range(inner):
      out = fn(*args)
    jax.block_until_ready(out)
    samples.append((time.perf_counter() - start) / inner)
  return median(samples)


class ChildRun(NamedTuple):
  returncode: Optional[int]     # None: killed at the timeout
  wall_s: float
  max_rss_bytes: int            # peak resident set of the child (and its waited-for children)
  cpu_s: float                  # user + system CPU seconds of the child
  output: str                   # stdout and stderr together


def run_child(cmd: Sequence[str], *, timeout: float, cwd: Optional[str] = None,
              env: Optional[dict] = None) -> ChildRun:
  """Runs `cmd`, measuring wall time and this child's own peak RSS (os.wait4).

  os.wait4 gives the rusage of exactly this child, so runs measured one after
  the other do not see each other's peaks (RUSAGE_CHILDREN would keep the max).
  """
  with tempfile.TemporaryFile("w+b") as out:
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    deadline = start + timeout
    status = rusage = None
    while True:
      pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
      if pid == proc.pid:
        break
      if time.perf_counter() > deadline:
        proc.kill()
        _, status, rusage = os.wait4(proc.pid, 0)
        status = None
        break
      time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = 0 if status is None else os.waitstatus_to_exitcode(status)  # reaped
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
  rc = None if status is None else os.waitstatus_to_exitcode(status)
  max_rss = int(rusage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
  return ChildRun(rc, wall, max_rss, rusage.ru_utime + rusage.ru_stime, text)


def gib(nbytes: float) -> str:
  return f"{nbytes / 2**30:.2f} GiB"


def fmt_s(seconds: float) -> str:
  if seconds != seconds:
    return "n/a"
  if seconds < 1e-3:
    return f"{seconds * 1e6:.0f} us"
  if seconds < 1:
    return f"{seconds * 1e3:.2f} ms"
  return f"{seconds:.2f} s"


@functools.lru_cache(maxsize=None)
def adult_data():
  """(domain, EncodedData) of the bundled Adult example, as in the README."""
  import jtwin
  df = jtwin.read_csv(ADULT_CSV)
  spec = jtwin.parse_model_file(ADULT_MODEL)
  frame = df[list(spec.names)]
  domain = jtwin.resolve_domain(frame, spec)
  return domain, jtwin.encode(frame, domain)


def adult_model(k: int, *, group_clip: bool = True):
  """(model, values [N, D], observed [N, D], domain) for the bundled Adult example."""
  import jtwin
  domain, data = adult_data()
  model = jtwin.make_mixture_model(domain.features(), num_components=k, group_clip=group_clip)
  return model, data.values, data.observed, domain


def without_determined_by(spec):
  """`spec` with every column modelled (its `determined_by` declarations dropped)."""
  import dataclasses
  return dataclasses.replace(spec, features=tuple(
      dataclasses.replace(f, determined_by=None) for f in spec.features))


def python_env() -> dict:
  """The environment for a child Python: unbuffered, the repo importable."""
  env = dict(os.environ)
  env["PYTHONUNBUFFERED"] = "1"
  env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  return env


def score_adult_twin(path: str, test) -> dict:
  """`jtwin.evaluate` scores of a twin CSV against the Adult test rows (target
  income); {} when `test` is None (no scoring)."""
  if test is None:
    return {}
  import warnings
  import pandas as pd
  from jtwin.evaluate import evaluate
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return evaluate(test, pd.read_csv(path), test=test, target="income")


def fmt_score(x) -> str:
  """A score with 4 decimals, or an en dash when absent."""
  return "–" if x is None else f"{x:.4f}"


def fit_options(text: str) -> dict:
  """'a=1, b="x"' -> {"a": 1, "b": "x"}: keyword arguments written as in Python (literals only)."""
  import ast
  call = ast.parse(f"f({text})", mode="eval").body
  if call.args or any(kw.arg is None for kw in call.keywords):
    raise ValueError(f"options must be name=value pairs, got {text!r}")
  return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
