"""MST (and optionally AIM) from smartnoise-synth on Adult, scored like `quality_napsumq.py`.

The bundled Adult example is discretised by the bundled model file's public
domain (categories, and the declared bins of the numeric columns; missing
is its own category), the synthesizer runs in its own venv
(`$SNSYNTH_PYTHON`, default /tmp/snsynth/bin/python; install with
`python -m venv /tmp/snsynth && /tmp/snsynth/bin/pip install smartnoise-synth`),
and its rows are decoded back (values drawn uniformly within their bins, as
jtwin decodes binned columns). Scored with `jtwin.evaluate` against the test
rows (target income). smartnoise-synth reads the category sets off the data
(preprocessor_eps = 0), so its epsilon covers less than jtwin's.

  python benchmarks/baselines_smartnoise.py [--epsilons 0.3 1 3] [--synths mst]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_common as common  # noqa: E402

TEST = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "adult", "adult_test.csv")
MISSING = "(missing)"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--epsilons", nargs="+", default=["0.3", "1", "3"])
  ap.add_argument("--synths", nargs="+", default=["mst"])
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--python", default=os.environ.get("SNSYNTH_PYTHON", "/tmp/snsynth/bin/python"))
  args = ap.parse_args(argv)
  print(common.header("smartnoise-synth baselines on Adult (bundled public-domain bins)"))
  if not os.path.isfile(args.python):
    print(f"smartnoise-synth not available ({args.python} not found); see the docstring")
    return 0
  import jtwin
  from jtwin.evaluate import evaluate
  df = jtwin.read_csv(common.ADULT_CSV)
  spec = jtwin.parse_model_file(common.ADULT_MODEL)
  frame = df[list(spec.names)]
  domain = jtwin.resolve_domain(frame, spec)
  enc = jtwin.encode(frame, domain)
  labels = pd.DataFrame({c.name: np.where(enc.observed[:, j],
                                          np.asarray(c.categories, object)[enc.values[:, j].astype(int)],
                                          MISSING)
                         for j, c in enumerate(domain.columns)})
  tmp = tempfile.mkdtemp(prefix="jtwin_snsynth_")
  src = os.path.join(tmp, "adult_cat.csv")
  labels.to_csv(src, index=False)
  test = pd.read_csv(TEST)
  n, delta = len(frame), 0.1 / len(frame)
  print("| synthesizer | epsilon | 1-way TVD | 2-way TVD | 3-way TVD | TSTR AUROC | wall | peak memory |")
  print("|---|---|---|---|---|---|---|---|")
  for name in args.synths:
    for eps in args.epsilons:
      dst = os.path.join(tmp, f"{name}_{eps}.csv")
      run = common.run_child([args.python, os.path.join(HERE, "_smartnoise_shim.py"), name, eps,
                              str(delta), src, dst, str(n), str(args.seed)], timeout=7200)
      if run.returncode != 0:
        print(f"| {name} | {eps} | failed: {run.output.strip().splitlines()[-1][:200]} |")
        continue
      out = pd.read_csv(dst, dtype=str, keep_default_na=False)
      values = np.zeros((len(out), len(domain.columns)), np.float32)
      observed = np.ones_like(values, bool)
      for j, c in enumerate(domain.columns):
        col = out[c.name].to_numpy()
        observed[:, j] = col != MISSING
        index = {lab: i for i, lab in enumerate(c.categories)}
        values[:, j] = [index.get(v, 0) for v in col]
      synth = jtwin.decode(values, observed, domain, rng=np.random.default_rng(args.seed))
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(test, synth, test=test, target="income")
      print(f"| {name} | {eps} | " + " | ".join(
          f"{r[k]:.4f}" for k in ("tvd_1way_mean", "tvd_2way_mean", "tvd_3way_mean",
                                  "utility_auroc_synth")) +
            f" | {run.wall_s:.0f} s | {common.gib(run.max_rss_bytes)} |", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
