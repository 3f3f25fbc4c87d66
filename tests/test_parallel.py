"""Data-parallel DP training (`jtwin.parallel`, `fit(devices=)`).

The multi-device checks run in a subprocess started with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (8 CPU devices), so this
test process keeps its single device; that subprocess runs this file as a
script (`python tests/test_parallel.py CHECK...`) and prints the results as
JSON. The sampler's splitting is plain numpy and is tested here directly.
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from jtwin import batching, parallel

HERE = os.path.abspath(__file__)


# ------------------------------------------------------------ in-process (numpy)
def _draw_split(n, q, steps, shards, seed=0, width=None):
  rng = np.random.default_rng(seed)
  b = batching.draw(rng, n, q, steps, batching.default_max_batch(n, q))
  rows = parallel.rows_per_shard(n, shards)
  w = parallel.default_shard_width(n, q, shards) if width is None else width
  idx, msk, w = parallel.split_batches(b.indices, b.mask, rows, shards, w)
  return b, idx, msk, w, rows


@pytest.mark.parametrize("n,shards", [(1000, 4), (1003, 8), (37, 2)])
def test_split_batches_hands_every_row_to_its_shard_exactly_once(n, shards):
  b, idx, msk, w, rows = _draw_split(n, 0.1, 50, shards)
  local_idx = idx.reshape(50, shards, w)
  local_msk = msk.reshape(50, shards, w)
  for s in range(50):
    want = sorted(b.indices[s][b.mask[s]].tolist())
    got = sorted((local_idx[s, d][local_msk[s, d]] + d * rows).tolist() for d in range(shards))
    assert sorted(sum(got, [])) == want
  assert np.all(local_idx[local_msk] < rows)
  assert np.all(local_idx[~local_msk] == rows)     # padding slots read the padding row


def test_split_batch_sizes_follow_binomial():
  n, q, steps, shards = 1000, 0.05, 4000, 4
  _, _, msk, w, rows = _draw_split(n, q, steps, shards, seed=3)
  per_shard = msk.reshape(steps, shards, w).sum(2)
  total = per_shard.sum(1)
  mean, var = n * q, n * q * (1 - q)
  # Standard errors of the sample mean and variance of `steps` Binomial draws.
  assert abs(total.mean() - mean) < 4 * math.sqrt(var / steps)
  assert abs(total.var(ddof=1) - var) < 4 * var * math.sqrt(2 / (steps - 1))
  for d in range(shards):                   # each shard: Binomial(R, q)
    m, v = rows * q, rows * q * (1 - q)
    assert abs(per_shard[:, d].mean() - m) < 4 * math.sqrt(v / steps)
  # Independence across shards (Poisson: every row joins on its own).
  corr = np.corrcoef(per_shard.T)[np.triu_indices(shards, 1)]
  assert np.all(np.abs(corr) < 4 / math.sqrt(steps))


def test_split_batches_overflow_widens_never_truncates():
  b, idx, msk, w, rows = _draw_split(400, 0.2, 30, 4, width=3)
  assert w > 3 and msk.sum() == b.mask.sum()
  assert w == msk.reshape(30, 4, w).sum(2).max() + 8


def test_too_many_devices_is_a_clear_error():
  from jtwin.errors import JtwinInputError
  with pytest.raises(JtwinInputError, match="xla_force_host_platform_device_count=64"):
    parallel.make_mesh(64)


# ------------------------------------------------------------ subprocess (8 devices)
def _run_worker(*checks, timeout=600):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, HERE, *checks], capture_output=True, text=True,
                       env=env, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def worker():
  return _run_worker("devices", "noise")


def test_devices_give_the_same_result_as_one_device(worker):
  r = worker["devices"]
  assert r["max_diff"] < 1e-5, r
  assert r["same_batches"], r
  assert r["traces"] == 1          # one compilation for a multi-chunk sharded run


def test_parameter_replicas_identical(worker):
  assert worker["devices"]["num_replicas"] == 4
  assert worker["devices"]["replicas_identical"]


def test_noise_is_added_once(worker):
  r = worker["noise"]
  want = r["expected_var"]
  for d, var in r["var"].items():    # sigma^2 C^2 / q^2, not D times that
    assert abs(var / want - 1) < 5 * math.sqrt(2 / r["num_coords"]), (d, var, want)
  assert r["identical_across_devices"]


def test_nan_in_padding_rows_changes_nothing(worker):
  assert worker["devices"]["nan_padding_identical"]


@pytest.mark.slow
def test_two_and_eight_devices_and_overflow_path():
  r = _run_worker("two_eight", "overflow", "resume_sharded")
  assert r["resume_sharded"]["identical"]                   # same device count: exact
  assert r["resume_sharded"]["other_devices_diff"] < 1e-5   # resumed on 1 device: rounding
  for d in ("2", "8"):
    assert r["two_eight"]["max_diff"][d] < 1e-5 and r["two_eight"]["same_batches"][d]
  assert r["overflow"]["widened"]
  assert r["overflow"]["max_diff"] < 1e-5 and r["overflow"]["same_batches"]


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_device():
  """jax.distributed.initialize on localhost: 2 processes x 1 CPU device each."""
  from _multiprocess import run_two_processes
  got = run_two_processes(HERE)
  assert got[0] == got[1]                          # both processes hold the same result
  assert got[0]["devices"] == 2
  one = _fit(1)
  import jax
  for x, y in zip(jax.tree.leaves(one.posterior), got[0]["leaves"]):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y, np.float32), atol=1e-5)
  assert got[0]["mean_batch_size"] == one.diagnostics["mean_batch_size"].tolist()


@pytest.mark.slow
def test_bench_devices_quick_prints_the_ratio():
  bench = os.path.join(os.path.dirname(os.path.dirname(HERE)), "benchmarks", "bench_devices.py")
  out = subprocess.run([sys.executable, bench, "--quick"], capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  rows = [line.split() for line in out.stdout.splitlines() if line.startswith(" synthetic")]
  assert [r[2] for r in rows] == ["1", "2"] and rows[1][-1].endswith("x"), out.stdout


# ------------------------------------------------------------ the worker
def _data(n, seed=0):
  rng = np.random.default_rng(seed)
  z = rng.random(n) < 0.3
  x0 = np.where(z, rng.normal(-2.0, 0.5, n), rng.normal(1.5, 0.7, n))
  x1 = rng.integers(0, 3, n)
  x2 = (rng.random(n) < np.where(z, 0.9, 0.2)).astype(float)
  values = np.stack([x0, x1, x2], 1).astype(np.float32)
  return values, np.ones_like(values, bool)


def _model():
  from jtwin.models import Feature, make_mixture_model
  return make_mixture_model([Feature("x", "normal"), Feature("c", "categorical", 3),
                             Feature("b", "bernoulli", 2)], 2)


N = 203    # not a multiple of 2, 4 or 8: every mesh has padding rows
FIT = dict(sampling_ratio=0.1, num_epochs=3)


def _privacy():
  """A fixed record (sigma = 1, T = 30): skips the accountant, which is not tested here."""
  from jtwin import infer
  return infer.PrivacyRecord("noise_multiplier", 1.0, None, 1.0, 1e-3, 1.0, 0.1,
                             infer.num_steps(3, 0.1), 1.0, "fixed for the test")


def _fit(devices, model=None):
  import jax
  from jtwin import infer
  values, observed = _data(N)
  return infer.fit(jax.random.key(7), model or _model(), (values, observed),
                   devices=devices, privacy=_privacy(), **FIT)


def _fit_state(devices, model=None):
  """`fit`'s three phases by hand, keeping the final (sharded) state."""
  import jax
  from jtwin import infer
  values, observed = _data(N)
  model = model or _model()
  plan = infer.plan_fit(model, N, devices=devices, privacy=_privacy(), **FIT)
  run = infer.setup_fit(jax.random.key(7), model, values, observed, plan)
  state, diag, _, _ = infer.run_loop(plan, run, values, observed)
  return infer._result(plan, run, state, diag, model, {}), state


