"""Data larger than memory: streaming encode to a memory-mapped table, training from it."""
import os

import jax
import numpy as np
import pandas as pd
import pytest

from jtwin import _stream_chunk, batching, dp_domain, infer, table_store
from jtwin import data as jdata
from jtwin.cli import main
from jtwin.errors import DataError, JtwinInputError
from jtwin.models import make_mixture_model
from jtwin.spec import parse_model_text

DECLARED = """\
age : Normal ; bounds = 0, 100 ; integer ; missing
income : Normal ; loc = 50 ; scale = 20 ; integer = no ; missing = no
job : Categorical ; categories = a, b, c, d ; missing
code : Categorical ; categories = 1, 2, 10 ; missing = no
smoker : Bernoulli ; categories = no, yes ; missing = no
visits : Poisson ; bounds = 0, 30 ; missing = no
hours : Categorical ; bins = 0, 20, 40, 60, 100 ; integer ; missing = no
"""

BARE = """\
age : Normal
income : Normal
job : Categorical
code : Categorical
smoker : Bernoulli
visits : Poisson
hours : Categorical ; bins = 0, 20, 40, 60, 100
rare : Categorical
"""


def _frame(n=503, seed=0):
  rng = np.random.default_rng(seed)
  age = rng.integers(18, 90, n).astype(float)
  age[rng.random(n) < 0.1] = np.nan
  age[:60] = np.nan                            # the whole first chunk missing: not an error
  job = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.29, 0.01]).astype(object)
  job[rng.random(n) < 0.05] = None
  rare = np.where(rng.random(n) < 0.02, "x", "y").astype(object)
  rare[7] = None                               # one missing value: its DP flag comes out "no"
  return pd.DataFrame({
      "age": age, "income": np.round(rng.normal(50, 20, n), 2),
      "job": job, "code": rng.choice([1, 2, 10], n),
      "smoker": rng.choice(["no", "yes"], n), "visits": rng.poisson(3.0, n),
      "hours": rng.integers(1, 99, n), "unused": rng.normal(size=n), "rare": rare})


@pytest.fixture
def csv(tmp_path):
  path = tmp_path / "data.csv"
  _frame().to_csv(path, index=False)
  return str(path)


def _in_memory(path, spec, release=None, drop_na=False):
  frame = jdata.select_columns(jdata.read_csv(path), spec, drop_na)
  public = None
  if release is not None:
    public = release(frame, spec)
    frame, spec = public.frame, public.spec
  domain = jdata.resolve_domain(frame, spec, warn=False)
  return jdata.encode(frame, domain), domain, public


def _release(seed):
  def release(frame_or_counts, spec):   # a large budget, so that 503 rows release categories
    return dp_domain.plan_release(np.random.default_rng(seed), frame_or_counts, spec,
                                  epsilon=10.0, domain_epsilon=5.0, delta=None)
  return release


@pytest.mark.parametrize("chunk_rows", [60, 1000])
def test_declared_streaming_encode_equals_in_memory(csv, tmp_path, chunk_rows):
  spec = parse_model_text(DECLARED)
  enc, domain, _ = _in_memory(csv, spec)
  out = table_store.stream_encode(csv, spec, tmp_path / "store", chunk_rows=chunk_rows)
  store = out.store
  assert out.public is None and store.domain == domain
  assert isinstance(store.values, np.memmap) and store.values.dtype == np.float32
  np.testing.assert_array_equal(store.values, enc.values)
  np.testing.assert_array_equal(store.observed, enc.observed)
  assert table_store.declared_domain(spec) == domain
  assert oct(os.stat(tmp_path / "store").st_mode & 0o777) == "0o700"
  again = table_store.open_store(tmp_path / "store")
  np.testing.assert_array_equal(again.values, enc.values)
  assert again.domain == domain


def test_dp_streaming_encode_equals_in_memory(csv, tmp_path):
  spec = parse_model_text(BARE)
  enc, domain, public = _in_memory(csv, spec, _release(5))
  out = table_store.stream_encode(csv, spec, tmp_path / "store", chunk_rows=50,
                                  release=_release(5))
  # same key, same counts -> the identical release (noise once, on the totals)
  assert out.public.rows == public.rows and out.public.spec == public.spec
  assert out.public.release.to_dict() == public.release.to_dict()
  assert "rare" in public.release.drop_missing and "job" in public.release.merged
  assert out.store.domain == domain and out.store.num_rows == len(public.frame) < 503
  np.testing.assert_array_equal(out.store.values, enc.values)
  np.testing.assert_array_equal(out.store.observed, enc.observed)
  other = table_store.stream_encode(csv, spec, tmp_path / "other", chunk_rows=50,
                                    release=_release(6))
  assert other.public.release.to_dict() != public.release.to_dict()   # the noise is real


