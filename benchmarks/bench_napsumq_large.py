"""`jtwin napsumq --stream on` against `--stream off` on CSV files of growing size.

The synthetic 15-column table of `bench_large_data.py` (6 categorical columns
with 3 to 50 string levels, a Bernoulli, 4 Normal with 5% missing in one, 2
binned integers, a Poisson, an integer-coded categorical; the model file
leaves a categorical column's categories and missing flag and a Normal
column's edges undeclared, so the DP domain step runs) is written as a CSV
of N rows (chunk by chunk), then the whole command runs twice in fresh child
processes, same seed: in memory (`--stream off`) and streamed (`--stream on`,
the CSV read twice in chunks of --chunk_rows, cell codes in memory-mapped
files next to the output). Reported per run: wall seconds, peak RSS
(ru_maxrss: includes the memory-mapped codes' file pages, which are page
cache) and peak anon (RssAnon sampled every 20 ms: the process's own
memory), and whether the two twins are byte-identical.

  python benchmarks/bench_napsumq_large.py [--rows 1e6 1e7] [--chunk_rows 100000]
      [--options="--k 100 --ensemble 2"] [--dir DIR] [--quick]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shlex
import shutil
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import _bench_common as bc  # noqa: E402
import bench_large_data as large  # noqa: E402


def _child(csv: str, model: str, out: str, stream: str, chunk_rows: int, options: str) -> dict:
  from jtwin.cli import main
  argv = ["napsumq", csv, model, out, "--seed", "0", "--visualize", "none", "--quiet",
          "--stream", stream, "--chunk_rows", str(chunk_rows), "--num_synthetic", "10000",
          *shlex.split(options)]
  with large._AnonPeak() as anon:
    t = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - t
  return {"code": code, "seconds": seconds, "peak_rss": large._peak_rss(),
          "peak_anon": anon.peak}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=float, nargs="+", default=[1e6, 1e7])
  p.add_argument("--chunk_rows", type=int, default=100_000)
  p.add_argument("--options", default="", help="more jtwin napsumq flags, e.g. '--k 100'")
  p.add_argument("--dir", default=None, help="working directory (default: a new temp dir)")
  p.add_argument("--quick", action="store_true",
                 help="3,000 rows and a small fit (a smoke test)")
  p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.rows, args.options = [3000], "--k 8 --ensemble 1 --steps 30"
  if args.child:
    csv, model, out, stream, chunk_rows = args.child[:5]
    print(json.dumps(_child(csv, model, out, stream, int(chunk_rows), args.options)))
    return 0
  print(bc.header("jtwin napsumq, streamed vs in memory, on CSV files of growing size"))
  print(f"# chunk_rows {args.chunk_rows}, options {args.options or '(defaults)'}")
  work = args.dir or tempfile.mkdtemp(prefix="jtwin-napsumq-large-")
  model = os.path.join(work, "model.txt")
  with open(model, "w") as f:
    f.write(large.MODEL)
  print("| N | CSV | in memory: s | peak RSS | peak anon | streamed: s | peak RSS | peak anon "
        "| twins identical |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
  try:
    for rows in (int(r) for r in args.rows):
      csv = os.path.join(work, f"data_{rows}.csv")
      large._write_csv(csv, rows, seed=1)
      size = os.path.getsize(csv) / 2**30
      res = {}
      for stream in ("off", "on"):
        out = os.path.join(work, f"out_{stream}_{rows}")
        res[stream] = large._run_child([csv, model, out, stream, str(args.chunk_rows),
                                        f"--options={args.options}"], script=__file__)
      same = filecmp.cmp(os.path.join(work, f"out_off_{rows}.csv"),
                         os.path.join(work, f"out_on_{rows}.csv"), shallow=False)
      a, b = res["off"], res["on"]
      print(f"| {large._human(rows)} | {size:.2f} GiB | {a['seconds']:.1f} | "
            f"{a['peak_rss']:,.0f} MiB | {a['peak_anon']:,.0f} MiB | {b['seconds']:.1f} | "
            f"{b['peak_rss']:,.0f} MiB | {b['peak_anon']:,.0f} MiB | {'yes' if same else 'NO'} |",
            flush=True)
      os.remove(csv)
  finally:
    if not args.dir:
      shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
