"""`jtwin fit --stream`: the data file encoded in chunks into a memory-mapped table.

The command-line side of `jtwin.table_store`: whether to stream (`--stream`,
`--memmap`), where the table goes, and the `Prepared` data and model built
from it (`jtwin._commands.prepare` for a streamed table).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from jtwin.errors import JtwinInputError

__all__ = ["AUTO_BYTES", "prepare_streamed", "table_directory", "wants_stream"]

AUTO_BYTES = 1 << 30                 # --stream auto: data files larger than this
_COMPRESSED = (".gz", ".bz2", ".xz", ".zip", ".zst", ".tar")
_COMPRESSION_RATIO = 5               # a compressed CSV counts this many times its size
_PLOT_ROWS = 50_000                  # real-data rows decoded for the plots


def wants_stream(args) -> bool:
  """Whether `jtwin fit` streams: `--stream on` or `--memmap DIR`, or (auto) a large file.
  Sets `args.chunk_rows` to its default when it was not given, and warns when it was
  given to a run that does not stream (it would be ignored)."""
  streams = _wants_stream(args)
  if getattr(args, "chunk_rows", None) is None:
    from jtwin.table_store import DEFAULT_CHUNK_ROWS
    args.chunk_rows = DEFAULT_CHUNK_ROWS
  elif not streams:
    import warnings
    warnings.warn(f"--chunk_rows {args.chunk_rows} is ignored: this run reads the whole file "
                  "at once (streaming is --stream on, or auto for a file over 1 GiB)")
  return streams


def _wants_stream(args) -> bool:
  mode = getattr(args, "stream", "off")
  memmap = getattr(args, "memmap", None)
  if mode == "off":
    if memmap:
      raise JtwinInputError("--memmap DIR writes the streamed table: it needs --stream on "
                            "or auto, not off")
    return False
  if mode == "on" or memmap:
    return True
  try:
    size = os.path.getsize(args.data_path)
  except OSError:
    return False                       # read_csv reports the missing file
  if str(args.data_path).lower().endswith(_COMPRESSED):
    size *= _COMPRESSION_RATIO
  return size > AUTO_BYTES


@contextlib.contextmanager
def table_directory(args, streamed: bool):
  """The directory the table store goes to (None when not streaming).

  `--memmap DIR`: DIR (must not exist; kept). Otherwise a temporary directory
  next to OUTPUT_PREFIX (mode 0700; not /tmp, which may be memory), removed
  when the run ends, also on errors and Ctrl-C.
  """
  if not streamed:
    yield None
    return
  if args.memmap:
    target = os.path.abspath(args.memmap)
    if os.path.exists(target):
      raise JtwinInputError(f"--memmap {args.memmap}: already exists; give a new directory "
                            "(it holds the private data: remove old ones)")
    yield target
    return
  parent = os.path.dirname(os.path.abspath(args.output_path))
  tmp = tempfile.mkdtemp(prefix=".jtwin-table-", dir=parent)
  try:
    yield os.path.join(tmp, "table")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def prepare_streamed(args, directory: str, *, release) -> dict:
  """The fields of `jtwin._commands.Prepared` for a table encoded in chunks into `directory`.

  The DP row count and domain come from the streamed counts (noise added once
  to the totals); the model sees the memory-mapped table (`store`). Plots get
  an evenly spaced sample of at most 50,000 rows, decoded.
  """
  import numpy as np
  from jtwin import data as jdata
  from jtwin import table_store
  from jtwin.models import make_mixture_model
  from jtwin.spec import parse_model_file
  if str(args.model_path).endswith(".py"):
    raise JtwinInputError(f"{args.model_path}: --stream needs a model file; a custom .py "
                          "model reads the whole table (use --stream off)")
  spec = parse_model_file(args.model_path)
  from jtwin.marginals.derived import warn_unused_by_dp_vi
  warn_unused_by_dp_vi(spec)
  streamed = table_store.stream_encode(args.data_path, spec, directory,
                                       chunk_rows=args.chunk_rows, drop_na=bool(args.drop_na),
                                       release=release, source=args.data_path)
  store, domain = streamed.store, streamed.store.domain
  model = make_mixture_model(domain.features(), args.k)
  info = {"kind": "mixture", "num_components": int(args.k),
          "features": [list(f) for f in domain.features()]}
  decode = lambda v, o, rng=None: jdata.decode(v, o, domain, rng=rng)
  rows = table_store.sample_rows(store, _PLOT_ROWS)
  frame = decode(np.asarray(store.values[rows]), np.asarray(store.observed[rows]))
  return dict(model=model, values=store.values, observed=store.observed, frame=frame,
              domain=domain, decode=decode, model_info=info,
              inferred=list(domain.inferred_from_data), public=streamed.public, store=store,
              clipped=streamed.clipped)
