"""Atomic file writes and output-path checks (private helpers)."""
from __future__ import annotations

import contextlib
import os
import secrets
from typing import Iterable, Iterator, Optional

from jtwin.errors import DataError

__all__ = ["atomic_write", "check_numbered_outputs", "check_output_path", "numbered_outputs"]


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", *, encoding: Optional[str] = "utf-8",
                 newline: Optional[str] = None, file_mode: int = 0o666) -> Iterator:
  """Opens a temporary file next to `path`; renames it to `path` on success.

  The temporary file lives in the same directory (so `os.replace` is atomic),
  is created with the usual permissions (0666 minus the umask) and is flushed
  and fsync'ed before the rename. On any exception, including
  KeyboardInterrupt, it is deleted and `path` is left untouched.

  A symbolic link is followed (the file it names is replaced, the link
  stays). A `path` that exists but is not a regular file (a device such as
  /dev/null or /dev/stdout, a named pipe) is written directly, never
  replaced: it cannot be written atomically, and replacing it would destroy it.

  Args:
    path: destination file.
    mode: "w" (text) or "wb" (binary).
    encoding: text encoding (ignored in binary mode).
    newline: passed to `open` in text mode (use "" for the csv module).
    file_mode: permissions of the new file before the umask (0o600 for
      files holding secrets, e.g. checkpoints).

  Yields:
    The open file object.
  """
  if mode not in ("w", "wt", "wb"):
    raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
  path = os.fspath(path)
  if not _is_special(path):     # os.stat follows links: /dev/stdout to a pipe is special
    path = os.path.realpath(path)
  if _is_special(path):
    with open(path, mode, **({} if "b" in mode else {"encoding": encoding,
                                                      "newline": newline})) as f:
      yield f
    return
  directory, base = os.path.split(path)
  tmp, fd = _create_temp(directory, base, file_mode)
  try:
    try:
      if "b" in mode:
        f = os.fdopen(fd, "wb")
      else:
        f = os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
      os.close(fd)
      raise
    with f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  from jtwin import _interrupt
  _interrupt.wrote(path)      # complete: an interrupt from here on reports it
  _fsync_directory(directory)


def check_output_path(path, inputs: Iterable = ()) -> None:
  """Checks that `path` can be written and is none of the `inputs`.

  Args:
    path: the output file about to be written.
    inputs: input files of the run (None entries are ignored).

  Raises:
    DataError: the directory is missing or not writable, `path` is a
      directory, or `path` is (a link to) one of the inputs.
  """
  path = os.fspath(path)
  if not os.path.basename(path):
    raise DataError(f"{path!r}: names no file; give an output file name")
  if path.lower().endswith(".zst"):   # written compressed (`jtwin.data.write_csv_atomic`)
    try:
      import zstandard  # noqa: F401
    except ImportError:
      raise DataError(f"{path}: writing a .zst file needs the 'zstandard' package (pip "
                      "install zstandard); or use .gz, .bz2, .xz or no compression") from None
  if _is_special(path):      # a device or pipe (os.stat follows links): written directly
    if not os.access(path, os.W_OK):
      raise DataError(f"{path}: is not writable; choose another output path")
    return
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    parent = directory
    while parent and not os.path.exists(parent) and os.path.dirname(parent) != parent:
      parent = os.path.dirname(parent)
    if os.path.exists(parent) and not os.path.isdir(parent):
      raise DataError(f"{path}: '{parent}' is a file, not a directory; choose another "
                      "output path")
    raise DataError(f"{path}: output directory '{directory}' does not exist; "
                    "create it first")
  if not os.access(directory, os.W_OK | os.X_OK):
    raise DataError(f"{path}: output directory '{directory}' is not writable; "
                    "choose another output path")
  if os.path.isdir(path):
    raise DataError(f"{path}: is a directory; give an output file name")
  try:       # the OS may still refuse (e.g. /proc): find out now, not after the fit
    tmp, fd = _create_temp(directory, os.path.basename(path))
    os.close(fd)
    os.unlink(tmp)
  except OSError as e:
    raise DataError(f"{path}: cannot write in output directory '{directory}' "
                    f"({e.strerror or e}); choose another output path") from None
  for source in inputs:
    if source is None:
      continue
    source = os.fspath(source)
    if _same_file(path, source):
      raise DataError(f"{path}: refusing to overwrite the input file "
                      f"'{source}'; choose a different output path")


def numbered_outputs(prefix: str) -> dict:
  """{i: path} of the existing files PREFIX.{i}.csv (i a whole number, as
  `--separate_output` names them)."""
  prefix = os.fspath(prefix)
  directory, base = os.path.split(prefix)
  try:
    names = os.listdir(directory or ".")
  except OSError:
    return {}
  out = {}
  for name in names:
    middle = name[len(base) + 1:-len(".csv")] if (
        name.startswith(base + ".") and name.endswith(".csv")) else ""
    if middle.isdigit() and middle == str(int(middle)):
      out[int(middle)] = os.path.join(directory, name)
  return out


def check_numbered_outputs(prefix: str, inputs: Iterable = ()) -> None:
  """Refuses a run whose `--separate_output` files PREFIX.{i}.csv could
  overwrite one of the `inputs` (checked before anything is computed, since
  the number of files is known only at the end).

  Raises:
    DataError: naming the input file.
  """
  existing = numbered_outputs(prefix).values()
  for source in inputs:
    if source is None:
      continue
    source = os.fspath(source)
    for path in existing:
      if _same_file(path, source):
        raise DataError(f"{path}: refusing to overwrite the input file '{source}' "
                        "(--separate_output writes OUTPUT_PREFIX.{i}.csv); choose a "
                        "different output prefix")


def check_output_prefix(prefix: str, visualize: str = "none") -> None:
  """Checks an OUTPUT_PREFIX before anything is computed.

  Raises:
    DataError: the prefix names a directory (ends with a separator: the files
      would be hidden '.csv' and the like), or the plots' folder
      (`PREFIX.real_data_plots`, made when `visualize` stores plots) is taken by
      a file.
  """
  prefix = os.fspath(prefix)
  if not os.path.basename(prefix) or prefix.endswith(os.sep) or (
      os.altsep and prefix.endswith(os.altsep)):
    raise DataError(f"{prefix}: OUTPUT_PREFIX names a directory; give a file name prefix "
                    f"such as '{os.path.join(prefix, 'twin')}'")
  folder = prefix + ".real_data_plots"
  if visualize in ("store", "both") and os.path.exists(folder) and not os.path.isdir(folder):
    raise DataError(f"{folder}: is a file, but the real-data plots go into a folder of "
                    "that name; move it, or pass --visualize none")


def _is_special(path: str) -> bool:
  """True for an existing path that is neither a regular file nor a directory."""
  import stat
  try:
    mode = os.stat(path).st_mode
  except OSError:
    return False
  return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _same_file(a: str, b: str) -> bool:
  if os.path.exists(a) and os.path.exists(b):
    with contextlib.suppress(OSError):
      return os.path.samefile(a, b)
  return os.path.realpath(a) == os.path.realpath(b)


def _create_temp(directory: str, base: str, file_mode: int = 0o666) -> tuple[str, int]:
  """Creates a new hidden temporary file (O_EXCL) in `directory`."""
  for _ in range(100):
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    try:
      return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
    except FileExistsError:
      continue
  raise FileExistsError(f"cannot create a temporary file in {directory}")


def _fsync_directory(directory: str) -> None:
  """Makes the rename durable where the OS allows it (best effort)."""
  with contextlib.suppress(OSError, AttributeError):
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)
