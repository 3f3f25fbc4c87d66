"""DP variational inference: Poisson-sampled, per-example-clipped DP-SGD.

`fit` maximises the ELBO of a `jtwin.models.Model` under a mean-field Gaussian
posterior. Each step:

  1. draws eps ~ N(0, I) and theta = loc + softplus(raw_scale) * eps (one
     reparameterised draw shared by the batch; eps is data-independent);
  2. takes a Poisson batch (`jtwin.batching`), padded to a static shape;
  3. computes G = sum_i clip_C(g_i), g_i = grad_theta log p(x_i | theta), the
     per-example gradient clipped to global L2 norm C over the whole
     parameter pytree, exactly (`Model.clipped_grad_sum`, or `vmap(grad)`
     for custom models); padding rows contribute exactly zero;
  4. releases G~ = (G + N(0, (sigma C)^2 I)) / q (`jtwin.dp.dp_aggregate`);
  5. maps G~ to the variational parameters phi = (loc, raw_scale) by the
     chain rule (G~, G~ * eps * sigmoid(raw_scale)): a data-independent
     linear map, i.e. post-processing;
  6. adds the exact gradients of log p(theta) and of the entropy of q;
  7. takes an Adam step (default: learning rate 3e-3 with cosine decay; the
     returned posterior is an exponential moving average of the iterates).
     In single-seed runs on Adult at epsilon = 1 (development experiments,
     not a committed benchmark) this gave a lower 1-way marginal error than
     twinify's constant 1e-3 and last iterate.

Why clip and noise the theta-gradient rather than the phi-gradient: the
per-example phi-gradient is (g_i, g_i * d) with the same d for every example,
so privatising g's sum and applying the chain rule afterwards releases the
same information with half the noise dimensions and without spending the
clipping budget on a deterministic copy; the raw_scale gradient's noise then
scales with d like its signal. Only step 4 touches the data, and its
sensitivity under add/remove-one is C, which is what `jtwin.accounting`
accounts for.

Steps run as `lax.scan` inside `jit`, one epoch (ceil(1/q) steps) per call,
so progress and non-finite checks happen on the host between chunks; a run
compiles once. The number of steps that runs, T = ceil(num_epochs / q), is
exactly the number accounted.

`fit` is three phases, each usable on its own: `plan_fit` (privacy
calibration and schedule, from public inputs only), `setup_fit` (keys per
purpose, DP warm start, initial state) and `run_loop` (the chunks). With
`devices=D` the loop runs data-parallel (`jtwin.parallel`); with
`checkpoint=DIR` it saves and resumes (`jtwin.checkpoint`).
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jtwin import batching, dp
from jtwin._rng import numpy_generator_from_bits, root_key
from jtwin.errors import JtwinInputError, NonFiniteError
from jtwin.models import posterior as post
from jtwin.models.interface import Model

Array = jax.Array


class PrivacyRecord(NamedTuple):
  """What was spent, as certified for the code that ran.

  Attributes:
    mode: "calibrated" (sigma chosen for epsilon_target), "noise_multiplier"
      (sigma given, epsilon reported) or "non-private" (NO privacy).
    epsilon: the certified upper bound on epsilon (inf when non-private).
    epsilon_target: the requested epsilon (None if sigma was given).
    epsilon_estimate: the accountant's point estimate (for information).
    delta: delta.
    noise_multiplier: sigma (noise std on the clipped sum is sigma * C).
    sampling_ratio: q, the Poisson sampling probability.
    steps: T, the number of DP-SGD steps that ran.
    clipping_threshold: C.
    accountant: which accountant certified `epsilon` ("prv", "rdp", ...).
    relation: the neighbouring relation ("add/remove one row").
    warm_start_epsilon: the part of `epsilon` (and `warm_start_delta` of
      `delta`) spent on the DP warm start (noisy marginals, analytic Gaussian
      mechanism), composed with DP-SGD by basic composition; 0 if none.
    warm_start_delta: see above.
    warm_start_noise: the warm start's noise multiplier (0 if none).
  """
  mode: str
  epsilon: float
  epsilon_target: Optional[float]
  epsilon_estimate: float
  delta: float
  noise_multiplier: float
  sampling_ratio: float
  steps: int
  clipping_threshold: float
  accountant: str
  relation: str = "add/remove one row"
  warm_start_epsilon: float = 0.0
  warm_start_delta: float = 0.0
  warm_start_noise: float = 0.0


class TrainState(NamedTuple):
  """Training state (flat [2P] parameters: posterior loc then raw_scale).

  `theta` and `dscale` hold the NEXT step's reparameterised draw, computed at
  the end of the previous step: carrying it through the scan materialises it,
  so XLA cannot fuse the draw (softplus, erfinv) into every [B, K, D] consumer
  and recompute it B times (measured: 5x slower steps).
  """
  params: Array
  opt_state: Any
  dp_state: dp.DPAggregateState
  average: Array           # [2P] exponential moving average of params (post-processing)
  count: Array             # [] steps taken
  theta: Array             # [P] theta = loc + softplus(raw_scale) * eps
  dscale: Array            # [P] eps * sigmoid(raw_scale) = d theta / d raw_scale


def _draw(eps: Array, params: Array, size: int) -> tuple[Array, Array]:
  """A reparameterised draw theta ~ q and d theta / d raw_scale (flat)."""
  loc, raw = params[:size], params[size:]
  return loc + post.scale_of(raw) * eps, eps * jax.nn.sigmoid(raw)


class StepInfo(NamedTuple):
  """Per-step diagnostics (NON-private: computed from the batch)."""
  num_clipped: Array
  num_nonfinite: Array
  log_lik_sum: Array
  batch_size: Array


class FitResult(NamedTuple):
  """Result of `fit`.

  Attributes:
    posterior: the variational parameters (DP: a post-processing of the noisy
      gradients).
    privacy: the `PrivacyRecord`.
    diagnostics: per-epoch arrays (clip fraction, non-finite count, mean
      batch log-likelihood, mean realised batch size): NON-private
      statistics of the data, for the data holder only; not stored in result
      files.
    model: the model that was fitted.
    num_examples: N, the exact number of training rows (NOT private: keep it with
      the data; the row count jtwin releases is the DP estimate).
    timings: seconds per phase ("calibration", "compile", "training").
  """
  posterior: post.MeanFieldParams
  privacy: PrivacyRecord
  diagnostics: dict
  model: Model
  num_examples: int
  timings: dict


def num_steps(num_epochs: float, sampling_ratio: float) -> int:
  """T = ceil(num_epochs / q) (an epoch is 1/q steps in expectation)."""
  return max(1, int(math.ceil(num_epochs / sampling_ratio - 1e-9)))


STREAM_BYTES = 1 << 30   # auto: a table larger than this is gathered per step on the host


def _unpack_data(data):
  if getattr(data, "validated", False) is True:   # a `jtwin.table_store.TableStore`
    return data.values, data.observed             # memory maps, checked when written
  if hasattr(data, "values") and hasattr(data, "observed") and not callable(data.values):
    values, observed = data.values, data.observed
  else:
    values, observed = data
  values = np.asarray(values, np.float32)
  observed = np.asarray(observed, bool)
  if values.ndim != 2 or values.shape != observed.shape:
    raise ValueError(f"data must be values [N, D] and observed [N, D], got "
                     f"{values.shape} and {observed.shape}")
  if not np.all(np.isfinite(values[observed])):
    raise ValueError("data values must be finite where observed")
  return np.where(observed, values, 0.0).astype(np.float32), observed


def _check_against_model(model: Model, values: np.ndarray, observed: np.ndarray) -> None:
  """Encoded arrays that fit the model's columns: their number, and category codes in
  range (a wrong code would index outside a parameter table, which JAX does not refuse)."""
  from jtwin._validate import check_codes
  features = model.features
  if not features:
    return
  if values.shape[1] != len(features):
    raise ValueError(f"data have {values.shape[1]} columns, the model {len(features)} "
                     f"({', '.join(f.name for f in features)}): encode the data with the "
                     "model's domain")
  check_codes(values, observed, [f.name for f in features],
              [f.num_categories if f.family in ("categorical", "bernoulli") else None
               for f in features], what="data")


def _validate(epsilon, delta, sampling_ratio, num_epochs, clip, n):
  if not (0 < sampling_ratio <= 1):
    raise JtwinInputError(f"sampling ratio q must be in (0, 1], got {sampling_ratio}")
  if not num_epochs > 0:
    raise JtwinInputError(f"number of epochs must be > 0, got {num_epochs}")
  if not clip > 0:
    raise JtwinInputError(f"clipping threshold must be > 0, got {clip}")
  if epsilon is not None and not epsilon > 0:
    raise JtwinInputError(f"epsilon must be > 0, got {epsilon}")
  if delta is not None and not (0 < delta < 1):
    raise JtwinInputError(f"delta must be in (0, 1), got {delta}")
  if n < 1:
    raise JtwinInputError("the data set has no rows")


def privacy_plan(num_examples: int, *, epsilon: Optional[float], delta: Optional[float],
                 sampling_ratio: float, num_epochs: float, clipping_threshold: float,
                 noise_multiplier: Optional[float] = None, max_epsilon: Optional[float] = None,
                 non_private: bool = False, warm_start: float = 0.0) -> PrivacyRecord:
  """Chooses sigma (or reports epsilon) from public inputs only.

  delta defaults to 0.1 / N (twinify 2.0's choice); a delta above 1/N gets a
  warning, since it would allow releasing a whole row.

  warm_start: the fraction f of (epsilon, delta) spent on a DP warm start
  (`Model.warm_start`, Gaussian mechanism with noise multiplier calibrated
  exactly to (f epsilon, f delta)); DP-SGD gets ((1 - f) epsilon, (1 - f)
  delta) and the two add up (basic composition). Only in calibrated mode;
  0 disables it.
  """
  from jtwin import accounting  # local: keeps `import jtwin` light
  n, q = num_examples, sampling_ratio
  _validate(epsilon, delta, q, num_epochs, clipping_threshold, n)
  steps = num_steps(num_epochs, q)
  if delta is None:
    delta = 0.1 / n
  elif delta > 1.0 / n:
    warnings.warn(f"delta = {delta:g} is larger than 1/N = {1.0 / n:g}: such a guarantee "
                  "allows a mechanism that publishes a random row; use delta < 1/N",
                  stacklevel=2)
  if non_private:
    return PrivacyRecord("non-private", math.inf, None, math.inf, delta, 0.0, q, steps,
                         math.inf, "none")
  if noise_multiplier is not None:
    if not noise_multiplier > 0:
      raise JtwinInputError(f"noise multiplier must be > 0, got {noise_multiplier}")
    if max_epsilon is not None:
      fit_steps = accounting.steps_for_epsilon(max_epsilon, noise_multiplier, q, delta)
      if fit_steps < steps:
        warnings.warn(f"max_epsilon = {max_epsilon:g} allows only {fit_steps} of the "
                      f"{steps} steps; training stops there", stacklevel=2)
        steps = fit_steps
    bounds = accounting.epsilon(noise_multiplier, q, steps, delta)
    upper = float(bounds.upper)
    if max_epsilon is not None:
      # `steps_for_epsilon` certified T (>= steps) at a finer eps_error than
      # the default above; epsilon grows with T, so max_epsilon is a
      # certified bound here too, and the smaller of the two is recorded.
      upper = min(upper, float(max_epsilon))
    return PrivacyRecord("noise_multiplier", upper, None, min(float(bounds.estimate), upper),
                         delta, float(noise_multiplier), q, steps, clipping_threshold,
                         bounds.accountant)
  if epsilon is None:
    raise JtwinInputError("give epsilon, noise_multiplier, or non_private=True")
  if max_epsilon is not None and epsilon > max_epsilon:
    raise JtwinInputError(f"epsilon = {epsilon:g} exceeds max_epsilon = {max_epsilon:g}")
  if not 0.0 <= warm_start < 1.0:
    raise JtwinInputError(f"warm_start must be a fraction in [0, 1), got {warm_start}")
  if warm_start == 0.0:
    cal = accounting.calibrate_noise(epsilon, delta, q, steps)
    return PrivacyRecord("calibrated", float(cal.bounds.upper), float(epsilon),
                         float(cal.bounds.estimate), delta, float(cal.noise_multiplier), q,
                         steps, clipping_threshold, cal.bounds.accountant)
  from jtwin.accounting import gaussian
  eps_w, delta_w = warm_start * epsilon, warm_start * delta
  sigma_w = gaussian.gaussian_noise_multiplier(eps_w, delta_w)
  eps_w = min(eps_w, gaussian.gaussian_epsilon(sigma_w, delta_w))
  cal = accounting.calibrate_noise(epsilon - warm_start * epsilon, delta - delta_w, q, steps)
  return PrivacyRecord(
      "calibrated", float(cal.bounds.upper + eps_w), float(epsilon),
      float(cal.bounds.estimate + eps_w), delta, float(cal.noise_multiplier), q, steps,
      clipping_threshold, f"{cal.bounds.accountant} + analytic Gaussian (basic composition)",
      warm_start_epsilon=float(eps_w), warm_start_delta=float(delta_w),
      warm_start_noise=float(sigma_w))


def _clipped_sum_fn(model: Model) -> Callable:
  if model.clipped_grad_sum is not None:
    return model.clipped_grad_sum
  return functools.partial(dp.vmap_clipped_grad_sum, model.log_likelihood)


class _FlatLayout(NamedTuple):
  """Ravel/unravel between the theta pytree and one flat vector of size P."""
  size: int
  unravel: Callable


def _ravel(tree) -> Array:
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _flat_layout(model: Model) -> _FlatLayout:
  """The flat layout of `model`'s parameters, from shapes only (no compute)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  leaves, treedef = jax.tree.flatten(shapes)
  sizes = [int(np.prod(x.shape, dtype=np.int64)) for x in leaves]
  offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

  def unravel(vector):
    parts = [vector[offsets[i]:offsets[i + 1]].reshape(x.shape) for i, x in enumerate(leaves)]
    return jax.tree.unflatten(treedef, parts)

  return _FlatLayout(int(offsets[-1]), unravel)


def _grad_unscale(model: Model, clip: float) -> Optional[np.ndarray]:
  """The model's flat `grad_unscale` factors (None: all ones)."""
  if model.grad_unscale is None:
    return None
  scale = np.concatenate([np.ravel(np.asarray(x, np.float32))
                          for x in jax.tree.leaves(model.grad_unscale(clip))])
  if not (np.all(np.isfinite(scale)) and np.all(scale >= 1.0)):
    raise ValueError("Model.grad_unscale must be finite and >= 1")
  return None if np.all(scale == 1.0) else scale


MICRO_BATCH = 1 << 15   # rows per clipped sum: a larger batch is summed in micro-batches
CHUNK_SLOTS = 1 << 23   # batch slots (steps x padded width) per chunk: q N > 83,000 shortens it


def _micro_batched(clipped_sum: Callable, micro_batch: Optional[int]) -> Callable:
  """`clipped_sum` over a batch of W rows as a `lax.scan` over micro-batches of
  `micro_batch` rows (padding rows, mask False, add exactly zero), when W is
  larger: the per-row work arrays ([rows, K, D] for the mixture) then take
  O(micro_batch), not O(W), memory. The sum is the same up to float rounding.
  """
  if micro_batch is None:
    return clipped_sum

  def summed(theta, weights, xb, ob, mask, clip):
    w = xb.shape[0]
    if w <= micro_batch:
      return clipped_sum(theta, weights, xb, ob, mask, clip)
    m = -(-w // micro_batch)
    pad = m * micro_batch - w
    parts = (jnp.pad(xb, ((0, pad), (0, 0))).reshape(m, micro_batch, -1),
             jnp.pad(ob, ((0, pad), (0, 0))).reshape(m, micro_batch, -1),
             jnp.pad(mask, (0, pad)).reshape(m, micro_batch))
    shapes = jax.eval_shape(lambda x, o, k: clipped_sum(theta, weights, x, o, k, clip),
                            *(p[0] for p in parts))
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

    def body(total, part):
      return jax.tree.map(jnp.add, total, clipped_sum(theta, weights, *part, clip)), None

    return jax.lax.scan(body, zeros, parts)[0]

  return summed


def make_step(model: Model, optimizer: optax.GradientTransformation,
              aggregator: optax.GradientTransformation, clip: float,
              flat: _FlatLayout, average_decay: float = 0.0,
              axis_name: Optional[str] = None,
              micro_batch: Optional[int] = MICRO_BATCH) -> Callable:
  """One DP-VI step `(state, xs, values, observed) -> (state, info)`.

  xs = (indices [B], mask [B], active [], eps_next [P], noise [P]): the
  Poisson batch, whether the step is real (the last chunk may be padded with
  inactive steps), the N(0, I) draw for the NEXT step's theta, and this
  step's standard-normal DP noise (`dp.wide_normal`). All randomness is drawn
  per chunk from per-purpose keys outside the step.

  The variational parameters are one flat vector phi = [loc (P), raw_scale (P)]
  so that noise, Adam and the chain rule are single array operations. The
  per-example gradients w.r.t. theta are clipped and noised (see the module
  docstring); `noise` in xs is [P]. A model with `grad_unscale` returns the
  clipped sum in scaled coordinates; the noisy sum is multiplied back by it
  (post-processing of the sensitivity-C Gaussian mechanism).

  With `axis_name` (data parallel, inside `jax.shard_map`), `values`,
  `observed` and the batch are one shard's; its clipped sum and diagnostics
  are `psum`med over the axis BEFORE the noise, which every replica adds
  identically (same `noise`), so it is added once (`jtwin.parallel`).

  A batch wider than `micro_batch` rows (e.g. q N > 32768) is clipped and
  summed in micro-batches (`_micro_batched`): memory independent of the
  batch size, same sum up to rounding; None: in one go.
  """
  clipped_sum = _micro_batched(_clipped_sum_fn(model), micro_batch)
  unscale = _grad_unscale(model, clip)
  grad_prior = model.grad_log_prior or jax.grad(model.log_prior)
  size, unravel = flat.size, flat.unravel

  ravel = _ravel

  def step(state: TrainState, xs, values, observed):
    indices, mask, active, eps_next, noise = xs
    raw = state.params[size:]
    scale = post.scale_of(raw)
    dscale = state.dscale
    theta = unravel(state.theta)
    weights = unravel(jnp.ones((size,), jnp.float32))   # plain L2 norm over theta
    xb = jnp.where(mask[:, None], values[indices], 0.0)
    ob = observed[indices] & mask[:, None]
    g_lik, info = clipped_sum(theta, weights, xb, ob, mask, clip)
    batch_size = jnp.sum(mask)
    if axis_name is not None:   # one sum over all shards, then the noise once
      g_lik, info, batch_size = jax.lax.psum((g_lik, info, batch_size), axis_name)
    noisy, dp_state = aggregator.update(ravel(g_lik), state.dp_state, noise=noise)
    if unscale is not None:
      noisy = noisy * unscale                             # public constant: post-processing
    gp = ravel(grad_prior(theta))
    ent = jax.nn.sigmoid(raw) / scale                     # d entropy / d raw_scale
    total = noisy + gp                                    # d ELBO / d theta (estimate)
    elbo_grad = jnp.concatenate([total, total * dscale + ent])
    updates, opt_state = optimizer.update(-elbo_grad, state.opt_state, state.params)
    # Inactive (past-the-end) steps of the last chunk change nothing but keys.
    new_params = jnp.where(active, optax.apply_updates(state.params, updates), state.params)
    opt_state = jax.tree.map(lambda x, y: jnp.where(active, x, y), opt_state, state.opt_state)
    # Warm-started EMA: decay min(d, (1 + t) / (10 + t)) forgets the initialisation fast.
    t = state.count.astype(jnp.float32)
    decay = jnp.minimum(average_decay, (1.0 + t) / (10.0 + t))
    avg = jnp.where(active, decay * state.average + (1.0 - decay) * new_params, state.average)
    new = TrainState(new_params, opt_state, dp_state, avg, state.count + active.astype(jnp.int32),
                     *_draw(eps_next, new_params, size))
    return new, StepInfo(info.num_clipped, info.num_nonfinite, info.log_lik_sum,
                         batch_size)

  return step


def fit(key: Optional[Array], model: Model, data, *, epsilon: Optional[float] = 1.0,
        delta: Optional[float] = None, sampling_ratio: float = 0.01,
        num_epochs: float = 200, clipping_threshold: float = 1.0,
        noise_multiplier: Optional[float] = None, max_epsilon: Optional[float] = None,
        non_private: bool = False, learning_rate: float = 3e-3,
        schedule: str = "cosine", average_decay: Optional[float] = 0.999,
        init_method: str = "uniform", init_scale: float = 0.1,
        init_loc: Optional[dict] = None, warm_start: float = 0.1,
        progress: Optional[Callable[[int, int, dict], None]] = None,
        privacy: Optional[PrivacyRecord] = None, devices: Optional[int] = None,
        checkpoint=None, resume: bool = False, checkpoint_every: int = 10,
        checkpoint_note: Optional[dict] = None, stream: Optional[bool] = None) -> FitResult:
  """Fits the mean-field posterior of `model` to `data` under (epsilon, delta)-DP.

  Args:
    key: the run's PRNG root (`jax.random.key(seed)`); None draws one from
      `secrets`. It is split once per purpose (init, batches, posterior
      draws, noise) and each of those per step.
    model: a `jtwin.models.Model` (the automatic mixture or a custom model).
    data: `(values float [N, D], observed bool [N, D])` or an object with
      `.values`/`.observed` (e.g. `jtwin.data.EncodedData`), or a
      `jtwin.table_store.TableStore` (a memory-mapped table, data larger than
      memory: used as it is, never copied whole).
    epsilon: target epsilon; sigma is calibrated so that the certified upper
      bound is <= epsilon. Ignored when `noise_multiplier` is given.
    delta: delta; default 0.1 / N. A warning is given if delta > 1/N.
    sampling_ratio: q, the Poisson sampling probability (twinify: 0.01).
    num_epochs: epochs; T = ceil(num_epochs / q) steps run and are accounted.
    clipping_threshold: C (twinify: 1).
    noise_multiplier: sigma; when given, epsilon is reported, not targeted.
    max_epsilon: with `noise_multiplier`: train only as many steps as fit
      under this ceiling. With `epsilon`: an error if epsilon exceeds it.
    non_private: no clipping and no noise (NOT private; for baselines).
    learning_rate: Adam learning rate (twinify: 1e-3 with a constant schedule).
    schedule: "cosine" (decays the learning rate to 5% of its value over the
      run, which damps the noise of the last steps) or "constant" (twinify).
    average_decay: the returned posterior is an exponential moving average of
      the iterates with this decay (iterate averaging: post-processing of the
      private iterates, so free); None returns the last iterate (twinify).
    init_method, init_scale: posterior initialisation (`posterior.init`).
    init_loc: optional dict of arrays ADDED to the initial locations of the
      named parameters. It must not be computed from the private data
      without privacy.
    warm_start: fraction of (epsilon, delta) spent on the model's DP warm
      start (`Model.warm_start`: for the mixture, noisy 1-way marginals of
      the categorical columns), if the model has one; see `privacy_plan`.
      Ignored (0) for models without one and in noise_multiplier mode.
    progress: optional callback `(steps_done, total_steps, epoch_info)`.
    privacy: a precomputed `privacy_plan(...)` (skips calibration).
    devices: data-parallel over this many devices (`jtwin.parallel`: rows
      sharded, one psum, noise added once); None or 1: one device. Same
      batches and noise as on one device, so the result differs only by
      rounding. On a CPU, D devices need
      `XLA_FLAGS=--xla_force_host_platform_device_count=D` set before JAX
      starts; after `jax.distributed.initialize`, pass `jax.device_count()`.
    checkpoint: a directory to save the run's state in every
      `checkpoint_every` epochs and at the end (`jtwin.checkpoint`: npz +
      JSON, atomic, mode 0600). It holds the run's SECRET key: keep it as
      private as the data. Refused if it already holds a checkpoint, unless
      `resume`.
    resume: continue the checkpoint in `checkpoint` (if there is one; else
      start afresh): same T, same keys and batches, so the result equals an
      uninterrupted run's; `key` may be None (the checkpoint's key is used)
      or must be the same key. A checkpoint of other data or settings is
      refused.
    checkpoint_every: epochs (chunks) between checkpoints.
    checkpoint_note: a JSON-able dict stored with the checkpoint.
    stream: True: the table stays on the host and each step's batch is
      gathered there and sent to the device alone (`jtwin._stream_chunk`:
      device memory independent of N; same result as in memory up to
      rounding); False: the table is put on the device(s) whole; None
      (auto): stream when the table is larger than `STREAM_BYTES` (1 GiB).
      With several devices each shard gathers only its own rows.

  Returns:
    A `FitResult`.

  Raises:
    JtwinInputError: invalid settings.
    NonFiniteError: the parameters became non-finite.
  """
  values, observed = _unpack_data(data)
  if not getattr(data, "validated", False):
    _check_against_model(model, values, observed)
  t0 = time.perf_counter()
  plan = plan_fit(model, values.shape[0], privacy=privacy, epsilon=epsilon, delta=delta,
                  sampling_ratio=sampling_ratio, num_epochs=num_epochs,
                  clipping_threshold=clipping_threshold, noise_multiplier=noise_multiplier,
                  max_epsilon=max_epsilon, non_private=non_private, warm_start=warm_start,
                  learning_rate=learning_rate, schedule=schedule, average_decay=average_decay,
                  devices=devices)
  t_cal = time.perf_counter() - t0
  if stream is None:
    stream = values.nbytes + observed.nbytes > STREAM_BYTES
  saver, loaded = None, None
  if checkpoint is not None:
    settings = {"learning_rate": learning_rate, "schedule": schedule, "init_method": init_method,
                "init_scale": init_scale, "warm_start": warm_start, "init_loc": init_loc}
    key, saver, loaded = _open_checkpoint(checkpoint, key, model, values, observed, plan,
                                          settings, resume=resume, every=checkpoint_every,
                                          note=checkpoint_note)
  run = setup_fit(key, model, values, observed, plan, init_method=init_method,
                  init_scale=init_scale, init_loc=init_loc, warm_start=warm_start,
                  run_warm_start=loaded is None)
  if loaded is not None:
    run = run._replace(state=saver.restore(run.state, loaded))
  state, diag, t_compile, t_train = run_loop(
      plan, run, values, observed, progress=progress, stream=bool(stream),
      start=None if loaded is None else loaded.position,
      on_chunk=None if saver is None else (
          lambda s, pos: saver.maybe_save(s, pos, plan.num_chunks)))
  timings = {"calibration": t_cal, "compile": t_compile, "training": t_train}
  return _result(plan, run, state, diag, model, timings)


def _open_checkpoint(directory, key, model, values, observed, plan: FitPlan, settings: dict, *,
                     resume: bool, every: int, note: Optional[dict]):
  """The run's `Checkpointer`, the checkpoint to resume (or None) and the run's key.

  Raises:
    JtwinInputError: a checkpoint exists and `resume` is off; or it is of
      other data, settings or key.
  """
  from jtwin import checkpoint as ckpt
  ckpt.check_directory(directory)
  init_loc = settings.pop("init_loc")
  settings["init_loc"] = None if init_loc is None else ckpt._sha256(
      *[np.asarray(init_loc[k_], np.float32) for k_ in sorted(init_loc)])
  settings["init_loc_names"] = None if init_loc is None else sorted(init_loc)
  saver = ckpt.Checkpointer(directory, ckpt.fingerprint(values, observed, model, plan, settings),
                            every=every, note=note)
  loaded = None
  if resume:
    loaded = saver.load()
  elif saver.exists():
    raise JtwinInputError(f"{directory}: already holds a checkpoint; resume it "
                          "(resume=True, --resume) or remove it")
  if loaded is not None:
    if key is not None and not np.array_equal(jax.random.key_data(key), loaded.key_data):
      raise JtwinInputError(f"{directory}: the checkpoint was written with another key "
                            "(seed); resume with the same one, or without one")
    key = jax.random.wrap_key_data(jnp.asarray(loaded.key_data), impl=loaded.key_impl)
  key = root_key() if key is None else key
  saver.set_key(key)
  return key, saver, loaded


class FitPlan(NamedTuple):
  """What a run will do, decided from public inputs only (`plan_fit`).

  Attributes:
    privacy: the `PrivacyRecord`: T = privacy.steps steps run, no more, no fewer.
    num_examples: N.
    clip: C (inf when non-private).
    noise_std: sigma * C, the noise standard deviation on the clipped sum.
    chunk: steps per compiled call (one epoch, ceil(1/q), at most T, and
      fewer when the chunk's batches would exceed `CHUNK_SLOTS` row slots: the
      host draws a chunk's batches at once, so this bounds that memory).
    num_chunks: ceil(T / chunk).
    optimizer: the optax optimiser (Adam with the learning-rate schedule).
    average_decay: the iterate-average decay (None: the last iterate).
    devices: number of devices of the data-parallel mesh (1: no mesh).
  """
  privacy: PrivacyRecord
  num_examples: int
  clip: float
  noise_std: float
  chunk: int
  num_chunks: int
  optimizer: optax.GradientTransformation
  average_decay: Optional[float]
  devices: int = 1


def plan_fit(model: Model, num_examples: int, *, privacy: Optional[PrivacyRecord] = None,
             epsilon: Optional[float] = 1.0, delta: Optional[float] = None,
             sampling_ratio: float = 0.01, num_epochs: float = 200,
             clipping_threshold: float = 1.0, noise_multiplier: Optional[float] = None,
             max_epsilon: Optional[float] = None, non_private: bool = False,
             warm_start: float = 0.1, learning_rate: float = 3e-3, schedule: str = "cosine",
             average_decay: Optional[float] = 0.999,
             devices: Optional[int] = None) -> FitPlan:
  """The run's plan: privacy calibration (unless `privacy` is given) and schedule.

  Arguments as in `fit`. Touches no data: only N and the settings.
  """
  if privacy is None:
    privacy = privacy_plan(num_examples, epsilon=epsilon, delta=delta,
                           sampling_ratio=sampling_ratio, num_epochs=num_epochs,
                           clipping_threshold=clipping_threshold,
                           noise_multiplier=noise_multiplier, max_epsilon=max_epsilon,
                           non_private=non_private,
                           warm_start=warm_start if model.warm_start is not None else 0.0)
  q, steps, clip = privacy.sampling_ratio, privacy.steps, privacy.clipping_threshold
  if privacy.mode == "non-private":
    clip = math.inf
  if schedule not in ("constant", "cosine"):
    raise JtwinInputError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
  if average_decay is not None and not 0.0 <= average_decay < 1.0:
    raise JtwinInputError(f"average_decay must be in [0, 1), got {average_decay}")
  devices = 1 if devices is None else devices
  if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
    raise JtwinInputError(f"devices must be a positive integer, got {devices!r}")
  if devices > 1:
    from jtwin import parallel
    parallel.make_mesh(devices)   # fails now, not after calibration, if there are too few
  lr = (learning_rate if schedule == "constant" else
        optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
  noise_std = privacy.noise_multiplier * (0.0 if math.isinf(clip) else clip)
  chunk = min(steps, max(1, int(math.ceil(1.0 / q))),
              max(1, CHUNK_SLOTS // batching.default_max_batch(int(num_examples), q)))
  return FitPlan(privacy, int(num_examples), clip, noise_std, chunk,
                 int(math.ceil(steps / chunk)), optax.adam(lr), average_decay, int(devices))


class FitSetup(NamedTuple):
  """The initial state and everything the loop needs (`setup_fit`).

  Attributes:
    state: the initial `TrainState`.
    step: the step function (`make_step`).
    flat: the flat parameter layout.
    batch_seed: key data seeding the host batch sampler (secret).
    eps_keys: [num_chunks] keys of the posterior draws, one per chunk.
    noise_keys: [num_chunks] keys of the DP noise, one per chunk.
  """
  state: TrainState
  step: Callable
  flat: _FlatLayout
  batch_seed: Array
  eps_keys: Array
  noise_keys: Array


def setup_fit(key: Optional[Array], model: Model, values: np.ndarray, observed: np.ndarray,
              plan: FitPlan, *, init_method: str = "uniform", init_scale: float = 0.1,
              init_loc: Optional[dict] = None, warm_start: float = 0.1,
              run_warm_start: bool = True) -> FitSetup:
  """Splits the run's key per purpose, runs the DP warm start, builds the initial state.

  The warm start (if `plan.privacy` has one) is the only data access outside
  the loop: the Gaussian mechanism accounted in `plan.privacy`.
  `run_warm_start=False` skips it (a resumed run restores its state instead).
  """
  privacy, q, num_chunks = plan.privacy, plan.privacy.sampling_ratio, plan.num_chunks
  key = root_key() if key is None else key
  key, k_warm = jax.random.split(key)
  if run_warm_start and (privacy.warm_start_noise > 0 or (
      privacy.mode == "non-private" and model.warm_start and warm_start > 0)):
    # The only other data access: the Gaussian mechanism accounted in `privacy`.
    warm = model.warm_start(k_warm, values, observed, privacy.warm_start_noise)
    init_loc = {**(init_loc or {}),
                **{k_: np.asarray((init_loc or {}).get(k_, 0.0)) + v for k_, v in warm.items()}}
  flat = _flat_layout(model)
  optimizer, noise_std = plan.optimizer, plan.noise_std

  @jax.jit
  def setup(key):
    """All data-independent initialisation in one compiled call."""
    k_init, k_batch, k_draw, k_noise = jax.random.split(key, 4)
    k_post, k_template, k_first = jax.random.split(k_init, 3)
    k_agg, k_noise = jax.random.split(k_noise)   # k_agg: the aggregator's own key (unused)
    init_params = post.init(k_post, model.init(k_template), method=init_method,
                            init_scale=init_scale)
    if init_loc is not None:   # public (or separately privatised) starting locations
      init_params = init_params._replace(loc={
          name: (init_params.loc[name] + jnp.asarray(init_loc[name], jnp.float32)
                 if name in init_loc else value)
          for name, value in init_params.loc.items()})
    params = jnp.concatenate([_ravel(init_params.loc), _ravel(init_params.raw_scale)])
    aggregator = dp.dp_aggregate(noise_std, 1.0 / q, k_agg)
    eps0 = jax.random.normal(k_first, (flat.size,), jnp.float32)
    params = params.astype(jnp.float32)
    state = TrainState(params, optimizer.init(params), aggregator.init(params), params,
                       jnp.zeros((), jnp.int32), *_draw(eps0, params, flat.size))
    return (state, k_agg, jax.random.key_data(k_batch),
            jax.random.split(k_draw, num_chunks), jax.random.split(k_noise, num_chunks))

  state, k_agg, batch_seed, eps_keys, noise_keys = setup(key)
  aggregator = dp.dp_aggregate(noise_std, 1.0 / q, k_agg)
  step = make_step(model, optimizer, aggregator, plan.clip, flat, plan.average_decay or 0.0,
                   axis_name=_AXIS if plan.devices > 1 else None)
  return FitSetup(state, step, flat, batch_seed, eps_keys, noise_keys)


_AXIS = "data"   # jtwin.parallel.AXIS (not imported: keeps this module's imports light)


def make_chunk_runner(step: Callable, flat_size: int) -> Callable:
  """`chunk_body` compiled for one device (the state's buffers are donated)."""
  from jtwin._chunk import chunk_body
  return functools.partial(jax.jit, donate_argnums=(0,))(chunk_body(step, flat_size))


def run_loop(plan: FitPlan, run: FitSetup, values: np.ndarray, observed: np.ndarray, *,
             progress: Optional[Callable[[int, int, dict], None]] = None,
             start=None, on_chunk: Optional[Callable] = None, stream: bool = False,
             gather_cap_bytes: Optional[int] = None
             ) -> tuple[TrainState, dict, float, float]:
  """Runs the plan's T steps, one compiled chunk (an epoch) at a time.

  Batches are drawn on the host (`jtwin.batching`) one chunk ahead, so the
  host's sampling overlaps the device's chunk; progress and the non-finite
  check happen between chunks.

  Args:
    plan, run: from `plan_fit` and `setup_fit` (`run.state` is the state to
      continue from).
    values, observed: the encoded data.
    progress: optional callback `(steps_done, total_steps, epoch_info)`.
    start: a `jtwin.checkpoint.LoopPosition` to continue from (resume);
      None starts at step 0.
    on_chunk: optional `(state, LoopPosition)` callback after every chunk
      whose parameters are finite (checkpointing).
    stream: keep the table on the host (it may be a memory map) and gather
      each step's batch there (`jtwin._stream_chunk`; with several devices,
      each shard gathers only the rows it holds).
    gather_cap_bytes: with `stream`, the most bytes of gathered rows per
      compiled call (default `_stream_chunk.DEFAULT_CAP_BYTES`).

  Returns:
    (final state, per-epoch diagnostics, compile seconds, training seconds).

  Raises:
    NonFiniteError: the parameters became non-finite.
  """
  n, q, steps = plan.num_examples, plan.privacy.sampling_ratio, plan.privacy.steps
  chunk, num_chunks = plan.chunk, plan.num_chunks
  state, eps_keys, noise_keys = run.state, run.eps_keys, run.noise_keys
  rng = numpy_generator_from_bits(run.batch_seed)
  width = batching.default_max_batch(n, q)
  shard_width = 0
  if start is not None:                  # resume: the sampler exactly where it stopped
    rng.bit_generator.state = start.rng_state
    width = start.width
  if plan.devices == 1 and stream:       # the table stays on the host; batches gathered
    from jtwin import _stream_chunk
    run_chunk = _stream_chunk.make_streamed_runner(
        run.step, run.flat.size, gather_cap_bytes or _stream_chunk.DEFAULT_CAP_BYTES)
    values_d, observed_d = values, observed
    place = lambda idx, msk, active: (idx, msk, active)
    fetch = jax.device_get
  elif plan.devices == 1:
    run_chunk = make_chunk_runner(run.step, run.flat.size)
    values_d, observed_d = jnp.asarray(values), jnp.asarray(observed)
    place = lambda idx, msk, active: (idx, msk, active)
    fetch = jax.device_get
  else:                                   # data parallel: rows sharded, params replicated
    from jtwin import parallel
    mesh = parallel.make_mesh(plan.devices)
    shard_rows = parallel.rows_per_shard(n, plan.devices)
    if stream:                            # each shard gathers its own rows on the host
      from jtwin import _stream_chunk
      run_chunk = _stream_chunk.make_sharded_streamed_runner(
          run.step, run.flat.size, mesh, shard_rows,
          gather_cap_bytes or _stream_chunk.DEFAULT_CAP_BYTES)
      values_d, observed_d = values, observed
    else:
      run_chunk = parallel.make_sharded_chunk_runner(run.step, run.flat.size, mesh)
      table = parallel.shard_table(values, observed, mesh)
      values_d, observed_d = table.values, table.observed
    state, eps_keys, noise_keys = parallel.replicate((state, eps_keys, noise_keys), mesh)
    fetch = parallel.to_host
    shard_width = parallel.default_shard_width(n, q, plan.devices)
    if start is not None and start.devices == plan.devices:
      shard_width = start.shard_width

    def place(idx, msk, active):
      nonlocal shard_width
      idx, msk, shard_width = parallel.split_batches(idx, msk, shard_rows, plan.devices,
                                                     shard_width)
      if stream:
        return idx, msk, active
      return parallel.place_batches(mesh, idx, msk, active)

  def next_xs(c):
    active = np.arange(c * chunk, (c + 1) * chunk) < steps
    b = batching.draw(rng, n, q, chunk, width)
    return b, active

  diag = {"clip_fraction": [], "nonfinite": [], "mean_log_lik": [], "mean_batch_size": [],
          "steps": []}
  first = 0
  if start is not None:
    first = start.chunk
    diag = {k_: list(start.diagnostics[k_]) for k_ in diag}
  t_compile = 0.0
  t1 = time.perf_counter()
  rng_state = rng.bit_generator.state
  pending = next_xs(first) if first < num_chunks else None
  for c in range(first, num_chunks):
    b, active = pending
    if b.indices.shape[1] > width:       # a batch larger than the padding: re-pad, never drop
      width = b.indices.shape[1] + 8
    idx = np.pad(b.indices, ((0, 0), (0, width - b.indices.shape[1])))
    msk = np.pad(b.mask, ((0, 0), (0, width - b.mask.shape[1])))
    tc = time.perf_counter()
    state, info, finite = run_chunk(state, place(idx, msk, active), eps_keys[c],
                                    noise_keys[c], values_d, observed_d)
    if c == first:
      jax.block_until_ready(info)
      t_compile = time.perf_counter() - tc
    rng_state = rng.bit_generator.state  # before drawing chunk c + 1 (for a checkpoint)
    if c + 1 < num_chunks:
      pending = next_xs(c + 1)           # host work overlaps the device chunk
    info, finite = fetch((info, finite))
    epoch = _epoch_diagnostics(info, active, min(steps, (c + 1) * chunk))
    for k_, v in epoch.items():
      diag[k_].append(v)
    if not finite:
      raise NonFiniteError(
          f"training diverged at step {epoch['steps']} (non-finite parameters): the model "
          "has major difficulties fitting the data; simplify the model, standardise "
          "numeric columns, or lower the learning rate")
    if on_chunk is not None:
      from jtwin.checkpoint import LoopPosition
      on_chunk(state, LoopPosition(c + 1, rng_state, width, shard_width, plan.devices, diag))
    if progress is not None:
      progress(epoch["steps"], steps, epoch)
  t_train = time.perf_counter() - t1 - t_compile
  return state, {k_: np.asarray(v) for k_, v in diag.items()}, t_compile, t_train


def _epoch_diagnostics(info: StepInfo, active: np.ndarray, steps_done: int) -> dict:
  act = active.astype(bool)
  n_rows = max(int(info.batch_size[act].sum()), 1)
  return {"clip_fraction": float(info.num_clipped[act].sum()) / n_rows,
          "nonfinite": int(info.num_nonfinite[act].sum()),
          "mean_log_lik": float(info.log_lik_sum[act].sum()) / n_rows,
          "mean_batch_size": float(info.batch_size[act].mean()),
          "steps": int(steps_done)}


def _result(plan: FitPlan, run: FitSetup, state: TrainState, diag: dict, model: Model,
            timings: dict) -> FitResult:
  flat = run.flat
  params = state.params if plan.average_decay is None else state.average
  if isinstance(params, jax.Array) and not params.is_fully_addressable:
    params = params.addressable_data(0)     # replicated (multi-host): this process's copy
  params = np.asarray(params)
  posterior = post.MeanFieldParams(flat.unravel(params[:flat.size]),
                                   flat.unravel(params[flat.size:]))
  return FitResult(posterior, plan.privacy, diag, model, plan.num_examples, timings)