def _compare(a, b):
  import jax
  diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a.posterior), jax.tree.leaves(b.posterior)))
  same = bool(np.array_equal(a.diagnostics["mean_batch_size"],
                             b.diagnostics["mean_batch_size"]))
  return diff, same


def _identical(a, b):
  import jax
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a.posterior), jax.tree.leaves(b.posterior)))


def _check_devices():
  """1 vs 4 devices (closed-form path); replicas; NaN padding rows."""
  base = _model()
  traces = []

  def counted(*args, **kwargs):
    traces.append(1)
    return base.clipped_grad_sum(*args, **kwargs)

  one = _fit(1)
  four, state = _fit_state(4, base._replace(clipped_grad_sum=counted))
  out = dict(zip(("max_diff", "same_batches"), _compare(one, four)))
  out["traces"] = len(traces)
  replicas = [[np.asarray(s.data) for s in leaf.addressable_shards]
              for leaf in (state.params, state.average, state.theta)]
  out["num_replicas"] = len(replicas[0])
  out["replicas_identical"] = all(np.array_equal(r[0], x) for r in replicas for x in r)
  parallel._PAD_FILL = float("nan")
  try:
    nan = _fit(4)
  finally:
    parallel._PAD_FILL = 0.0
  out["nan_padding_identical"] = _identical(four, nan) and bool(np.array_equal(
      four.diagnostics["mean_log_lik"], nan.diagnostics["mean_log_lik"]))
  return out


def _check_two_eight():
  one = _fit(1)
  out = {"max_diff": {}, "same_batches": {}}
  for d in (2, 8):
    out["max_diff"][str(d)], out["same_batches"][str(d)] = _compare(one, _fit(d))
  return out


