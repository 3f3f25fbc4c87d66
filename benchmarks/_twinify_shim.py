"""Runs `twinify` (2.0.0) with timestamps at its phase boundaries.

Runs under the TWINIFY venv's Python, never jtwin's:
  TWINIFY_PYTHON benchmarks/_twinify_shim.py OUT.json vi DATA MODEL OUT [options]

It wraps (without changing what they do) the functions that twinify's CLI
calls: pandas.read_csv, the model loader, d3p's accountant
(approximate_sigma), DPSVI.init, the per-epoch progress-bar callback, the
fit, storing the result, sampling (DPVIResult.generate) and DataFrame.to_csv,
then calls twinify's own `main()` and writes the timestamps (seconds since
this process started its script) to OUT.json.
"""
import json
import sys
import time

T0 = time.perf_counter()
MARKS = {}


def mark(name):
  MARKS.setdefault(name, []).append(time.perf_counter() - T0)


def wrap(owner, attr, label, static=False):
  orig = getattr(owner, attr)

  def wrapped(*args, **kwargs):
    mark(label + ":start")
    try:
      return orig(*args, **kwargs)
    finally:
      mark(label + ":end")

  setattr(owner, attr, staticmethod(wrapped) if static else wrapped)
  return wrapped


def main():
  out_json, argv = sys.argv[1], sys.argv[2:]
  import twinify.cli.__main__ as cli
  mark("imported")
  import d3p.dputil
  import d3p.svi
  import pandas as pd
  from twinify.dpvi import dpvi_model
  from twinify.dpvi.dpvi_result import DPVIResult

  wrap(pd, "read_csv", "read_csv")
  cli.vi_parser.set_defaults(load_fn=wrap(cli, "load_cli_dpvi", "model_setup"))
  wrap(d3p.dputil, "approximate_sigma", "accountant")
  wrap(d3p.svi.DPSVI, "init", "svi_init")
  wrap(dpvi_model.DPVIModel, "fit", "fit")
  bar = dpvi_model.SilenceableProgressBar
  orig_update = bar.static_update

  def update(*args, **kwargs):
    mark("epoch_done")
    return orig_update(*args, **kwargs)

  bar.static_update = staticmethod(update)
  wrap(DPVIResult, "store", "store")
  wrap(DPVIResult, "generate", "sampling")
  wrap(pd.DataFrame, "to_csv", "to_csv")
  sys.argv = ["twinify"] + argv
  rc = 1
  try:
    rc = cli.main()
  finally:
    mark("end")
    with open(out_json, "w") as f:
      json.dump({"marks": MARKS, "rc": rc}, f)
  return rc


if __name__ == "__main__":
  sys.exit(main())
