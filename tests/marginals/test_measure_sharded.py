"""Counting many marginal tables in one pass: row blocks on the host, rows sharded on devices.

The multi-device checks run in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (as tests/test_parallel.py
does), which runs this file as a script and prints its results as JSON.
"""
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jtwin.errors import JtwinInputError
from jtwin.marginals import counting, counting_sharded
from jtwin.marginals.measure import clique_counts, make_counter

HERE = os.path.abspath(__file__)
SIZES = [3, 5, 2, 7, 4, 1]


def _codes(n, seed=0, sizes=SIZES):
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, s, n) for s in sizes], 1).astype(np.int32)


def _cliques(f=len(SIZES)):
  """1-, 2- and 3-way cliques, mixed (exercises every clique-length group)."""
  cols = range(f)
  return ([(j,) for j in cols] + list(itertools.combinations(cols, 2))
          + list(itertools.combinations(cols, 3))[::3] + [(4, 1)])   # (4, 1): order kept


def _oracle(codes, sizes, cliques):
  out = []
  for c in cliques:
    dims = tuple(sizes[j] for j in c)
    flat = np.ravel_multi_index(tuple(codes[:, j] for j in c), dims)
    out.append(np.bincount(flat, minlength=int(np.prod(dims))).astype(float))
  return out


def _same(a, b):
  return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y)
                                  for x, y in zip(a, b))


# ------------------------------------------------------------ in-process (host)
@pytest.mark.parametrize("block_rows", [None, 1, 7, 1000, 5000])
def test_block_counting_equals_clique_counts(block_rows):
  codes = _codes(1003)
  cliques = _cliques()
  got = counting.count_tables(codes, SIZES, cliques, block_rows=block_rows)
  assert _same(got, [clique_counts(codes, SIZES, c) for c in cliques])
  assert all(t.sum() == 1003 for t in got)


def test_block_counting_reads_a_memmap(tmp_path):
  codes = _codes(2000, seed=1).astype(np.int16)
  path = tmp_path / "codes.bin"
  codes.tofile(path)
  mapped = np.memmap(path, np.int16, "r", shape=codes.shape)
  cliques = _cliques()
  assert _same(counting.count_tables(mapped, SIZES, cliques, block_rows=300),
               _oracle(codes, SIZES, cliques))
  assert _same(counting_sharded.count_tables_sharded(mapped, SIZES, cliques, 1, block_rows=300),
               _oracle(codes, SIZES, cliques))


def test_layout_is_the_c_order_concatenation():
  lay = counting.table_layout([3, 5, 2], [(0,), (0, 2), (2, 1, 0)])
  assert lay.offsets.tolist() == [0, 3, 9, 39] and lay.total == 39
  assert lay.strides.tolist() == [[1, 0, 0], [2, 1, 0], [15, 3, 1]]
  assert counting.count_tables(_codes(5), SIZES, []) == []


def test_one_device_counts_equal_host_counts():
  codes = _codes(777, seed=2)
  cliques = _cliques()
  assert _same(counting_sharded.count_tables_sharded(codes, SIZES, cliques, 1, block_rows=50),
               counting.count_tables(codes, SIZES, cliques))


def test_counter_counts_each_clique_once_per_codes(monkeypatch):
  calls = []
  real = counting.count_tables

  def spy(codes, sizes, cliques, **kw):
    calls.append(list(cliques))
    return real(codes, sizes, cliques, **kw)

  monkeypatch.setattr(counting, "count_tables", spy)
  count = make_counter()
  codes = _codes(500, seed=3)
  first = count(codes, SIZES, [(0, 1), (2,), (0, 1)])
  again = count(codes, SIZES, [(2,), (0, 1), (3, 4)])
  assert calls == [[(0, 1), (2,)], [(3, 4)]]          # one pass each, no recount
  assert again[1] is first[0]
  count(codes.copy(), SIZES, [(2,)])                   # other codes: counted afresh
  assert calls[-1] == [(2,)]
  assert _same(first, _oracle(codes, SIZES, [(0, 1), (2,), (0, 1)]))


