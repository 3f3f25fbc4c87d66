"""`fit_marginals` from a CSV read in chunks (data larger than memory)."""
import glob
import os
import tempfile

import jax
import numpy as np
import pandas as pd
import pytest

from jtwin import napsumq
from jtwin.errors import DataError, JtwinInputError
from jtwin.marginals import streamed
from jtwin.spec import parse_model_text

FAST = dict(num_components=4, final_steps=60, posterior_steps=20, ensemble=1)
UNDECLARED = """\
a : Categorical
b : Bernoulli
c : Poisson ; bounds = 0, 4
x : Normal
d : Categorical ; determined_by = a
"""


def _frame(n=2500, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.integers(0, 2, n)
  a = np.where(z, rng.choice(["p", "q", "r"], n, p=[.7, .2, .1]),
               rng.choice(["p", "q", "r"], n, p=[.1, .2, .7])).astype(object)
  a[rng.random(n) < 0.1] = None
  d = np.array([{"p": "P", "q": "Q", "r": "R", None: None}[v] for v in a], dtype=object)
  b = np.where(z, rng.choice(["x", "y"], n, p=[.8, .2]), rng.choice(["x", "y"], n, p=[.3, .7]))
  x = np.round(rng.normal(50 + 20 * z, 10), 2)
  return pd.DataFrame({"a": a, "b": b, "c": np.clip(rng.poisson(1 + 2 * z), 0, 4), "x": x,
                       "d": d, "unused": rng.random(n)})


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
  path = tmp_path_factory.mktemp("stream") / "data.csv"
  frame = _frame()
  frame.to_csv(path, index=False)
  return str(path), pd.read_csv(path)


@pytest.mark.parametrize("selection,chunk_rows", [
    ("all", 700), ("mst", 1000), ("all", 10_000),
    pytest.param("aim", 800, marks=pytest.mark.slow)])
def test_streamed_fit_equals_the_in_memory_fit(csv, selection, chunk_rows):
  """Same key: the same DP release (noise added once to the chunks' summed counts), the
  same noisy tables and the same posterior as the whole file in memory."""
  path, frame = csv
  spec = parse_model_text(UNDECLARED)
  kw = dict(epsilon=1.0, delta=1e-6, selection=selection, target="b", rounds=6, **FAST)
  whole = napsumq.fit_marginals(jax.random.key(7), frame, spec, **kw)
  parts = napsumq.fit_marginals(jax.random.key(7), streamed.CsvSource(path, chunk_rows), spec,
                                **kw)
  assert parts.public.rows == whole.public.rows
  assert parts.public.release.spec == whole.public.release.spec
  assert [c.to_dict() for c in parts.cells] == [c.to_dict() for c in whole.cells]
  assert parts.measurements == whole.measurements
  assert parts.privacy == whole.privacy
  for a, b in zip(jax.tree.leaves(parts.posterior), jax.tree.leaves(whole.posterior)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert [dc.to_dict() for dc in parts.derived] == [dc.to_dict() for dc in whole.derived]
  # the plot rows are raw rows of the file, evenly spaced; the in-memory fit has none
  assert whole.plot_rows is None
  assert len(parts.plot_rows) == len(frame)        # fewer rows than SAMPLE_ROWS: all of them
  pd.testing.assert_frame_equal(parts.plot_rows, frame[list(spec.names)])


def test_work_directory_is_private_and_removed(csv, monkeypatch):
  path, _ = csv
  seen = []
  real = streamed.encode_csv

  def spy(source, spec, directory, **kw):
    seen.append((directory, oct(os.stat(directory).st_mode & 0o777)))
    return real(source, spec, directory, **kw)

  monkeypatch.setattr(streamed, "encode_csv", spy)
  with tempfile.TemporaryDirectory() as parent:
    napsumq.fit_marginals(1, streamed.CsvSource(path, 900, workdir=parent),
                          parse_model_text(UNDECLARED), **FAST)
    assert seen and seen[0][1] == "0o700" and seen[0][0].startswith(parent)
    assert not os.path.exists(seen[0][0]) and os.listdir(parent) == []


def test_bad_line_in_a_later_chunk_names_it_and_leaves_nothing(tmp_path):
  frame = _frame(400)
  frame["x"] = frame["x"].astype(object)
  frame.loc[350, "x"] = "oops"
  path = tmp_path / "bad.csv"
  frame.to_csv(path, index=False)
  work = tmp_path / "work"
  work.mkdir()
  with pytest.raises(DataError, match=r"x.*oops|oops.*x|line 352"):
    napsumq.fit_marginals(1, streamed.CsvSource(str(path), 100, workdir=str(work)),
                          parse_model_text(UNDECLARED), **FAST)
  assert os.listdir(work) == []


def test_streaming_needs_the_domain_released_under_dp(csv):
  path, _ = csv
  with pytest.raises(JtwinInputError, match="--domain dp"):
    napsumq.fit_marginals(1, streamed.CsvSource(path, 1000), parse_model_text(UNDECLARED),
                          domain="data", **FAST)


def test_recode_in_blocks_into_a_file_equals_in_memory(tmp_path):
  codes = np.random.default_rng(0).integers(0, 5, (1003, 3)).astype(np.int32)
  fn = lambda b: np.stack([b[:, 0] * 2, b[:, 2]], axis=1)
  mem = streamed.recode(codes, fn, 2, None, block_rows=100)
  disk = streamed.recode(codes, fn, 2, str(tmp_path / "r.npy"), block_rows=100)
  assert isinstance(disk, np.memmap) and not disk.flags.writeable
  np.testing.assert_array_equal(mem, fn(codes))
  np.testing.assert_array_equal(disk, mem)
  with pytest.raises(JtwinInputError, match="already exists"):
    streamed.recode(codes, fn, 2, str(tmp_path / "r.npy"))
  assert glob.glob(str(tmp_path / "*.npy")) == [str(tmp_path / "r.npy")]


# ----------------------------------------------------------------- command line
def _run(args, capsys):
  from jtwin.cli import main
  code = main(args)
  return code, capsys.readouterr().err


def test_cli_stream_on_writes_what_stream_off_writes(csv, tmp_path, capsys):
  path, _ = csv
  model = tmp_path / "model.txt"
  model.write_text(UNDECLARED)
  common = [str(model), "--k", "4", "--steps", "60", "--ensemble", "1", "--seed", "3",
            "--visualize", "none", "--target", "b"]
  code, err = _run(["napsumq", path, common[0], str(tmp_path / "mem")] + common[1:]
                   + ["--stream", "off"], capsys)
  assert code == 0, err
  code, err = _run(["napsumq", path, common[0], str(tmp_path / "str")] + common[1:]
                   + ["--stream", "on", "--chunk_rows", "600"], capsys)
  assert code == 0, err
  pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "str.csv"), pd.read_csv(tmp_path / "mem.csv"))
  assert (tmp_path / "str.domain.txt").read_text() == (tmp_path / "mem.domain.txt").read_text()
  # nothing of the codes is left next to the outputs
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".jtwin")]