def test_counts_of_chunks_add_up_to_the_whole():
  spec = parse_model_text(BARE)
  frame = _frame()
  whole = dp_domain.count_domain(frame, spec)
  parts = [dp_domain.count_domain(frame.iloc[i:i + 77], spec) for i in range(0, 503, 77)]
  merged = parts[0]
  for p in parts[1:]:
    merged = dp_domain.merge_counts(merged, p)
  assert merged.rows == whole.rows == 503
  for name, c in whole.columns.items():
    m = merged.columns[name]
    assert m.missing == c.missing
    if c.labels is not None:
      assert list(m.labels.items()) == list(c.labels.items())   # first-appearance order too
    if c.cells is not None:
      np.testing.assert_array_equal(m.cells, c.cells)


def test_chunk_size_is_honoured(csv, tmp_path, monkeypatch):
  seen = []
  encode = jdata.encode
  monkeypatch.setattr(jdata, "encode", lambda df, *a, **k: seen.append(len(df)) or encode(df, *a, **k))
  spec = parse_model_text(DECLARED)
  table_store.stream_encode(csv, spec, tmp_path / "store", chunk_rows=64)
  assert max(seen) == 64 and sum(seen) == 503 and len(seen) == 8


@pytest.mark.parametrize("bad, message", [
    ("income", "data.csv:402: column 'income' has the non-numeric value 'oops'"),
    ("job", "data.csv:402: column 'job' has the value 'zz'"),
    ("fields", "malformed CSV"),
])
def test_bad_line_in_a_later_chunk_leaves_nothing(tmp_path, bad, message):
  df = _frame()
  if bad == "income":
    df["income"] = df["income"].astype(object)
    df.loc[400, "income"] = "oops"
  elif bad == "job":
    df.loc[400, "job"] = "zz"
  path = tmp_path / "data.csv"
  df.to_csv(path, index=False)
  if bad == "fields":
    lines = path.read_text().splitlines()
    lines[401] += ",1"
    path.write_text("\n".join(lines) + "\n")
  spec = parse_model_text(DECLARED)
  with pytest.raises(DataError) as e:
    table_store.stream_encode(str(path), spec, tmp_path / "store", chunk_rows=100)
  assert message in str(e.value) and "\n" not in str(e.value)
  if bad == "fields":
    assert "line 402" in str(e.value)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]   # no store, no temp


def test_undeclared_without_release_is_refused(csv, tmp_path):
  with pytest.raises(JtwinInputError, match="--domain dp"):
    table_store.stream_encode(csv, parse_model_text(BARE), tmp_path / "store")
  with pytest.raises(JtwinInputError, match="already exists"):
    table_store.stream_encode(csv, parse_model_text(DECLARED), tmp_path)
  with pytest.raises(DataError, match="parent directory does not exist"):
    table_store.stream_encode(csv, parse_model_text(DECLARED), tmp_path / "no" / "store")


def test_missing_column_and_empty_file(tmp_path):
  path = tmp_path / "data.csv"
  path.write_text("age,Income\n1,a\n")
  with pytest.raises(DataError, match="column 'income' is not in .*did you mean 'Income'"):
    table_store.stream_encode(str(path), parse_model_text(DECLARED), tmp_path / "s")
  path.write_text("age,job\n")
  with pytest.raises(DataError, match="header but no data rows"):
    table_store.stream_encode(str(path), parse_model_text(DECLARED), tmp_path / "s")
  assert not (tmp_path / "s").exists()


def test_steps_per_gather():
  assert table_store.DEFAULT_CHUNK_ROWS > 0
  assert _stream_chunk.steps_per_gather(100, 10, 4, 10**9) == 100
  assert _stream_chunk.steps_per_gather(100, 10, 4, 200 * 7) == 7     # 15 groups of <= 7
  assert _stream_chunk.steps_per_gather(100, 10, 4, 1) == 1           # never below one step


