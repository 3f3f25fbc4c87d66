"""A small progress bar on stderr (no dependency); silent when quiet."""
from __future__ import annotations

import sys
import time


class ProgressBar:
  """Prints `label [#####.....] 40% steps/T  eta` between training chunks.

  On a terminal it redraws one line; otherwise it prints a line every 10%.
  """

  def __init__(self, label: str, total: int, *, quiet: bool = False, stream=None):
    self.label, self.total, self.quiet = label, max(int(total), 1), quiet
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.start = time.perf_counter()
    self.last_decile = -1
    self._first = None      # (time, done) at the first update: the ETA clock starts there

  def update(self, done: int, extra: str = "") -> None:
    if self.quiet:
      return
    frac = min(done / self.total, 1.0)
    now = time.perf_counter()
    elapsed = now - self.start
    if self._first is None:
      # the first chunk includes compilation, which later chunks do not repeat:
      # the ETA is measured from here on
      self._first = (now, done)
    t0, done0 = self._first
    eta_text = "    ?"
    if done > done0:
      eta = (now - t0) / (done - done0) * max(self.total - done, 0)
      eta_text = f"{eta:5.1f}s"
    elif done >= self.total:
      eta_text = f"{0.0:5.1f}s"
    bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
    text = (f"{self.label} [{bar}] {100 * frac:5.1f}% {done}/{self.total} "
            f"{elapsed:6.1f}s eta {eta_text} {extra}")
    if self.tty:
      self.stream.write("\r" + text)
      if done >= self.total:
        self.stream.write("\n")
      self.stream.flush()
    elif int(10 * frac) > self.last_decile:
      self.last_decile = int(10 * frac)
      print(text.rstrip(), file=self.stream, flush=True)
