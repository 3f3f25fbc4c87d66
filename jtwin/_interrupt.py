"""Ctrl-C that tells the truth: what was written, and a non-zero exit.

The command line (`jtwin.cli.main`) installs a SIGINT handler for the run
(`guard`). The handler records the interrupt before raising
KeyboardInterrupt, so an interrupt that lands where Python swallows
exceptions (a garbage-collection callback, a `__del__`: "Exception ignored
in ...") is not lost: the next phase boundary (`check`, called by the
commands' timers) raises it again, and `main` exits with 130 even if the
command returned.

Each output file is written atomically (a temporary file, then a rename),
and `jtwin._atomic.atomic_write` records each one once it is renamed into
place (`wrote`); `watch` adds files of the output prefix that other writers
(the plots) created. The message lists exactly the complete files that
exist.
"""
from __future__ import annotations

import contextlib
import glob
import os
import signal
import sys
import threading

_state = {"interrupts": 0, "written": [], "armed": False}


def reset() -> None:
  """Forget earlier interrupts and written files, and start recording writes
  (the start of a command)."""
  _state.update(interrupts=0, written=[], armed=True)


def disarm() -> None:
  """Stop recording writes (the end of a command)."""
  _state["armed"] = False


def wrote(path: str) -> None:
  """Records that `path` was written completely (`jtwin._atomic` calls this
  after each rename; a no-op outside a command)."""
  if _state["armed"] and str(path) not in _state["written"]:
    _state["written"].append(str(path))


def written() -> list:
  """The complete output files written so far, in order."""
  return list(_state["written"])


def pending() -> bool:
  """Whether an interrupt was received during this command."""
  return _state["interrupts"] > 0


def check() -> None:
  """Raises KeyboardInterrupt if an interrupt was received (and perhaps swallowed)."""
  if pending():
    raise KeyboardInterrupt


def _handler(signum, frame):
  del signum, frame
  _state["interrupts"] += 1
  raise KeyboardInterrupt


@contextlib.contextmanager
def guard():
  """Installs the recording SIGINT handler for the block (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = signal.signal(signal.SIGINT, _handler)
  previous_hook = sys.unraisablehook

  def unraisable(info):
    # a Ctrl-C raised where Python cannot propagate it (a GC callback, a
    # `__del__`) is recorded already: no "Exception ignored in ..." traceback
    if not (isinstance(info.exc_value, KeyboardInterrupt) and pending()):
      previous_hook(info)
  sys.unraisablehook = unraisable
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    sys.unraisablehook = previous_hook


@contextlib.contextmanager
def watch(prefix: str):
  """Records files named `prefix*` (and files in folders named so) that the
  block creates or replaces, also when it is interrupted (for writers that do
  not report their files)."""
  def snapshot():
    out = {}
    for match in glob.glob(glob.escape(prefix) + "*"):
      paths = [match]
      if os.path.isdir(match):     # e.g. OUTPUT_PREFIX.real_data_plots/: its files
        paths = [os.path.join(d, f) for d, _, fs in os.walk(match) for f in fs]
      for p in paths:
        try:
          out[p] = os.stat(p).st_mtime_ns
        except OSError:
          pass
    return out

  before = snapshot()
  try:
    yield
  finally:
    known = set(written())
    for p, mtime in sorted(snapshot().items()):
      if p not in known and before.get(p) != mtime and not os.path.basename(p).startswith("."):
        wrote(p)


def message() -> str:
  """The one line printed on an interrupt."""
  files = written()
  if not files:
    return ("jtwin: interrupted; no output was written (outputs are written atomically, "
            "at the end of the run)")
  return ("jtwin: interrupted; these complete files were already written: " + ", ".join(files)
          + " (each is written atomically; delete them if you do not want a partial set); "
          "nothing else was written")