def test_codes_out_of_range_are_refused():
  codes = _codes(100)
  codes[57, 1] = 5                              # column 1 has 5 cells
  with pytest.raises(ValueError, match="row 57: code 5 outside"):
    counting.count_tables(codes, SIZES, [(0, 1)], block_rows=10)
  assert len(counting.count_tables(codes, SIZES, [(0, 2)])) == 1   # column 1 not counted
  with pytest.raises(ValueError, match="row 57: code 5 outside"):
    counting_sharded.count_tables_sharded(codes, SIZES, [(0, 1)], 1, block_rows=10)


@pytest.mark.parametrize("devices", [0, -1, 2.0])
def test_bad_device_counts_are_refused(devices):
  with pytest.raises(JtwinInputError, match="devices must be a positive integer"):
    make_counter(devices)


def test_above_int32_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(counting_sharded, "MAX_ROWS", 100)
  with pytest.raises(JtwinInputError, match="int32"):
    counting_sharded.count_tables_sharded(_codes(101), SIZES, [(0,)], 1)


# ------------------------------------------------------------ subprocess (8 devices)
@pytest.fixture(scope="module")
def worker():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, HERE], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_1_2_4_8_devices_give_identical_exact_counts(worker):
  for d in ("1", "2", "4", "8"):
    assert worker["exact"][d], d
  assert worker["one_psum"] == [0, 1]     # the block program has none, the reduction one


def test_garbage_in_padding_rows_changes_nothing(worker):
  assert all(worker["garbage_padding"].values())


def test_noise_variance_is_sigma_squared_not_devices_times(worker):
  r = worker["noise"]
  tol = 5 * math.sqrt(2 / r["cells"])
  assert abs(r["var"] / r["sigma"]**2 - 1) < tol, r
  assert r["identical_to_one_device"]


def test_napsumq_two_devices_equal_one(worker):
  r = worker["napsumq"]
  assert r["measurements_equal"] and r["posterior_identical"] and r["cli_identical"], r


@pytest.mark.slow
def test_two_processes_each_read_only_their_own_rows():
  """jax.distributed.initialize on localhost: 2 processes x 1 CPU device each."""
  from _multiprocess import run_two_processes
  got = run_two_processes(HERE)
  assert all(g["devices"] == 2 and g["exact"] for g in got), got
  assert got[0]["read"] == [0, 502] and got[1]["read"] == [502, 1003]


@pytest.mark.slow
def test_bench_measure_sharded_quick():
  bench = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "benchmarks",
                       "bench_measure_sharded.py")
  out = subprocess.run([sys.executable, bench, "--quick"], capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [line.split("|") for line in out.stdout.splitlines() if line.startswith("| 1e+04")]
  assert [r[2].strip() for r in rows] == ["numpy", "block", "dev1", "dev2"], out.stdout
  assert all(r[-2].strip() == "yes" for r in rows) and rows[3][3].strip() == "2", out.stdout


class _OwnRows:
  """The codes of rows [lo, hi) of an N-row table: reading any other row fails."""

  def __init__(self, codes, lo, hi):
    self.codes, self.lo, self.hi, self.shape = codes, lo, hi, codes.shape
    self.read = [hi, lo]

  def __getitem__(self, rows):
    start, stop = rows.start, rows.stop
    assert self.lo <= start and stop <= self.hi, (start, stop, self.lo, self.hi)
    self.read = [min(self.read[0], start), max(self.read[1], stop)]
    return self.codes[rows]


def _process(index, port):
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=index)
  n, rows = 1003, 502                          # R = ceil(1003 / 2): process 0 has 502 rows
  codes, cliques = _codes(n, seed=4), _cliques()
  own = _OwnRows(codes, index * rows, min(n, (index + 1) * rows))
  got = counting_sharded.count_tables_sharded(own, SIZES, cliques, jax.device_count(),
                                              block_rows=37)
  return {"devices": jax.device_count(), "read": own.read,
          "exact": _same(got, _oracle(codes, SIZES, cliques))}