def test_streaming_fit_equals_in_memory_fit(csv, tmp_path, monkeypatch):
  spec = parse_model_text(DECLARED)
  store = table_store.stream_encode(csv, spec, tmp_path / "store").store
  model = make_mixture_model(store.domain.features(), 3)
  privacy = infer.privacy_plan(503, epsilon=1.0, delta=None, sampling_ratio=0.1, num_epochs=2.5,
                               clipping_threshold=1.0, warm_start=0.1)
  kw = dict(privacy=privacy, warm_start=0.1)
  ref = infer.fit(jax.random.key(7), model, (np.array(store.values), np.array(store.observed)),
                  stream=False, **kw)
  # 3 steps per compiled call: 10 steps per chunk = 4 calls (3 + 3 + 3 + 1)
  width = batching.default_max_batch(503, 0.1)
  monkeypatch.setattr(_stream_chunk, "DEFAULT_CAP_BYTES", 3 * width * 7 * 5)
  assert _stream_chunk.steps_per_gather(10, width, 7, 3 * width * 7 * 5) == 3
  out = infer.fit(jax.random.key(7), model, store, stream=True, **kw)
  assert out.privacy.steps == ref.privacy.steps == 25
  for a, b in zip(jax.tree.leaves(ref.posterior), jax.tree.leaves(out.posterior)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  for k in ("mean_batch_size", "steps", "clip_fraction"):
    np.testing.assert_allclose(ref.diagnostics[k], out.diagnostics[k], rtol=1e-6)


FAST = ["-e", "2", "-q", "0.1", "--k", "3", "--seed", "3", "--visualize", "none", "--quiet"]
# 503 rows: at epsilon = 1 no range of income clears the DP domain's noise (jtwin then
# asks for its bounds); at 8 its quantiles are released, the path compared here
RELEASE = ["--epsilon", "8"]


# some items undeclared (missing flags, a standardisation): released under DP
PARTLY = DECLARED.replace("integer ; missing\n", "integer\n").replace(
    "loc = 50 ; scale = 20 ; integer = no", "integer = no")


def test_cli_stream_equals_in_memory(csv, tmp_path, capsys):
  model = tmp_path / "model.txt"
  model.write_text(PARTLY)
  assert dp_domain.needs_release(parse_model_text(PARTLY))
  assert main(["fit", csv, str(model), str(tmp_path / "mem"), "--stream", "off"] + FAST
              + RELEASE) == 0
  assert main(["fit", csv, str(model), str(tmp_path / "str"), "--stream", "on",
               "--chunk_rows", "100"] + FAST + RELEASE) == 0
  assert (tmp_path / "mem.csv").read_text() == (tmp_path / "str.csv").read_text()
  assert (tmp_path / "mem.domain.txt").read_text() == (tmp_path / "str.domain.txt").read_text()
  leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".jtwin-table")]
  assert leftovers == []                                # the temporary table is removed
  capsys.readouterr()


def test_cli_memmap_keeps_the_table_and_refuses_an_existing_one(csv, tmp_path, capsys):
  model = tmp_path / "model.txt"
  model.write_text(DECLARED)
  table = tmp_path / "table"
  assert main(["fit", csv, str(model), str(tmp_path / "out"), "--memmap", str(table)]
              + FAST) == 0
  store = table_store.open_store(table)
  assert store.num_rows == 503 and (tmp_path / "out.csv").exists()
  assert main(["fit", csv, str(model), str(tmp_path / "out2"), "--memmap", str(table)]
              + FAST) != 0
  assert "already exists" in capsys.readouterr().err
  assert main(["fit", csv, str(model), str(tmp_path / "out3"), "--memmap", str(tmp_path / "t2"),
               "--stream", "off"] + FAST) != 0
  assert not (tmp_path / "out3.csv").exists()


def test_cli_stream_bad_data_writes_nothing(tmp_path, capsys):
  df = _frame()
  df["income"] = df["income"].astype(object)
  df.loc[450, "income"] = "oops"
  df.to_csv(tmp_path / "data.csv", index=False)
  (tmp_path / "model.txt").write_text(DECLARED)
  code = main(["fit", str(tmp_path / "data.csv"), str(tmp_path / "model.txt"),
               str(tmp_path / "out"), "--stream", "on", "--chunk_rows", "100"] + FAST)
  err = capsys.readouterr().err
  assert code == 1 and "data.csv:452: column 'income'" in err and "Traceback" not in err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "model.txt"]


def test_auto_streams_large_files(tmp_path, monkeypatch):
  from types import SimpleNamespace
  from jtwin import _stream_command
  path = tmp_path / "data.csv"
  path.write_text("a\n" + "1\n" * 100)
  args = SimpleNamespace(stream="auto", memmap=None, data_path=str(path))
  assert not _stream_command.wants_stream(args)
  monkeypatch.setattr(_stream_command, "AUTO_BYTES", 100)
  assert _stream_command.wants_stream(args)
  assert not _stream_command.wants_stream(SimpleNamespace(**{**vars(args), "stream": "off"}))


