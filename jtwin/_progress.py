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

  def update(self, done: int, extra: str = "") -> None:
    if self.quiet:
      return
    frac = min(done / self.total, 1.0)
    elapsed = time.perf_counter() - self.start
    eta = elapsed / frac - elapsed if frac > 0 else float("nan")
    bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
    text = (f"{self.label} [{bar}] {100 * frac:5.1f}% {done}/{self.total} "
            f"{elapsed:6.1f}s eta {eta:5.1f}s {extra}")
    if self.tty:
      self.stream.write("\r" + text)
      if done >= self.total:
        self.stream.write("\n")
      self.stream.flush()
    elif int(10 * frac) > self.last_decile:
      self.last_decile = int(10 * frac)
      print(text.rstrip(), file=self.stream, flush=True)