def _check_noise():
  """One SGD step (rate 1) of a model whose likelihood has zero gradient."""
  import jax
  import jax.numpy as jnp
  import optax
  from jtwin import dp, infer
  from jtwin.models import Model
  size, n, q, sigma, clip = 4000, 64, 0.25, 1.3, 2.0
  model = Model(init=lambda k: {"a": jnp.zeros(size)},
                log_prior=lambda t: 0.0 * jnp.sum(t["a"]),
                log_likelihood=lambda t, x, o: 0.0 * jnp.sum(t["a"]) * jnp.sum(x),
                sample=lambda k, t, m: (jnp.zeros((m, 1)), jnp.ones((m, 1), bool)))
  flat = infer._flat_layout(model)
  values, observed = np.ones((n, 1), np.float32), np.ones((n, 1), bool)
  opt = optax.sgd(1.0)
  rng = np.random.default_rng(0)
  b = batching.draw(rng, n, q, 1, batching.default_max_batch(n, q))
  out = {"var": {}, "num_coords": size, "expected_var": (sigma * clip / q) ** 2}
  locs = []
  for d in (1, 4):
    params = jnp.zeros(2 * size)      # donated: fresh buffers per run
    agg = dp.dp_aggregate(sigma * clip, 1.0 / q, jax.random.key(5))
    state = infer.TrainState(params, opt.init(params), agg.init(params), jnp.zeros(2 * size),
                             jnp.zeros((), jnp.int32), *infer._draw(jnp.zeros(size), params, size))
    k_eps, k_noise = jax.random.key(11), jax.random.key(12)
    active = np.ones(1, bool)
    if d == 1:
      step = infer.make_step(model, opt, agg, clip, flat)
      runner = infer.make_chunk_runner(step, size)
      new, _, _ = runner(state, (b.indices, b.mask, active), k_eps, k_noise,
                         jnp.asarray(values), jnp.asarray(observed))
    else:
      step = infer.make_step(model, opt, agg, clip, flat, axis_name=parallel.AXIS)
      mesh = parallel.make_mesh(d)
      runner = parallel.make_sharded_chunk_runner(step, size, mesh)
      table = parallel.shard_table(values, observed, mesh)
      idx, msk, _ = parallel.split_batches(b.indices, b.mask, table.rows, d,
                                           parallel.default_shard_width(n, q, d))
      new, _, _ = runner(parallel.replicate(state, mesh),
                         parallel.place_batches(mesh, idx, msk, active),
                         *parallel.replicate((k_eps, k_noise), mesh), table.values,
                         table.observed)
    loc = np.asarray(new.params[:size])
    locs.append(loc)
    out["var"][str(d)] = float(np.mean(loc ** 2))     # the mean is exactly 0
  out["identical_across_devices"] = bool(np.array_equal(locs[0], locs[1]))
  return out


def _check_resume_sharded():
  """Interrupted on 4 devices after 2 of 3 chunks, resumed on 4 and on 1."""
  import shutil
  import tempfile
  import jax
  from jtwin import infer
  values, observed = _data(N)

  class Stop(Exception):
    pass

  def stop(done, total, epoch):
    if done >= 20:
      raise Stop

  base = _fit(4)
  with tempfile.TemporaryDirectory() as tmp:
    ckpt = os.path.join(tmp, "ckpt")
    kw = dict(privacy=_privacy(), checkpoint=ckpt, checkpoint_every=1, **FIT)
    try:
      infer.fit(jax.random.key(7), _model(), (values, observed), devices=4, progress=stop, **kw)
    except Stop:
      pass
    shutil.copytree(ckpt, ckpt + "_copy")
    resumed = infer.fit(None, _model(), (values, observed), devices=4, resume=True, **kw)
    kw["checkpoint"] = ckpt + "_copy"
    on_one = infer.fit(None, _model(), (values, observed), devices=1, resume=True, **kw)
  return {"identical": _identical(base, resumed), "other_devices_diff": _compare(base, on_one)[0]}


def _check_overflow():
  one = _fit(1)
  widths = []
  real_split = parallel.split_batches

  def spy(indices, mask, rows, shards, width):
    out = real_split(indices, mask, rows, shards, width)
    widths.append((width, out[2]))
    return out

  real_default = parallel.default_shard_width
  parallel.default_shard_width = lambda n, q, d: 2        # far below the ~5 rows per shard
  parallel.split_batches = spy
  try:
    many = _fit(4)
  finally:
    parallel.default_shard_width, parallel.split_batches = real_default, real_split
  diff, same = _compare(one, many)
  return {"widened": widths[0][0] == 2 and widths[0][1] > 2, "max_diff": diff,
          "same_batches": same}


def _process(index, port):
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=index)
  result = _fit(jax.device_count())
  return {"devices": jax.device_count(),
          "leaves": [np.asarray(x).tolist() for x in jax.tree.leaves(result.posterior)],
          "mean_batch_size": result.diagnostics["mean_batch_size"].tolist()}


if __name__ == "__main__":
  if sys.argv[1] == "--process":
    print(json.dumps(_process(int(sys.argv[2]), int(sys.argv[3]))))
    raise SystemExit(0)
  checks = {"devices": _check_devices, "two_eight": _check_two_eight, "noise": _check_noise,
            "overflow": _check_overflow, "resume_sharded": _check_resume_sharded}
  print(json.dumps({name: checks[name]() for name in sys.argv[1:]}))