_TWO_DEVICES = r"""
import json, sys, warnings
import jax, numpy as np
warnings.simplefilter("ignore")
from jtwin import _stream_chunk, batching, infer, table_store
from jtwin.models import make_mixture_model
store = table_store.open_store(sys.argv[1])
model = make_mixture_model(store.domain.features(), 3)
privacy = infer.privacy_plan(store.num_rows, epsilon=1.0, delta=None, sampling_ratio=0.1,
                             num_epochs=2.5, clipping_threshold=1.0, warm_start=0.1)
kw = dict(privacy=privacy, warm_start=0.1)
ref = infer.fit(jax.random.key(7), model, (np.array(store.values), np.array(store.observed)),
                stream=False, **kw)
w = batching.default_max_batch(store.num_rows, 0.1)
_stream_chunk.DEFAULT_CAP_BYTES = 3 * w * 7 * 5      # groups of steps, as on one device
out = infer.fit(jax.random.key(7), model, store, stream=True, devices=2, **kw)
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree.leaves(ref.posterior), jax.tree.leaves(out.posterior)))
print(json.dumps({"devices": jax.device_count(), "diff": diff, "steps": out.privacy.steps,
                  "batch": [ref.diagnostics["mean_batch_size"].tolist(),
                            out.diagnostics["mean_batch_size"].tolist()]}))
"""


@pytest.mark.slow
def test_two_devices_each_gather_their_rows_same_result(csv, tmp_path):
  import json
  import subprocess
  import sys
  spec = parse_model_text(DECLARED)
  table_store.stream_encode(csv, spec, tmp_path / "store")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(tmp_path / "store")],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  assert res["devices"] == 2 and res["steps"] == 25
  assert res["batch"][0] == res["batch"][1]            # the same Poisson batches
  assert res["diff"] < 1e-4                            # the same fit up to the psum's rounding


def test_wide_batches_are_summed_in_micro_batches(monkeypatch):
  """Memory independent of the batch width: the clipped sum in micro-batches is the same."""
  import functools
  from jtwin.models import Feature
  model = make_mixture_model((Feature("a", "categorical", 4, True),
                              Feature("b", "normal", 0, False)), 3)
  rng = np.random.default_rng(0)
  values = np.stack([rng.integers(0, 4, 2000), rng.normal(size=2000)], 1).astype(np.float32)
  observed = np.ones_like(values, bool)
  kw = dict(noise_multiplier=1.0, sampling_ratio=0.2, num_epochs=1)
  whole = infer.fit(jax.random.key(1), model, (values, observed), **kw)
  calls = []
  micro = infer._micro_batched
  monkeypatch.setattr(infer, "_micro_batched", lambda f, m: calls.append(m) or micro(f, 64))
  parts = infer.fit(jax.random.key(1), model, (values, observed), **kw)
  assert calls == [infer.MICRO_BATCH]
  for a, b in zip(jax.tree.leaves(whole.posterior), jax.tree.leaves(parts.posterior)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(whole.diagnostics["clip_fraction"],
                                parts.diagnostics["clip_fraction"])


def test_chunks_are_shortened_for_wide_batches():
  """The host draws a chunk's batches at once: chunk x width stays under CHUNK_SLOTS."""
  model = make_mixture_model(table_store.declared_domain(parse_model_text(DECLARED)).features(), 2)
  record = infer.PrivacyRecord("noise_multiplier", 1.0, None, 1.0, 1e-9, 1.0, 0.01, 20000, 1.0,
                               "prv")
  for n, chunk in ((32561, 100), (10**6, 100), (10**7, 82), (10**8, 8)):
    plan = infer.plan_fit(model, n, privacy=record)
    assert plan.chunk == chunk and plan.num_chunks == -(-20000 // chunk)
    assert plan.chunk * batching.default_max_batch(n, 0.01) <= infer.CHUNK_SLOTS or chunk == 1


def test_streamed_resume_equals_uninterrupted_in_memory_run(csv, tmp_path):
  spec = parse_model_text(DECLARED)
  store = table_store.stream_encode(csv, spec, tmp_path / "store").store
  model = make_mixture_model(store.domain.features(), 2)
  kw = dict(noise_multiplier=1.0, sampling_ratio=0.2, num_epochs=3)     # 3 chunks of 5 steps
  ref = infer.fit(jax.random.key(4), model, (np.array(store.values), np.array(store.observed)),
                  stream=False, **kw)

  class Stop(Exception):
    pass

  def stop(done, total, epoch):
    if done >= 10:
      raise Stop
  with pytest.raises(Stop):
    infer.fit(jax.random.key(4), model, store, stream=True, checkpoint=tmp_path / "ckpt",
              checkpoint_every=1, progress=stop, **kw)
  out = infer.fit(None, model, store, stream=True, checkpoint=tmp_path / "ckpt", resume=True,
                  checkpoint_every=1, **kw)
  assert out.privacy.steps == ref.privacy.steps == 15
  for a, b in zip(jax.tree.leaves(ref.posterior), jax.tree.leaves(out.posterior)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(ref.diagnostics["mean_batch_size"],
                                out.diagnostics["mean_batch_size"])