# ------------------------------------------------------------ the worker
def _worker():
  import jax
  from jtwin import parallel
  from jtwin.marginals.measure import gaussian_measure
  n = 1003                      # not a multiple of 2, 4 or 8: every mesh pads
  codes, cliques = _codes(n, seed=4), _cliques()
  want = _oracle(codes, SIZES, cliques)
  out = {"exact": {}, "garbage_padding": {}}
  for d in (1, 2, 4, 8):
    got = counting_sharded.count_tables_sharded(codes, SIZES, cliques, d, block_rows=37)
    out["exact"][str(d)] = _same(got, want) and _same(
        counting_sharded.count_tables_sharded(codes, SIZES, cliques, d), want)
  for fill in (-7, 2**31 - 1, 3):
    counting_sharded._PAD_FILL = fill
    try:
      got = counting_sharded.count_tables_sharded(codes, SIZES, cliques, 8, block_rows=37)
    finally:
      counting_sharded._PAD_FILL = 0
    out["garbage_padding"][str(fill)] = _same(got, want)

  # the block program holds no collective; the reduction exactly one all-reduce
  mesh = parallel.make_mesh(4)
  layout = counting.table_layout(SIZES, cliques)
  add, reduce = counting_sharded._device_programs(mesh, layout)
  acc = counting_sharded._sharded_zeros(mesh, layout.total)
  block = counting_sharded._place_block(codes, n, parallel.rows_per_shard(n, 4), 37, 0, mesh)
  out["one_psum"] = [add.lower(acc, *block).as_text().count("all_reduce"),
                     reduce.lower(acc).as_text().count("all_reduce")]

  # noise: added once to the psummed counts, on the host
  big = [40, 50]
  wide = _codes(5000, seed=5, sizes=big)
  sigma = 3.0
  exact = _oracle(wide, big, [(0, 1)])[0]
  noisy = {}
  for d in (1, 4):
    counts = make_counter(d)(wide, big, [(0, 1)])[0]
    noisy[d] = gaussian_measure(counts, sigma, np.random.default_rng(11))
  out["noise"] = {"var": float(np.var(noisy[4] - exact)), "sigma": sigma, "cells": exact.size,
                  "identical_to_one_device": bool(np.array_equal(noisy[1], noisy[4]))}
  out["napsumq"] = _napsumq()
  del jax
  return out


def _napsumq():
  import jax
  from jtwin import napsumq
  from jtwin.spec import parse_model_text
  sys.path.insert(0, os.path.dirname(HERE))
  from test_napsumq import FAST, MODEL, _frame
  frame, spec = _frame(1501), parse_model_text(MODEL)
  res = {}
  for d in (1, 2):
    res[d] = napsumq.fit_marginals(jax.random.key(3), frame, spec, epsilon=1.0, delta=1e-6,
                                   selection="mst", devices=d, **FAST)
  return {"cli_identical": _cli(frame, MODEL),
          "measurements_equal": res[1].measurements == res[2].measurements,
          "posterior_identical": all(
              np.array_equal(np.asarray(x), np.asarray(y))
              for x, y in zip(jax.tree.leaves(res[1].posterior), jax.tree.leaves(res[2].posterior)))}


def _cli(frame, model):
  """`jtwin napsumq ... --devices 2` writes the same twin as `--devices 1`."""
  import tempfile
  from jtwin.cli import main
  with tempfile.TemporaryDirectory() as tmp:
    data, spec = os.path.join(tmp, "d.csv"), os.path.join(tmp, "m.txt")
    frame.to_csv(data, index=False)
    with open(spec, "w") as f:
      f.write(model)
    out = {}
    for d in (1, 2):
      prefix = os.path.join(tmp, f"out{d}")
      code = main(["napsumq", data, spec, prefix, "--k", "3", "--steps", "50", "--seed", "0",
                   "--visualize", "none", "--quiet", "--devices", str(d)])
      assert code == 0, code
      with open(prefix + ".csv") as f:
        out[d] = f.read()
  return out[1] == out[2]


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "--process":
    print(json.dumps(_process(int(sys.argv[2]), int(sys.argv[3]))))
    raise SystemExit(0)
  print(json.dumps(_worker()))