def test_cli_stream_with_a_query_file_is_a_clean_error(csv, tmp_path, capsys):
  path, _ = csv
  queries = tmp_path / "queries.txt"
  queries.write_text("a, b\n")
  out = tmp_path / "out"
  code, err = _run(["napsumq", path, str(queries), str(out), "--stream", "on"], capsys)
  assert code != 0 and "cannot be streamed" in err and "Traceback" not in err
  assert len(err.strip().splitlines()) == 1
  assert not [p for p in os.listdir(tmp_path) if p.startswith("out")]


@pytest.mark.slow
def test_cli_stream_on_plots_from_sampled_raw_rows(csv, tmp_path, capsys):
  path, _ = csv
  model = tmp_path / "model.txt"
  model.write_text(UNDECLARED)
  out = tmp_path / "plotted"
  code, err = _run(["napsumq", path, str(model), str(out), "--k", "4", "--steps", "30",
                    "--ensemble", "1", "--seed", "1", "--stream", "on", "--chunk_rows", "800",
                    "--visualize", "store", "--quiet"], capsys)
  assert code == 0, err
  plots = tmp_path / "plotted.real_data_plots"
  assert plots.is_dir() and sorted(p.name for p in plots.iterdir()) == [
      f"plotted_{kind}_plots.svg" for kind in ("correlation", "marginal", "missing_value")]
  assert "show the REAL data" in err
