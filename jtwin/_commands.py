"""The work behind `jtwin fit`, `jtwin sample` and `jtwin check` (called by `jtwin.cli`)."""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from typing import NamedTuple

import numpy as np

from jtwin.errors import DataError, JtwinInputError, UnsafeDeltaError


class _Timer:
  def __init__(self):
    self.phases, self._t = {}, time.perf_counter()

  def lap(self, name):
    from jtwin import _interrupt
    _interrupt.check()      # a Ctrl-C swallowed during the phase stops the run here
    now = time.perf_counter()
    self.phases[name] = self.phases.get(name, 0.0) + now - self._t
    self._t = now


DEFAULT_EPSILON = 1.0


class Prepared(NamedTuple):
  """Data and model ready for training."""
  model: object
  values: np.ndarray
  observed: np.ndarray
  frame: object             # the modelled columns, as read (for plots)
  domain: object            # jtwin.data.Domain, or None for custom models
  decode: object            # (values, observed) -> DataFrame
  model_info: dict
  inferred: list            # items taken from the private data without noise
  public: object = None     # jtwin.dp_domain.PublicPlan: DP row count and domains
  store: object = None      # jtwin.table_store.TableStore when streamed (values are its memmaps)
  clipped: dict = {}        # column -> exact count of values clipped to declared bounds (private)


def _say(args, *lines):
  if not getattr(args, "quiet", False):
    for line in lines:
      print(line, flush=True)


def prepare(df, model_path, *, k: int, drop_na: bool, source: str, release=None) -> Prepared:
  """Model file (or custom .py model, or a parsed `ModelSpec`) + data -> model,
  encoded data, decoder."""
  from jtwin import data as jdata
  from jtwin.spec import ModelSpec, parse_model_file
  if not isinstance(model_path, ModelSpec) and model_path.endswith(".py"):
    return _prepare_custom(df, model_path, drop_na=drop_na, source=source, release=release)
  from jtwin.models import make_mixture_model
  spec = model_path if isinstance(model_path, ModelSpec) else parse_model_file(model_path)
  from jtwin.marginals.derived import warn_unused_by_dp_vi
  warn_unused_by_dp_vi(spec)
  frame = jdata.select_columns(df, spec, bool(drop_na), source=source)
  if len(frame) == 0:
    raise DataError(f"{source}: the data set has no rows" if len(df) == 0 else
                    f"{source}: no rows left after dropping rows with missing values "
                    "(--drop_na); declare the columns as 'missing' instead")
  public = None
  if release is not None:   # DP row count and domain: what follows sees only these
    public = release(frame, spec)
    frame, spec = public.frame, public.spec
  domain = jdata.resolve_domain(frame, spec, source=source, warn=False)   # fit() warns
  clipped = jdata.out_of_bounds(frame, domain)   # private: printed only with --verbose
  encoded = jdata.encode(frame, domain, source=source)
  model = make_mixture_model(domain.features(), k)
  info = {"kind": "mixture", "num_components": int(k),
          "features": [list(f) for f in domain.features()]}
  return Prepared(model, encoded.values, encoded.observed, frame, domain,
                  lambda v, o, rng=None: jdata.decode(v, o, domain, rng=rng), info,
                  list(domain.inferred_from_data), public, clipped=clipped)


def clipped_lines(clipped: dict) -> list:
  """Lines naming the exact counts of values clipped to declared ranges (NOT private)."""
  return [f"column '{name}': {count} value(s) outside the declared range were clipped to "
          "it (exact count, NOT private; check the bounds or bins in the model file)"
          for name, count in clipped.items()]


def _prepare_custom(df, path, *, drop_na, source, release=None):
  import pandas as pd
  from jtwin.custom import custom_decoder, load_custom_model, make_custom_model
  from jtwin.result_io import file_sha256
  custom = load_custom_model(path)
  frame = df.dropna() if drop_na else df
  if custom.preprocess is not None:
    try:
      frame = custom.preprocess(frame)
    except JtwinInputError:
      raise
    except Exception as e:
      raise JtwinInputError(f"{path}: preprocess() failed: {e.__class__.__name__}: {e}") from None
    if not isinstance(frame, pd.DataFrame):
      raise JtwinInputError(f"{path}: preprocess() must return a pandas DataFrame")
  bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
  if bad:
    raise DataError(f"{source}: column '{bad[0]}' is not numeric; a custom model needs "
                    f"numeric columns: convert it in preprocess() in {path}")
  public = release(frame, None) if release is not None else None   # DP row count only
  arr = frame.to_numpy(np.float64)
  observed = np.isfinite(arr)
  values = np.where(observed, arr, 0.0).astype(np.float32)
  columns = list(frame.columns)
  model = make_custom_model(custom, columns, path)
  decode = custom_decoder(custom, columns, path)

  inferred = ["custom model: whatever preprocess() derives from the data"] if custom.preprocess else []
  # the file name only: an absolute path would tell where the data holder works
  info = {"kind": "custom", "path": os.path.basename(path), "sha256": file_sha256(path),
          "columns": columns}
  return Prepared(model, values, observed, frame, None, decode, info, inferred, public)


def _warn_inferred(inferred, advice=None):
  if inferred:
    from jtwin.data import INFERRED_ADVICE, inferred_warning
    warnings.warn(inferred_warning(inferred, advice or INFERRED_ADVICE))


def _output_paths(args):
  from jtwin._atomic import check_numbered_outputs, check_output_path, check_output_prefix
  prefix = args.output_path
  check_output_prefix(prefix, getattr(args, "visualize", "none"))
  paths = {"csv": prefix + ".csv", "result": prefix + ".jtwin.npz",
           "domain": prefix + ".domain.txt"}
  inputs = [args.data_path, args.model_path]
  for p in paths.values():
    check_output_path(p, inputs=inputs)
  if getattr(args, "separate_output", False):
    check_numbered_outputs(prefix, inputs)
  return paths


def fit(args) -> int:
  from jtwin import data as jdata
  timer = _Timer()
  from jtwin import parallel
  parallel.configure_cpu_devices(args.devices)   # before JAX starts its backend
  _resolve_epsilon_flags(args)
  from jtwin._guidance import check_epsilon
  if not args.non_private and args.noise_multiplier is None:
    check_epsilon(args.epsilon, allow_large=args.allow_large_epsilon)
  paths = _output_paths(args)
  from jtwin import _stream_command
  streamed = _stream_command.wants_stream(args)
  df = None if streamed else jdata.read_csv(args.data_path)
  key = _run_key(args)
  calibrated = args.noise_multiplier is None
  release = public_release(args, key, args.epsilon if calibrated else None,
                           source=args.data_path)
  with _stream_command.table_directory(args, streamed) as table_dir:
    if streamed:
      prep = Prepared(**_stream_command.prepare_streamed(args, table_dir, release=release))
    else:
      prep = prepare(df, args.model_path, k=args.k, drop_na=args.drop_na,
                     source=args.data_path, release=release)
    return _fit_prepared(args, prep, key, timer, paths, calibrated)


def _fit_prepared(args, prep, key, timer, paths, calibrated) -> int:
  import jax
  from jtwin import data as jdata
  from jtwin import infer
  from jtwin._guidance import check_epsilon
  from jtwin._rng import numpy_generator
  from jtwin._progress import ProgressBar
  from jtwin.result_io import save_result
  from jtwin.sampling import sample_synthetic
  n, d = prep.values.shape       # the exact n stays internal; prep.public.rows is released
  public = prep.public
  rows = public.rows
  timer.lap("load and encode")
  if getattr(args, "group_clip", "on") == "off":
    prep = _without_group_clip(prep, args.k)
  _warn_inferred(prep.inferred)
  _note_release(args, public)
  if args.verbose:
    _say(args, *(f"jtwin: {line}" for line in clipped_lines(prep.clipped)))
  from jtwin.sampling import check_output_size, whole_draws
  m = args.num_synthetic_records_per_parameter_sample
  num = whole_draws(rows if args.num_synthetic is None else args.num_synthetic, m,
                    "--num_synthetic")
  check_output_size(num, d, "--num_synthetic")   # before training, not after
  q = args.sampling_ratio
  if q * n < 1:
    raise DataError(f"{args.data_path}: too few rows for --sampling_ratio {q:g} "
                    f"(expected batch q*N < 1); raise --sampling_ratio to at least "
                    f"{1.0 / max(rows, 1):.2g}")
  delta = public.delta
  if delta > 1.0 / rows and not args.allow_large_delta and not args.non_private:
    raise _unsafe_delta(delta, rows)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="delta = .* is larger than 1/N")
    privacy = infer.privacy_plan(
        n, epsilon=public.epsilon_rest if calibrated else args.epsilon,
        delta=public.delta_rest, sampling_ratio=q, num_epochs=args.num_epochs,
        clipping_threshold=args.clipping_threshold, noise_multiplier=args.noise_multiplier,
        max_epsilon=(None if args.max_epsilon is None or args.non_private
                     else _rest_ceiling(args.max_epsilon, public)),
        non_private=args.non_private,
        warm_start=args.warm_start if prep.model.warm_start is not None else 0.0)
    privacy = compose_public(privacy, public, args.epsilon if calibrated else None)
  timer.lap("noise calibration")
  if privacy.mode == "noise_multiplier":
    check_epsilon(privacy.epsilon, allow_large=args.allow_large_epsilon,
                  what=f"the epsilon spent with --noise_multiplier {args.noise_multiplier:g}")
  if privacy.mode == "non-private":
    warnings.warn("--no-privacy: NO differential privacy; do not release this output")
  _say(args, f"jtwin: {_rows_text(public, n)} x {d} features; {_privacy_line(privacy)}")

  k_fit, k_sample, k_decode = jax.random.split(key, 3)
  bar = ProgressBar("training", privacy.steps, quiet=args.quiet)
  try:
    data = prep.store if prep.store is not None else (prep.values, prep.observed)
    stream = None if prep.store is None else True
    result = infer.fit(k_fit, prep.model, data, privacy=privacy, stream=stream,
                       learning_rate=args.learning_rate, schedule=args.lr_schedule,
                       warm_start=args.warm_start,
                       average_decay=args.average_decay or None, devices=args.devices,
                       checkpoint=args.checkpoint, resume=args.resume,
                       checkpoint_every=args.checkpoint_every, checkpoint_note=_key_note(key),
                       progress=lambda done, total, ep: bar.update(
                           done, f"loglik/row {ep['mean_log_lik']:.3g} (NOT private)"
                           if args.verbose else ""))
  except KeyboardInterrupt:
    _checkpoint_hint(args)
    raise
  timer.phases["compile"] = result.timings["compile"]
  timer.lap("training")
  timer.phases["training"] -= result.timings["compile"]

  values, observed = sample_synthetic(k_sample, prep.model, result.posterior, num,
                                      records_per_draw=m)
  synth = prep.decode(values, observed, numpy_generator(k_decode))
  timer.lap("sampling")
  written = []
  if args.separate_output:
    written += write_separate_outputs(synth, args.output_path, m)
  else:
    jdata.write_csv_atomic(synth, paths["csv"])
    written.append(paths["csv"])
  save_result(paths["result"], result.posterior, model_info=prep.model_info,
              privacy=privacy, domain=prep.domain, inferred_from_data=prep.inferred,
              extra={"release": public.record()})
  written += _write_domain_file(args.output_path, public, args.model_path)
  written.append(paths["result"])
  timer.lap("writing")
  if args.visualize != "none":
    from jtwin.plots import make_plots
    real = prep.decode(prep.values, prep.observed) if prep.domain is None else prep.frame
    made = make_plots(real, synth, private_plot_prefix(args.output_path, args.visualize),
                      args.visualize)
    warn_no_popup(args, made)
    timer.lap("plots")
    if made.files:   # a warning, so --quiet never hides it
      warnings.warn(f"the plots in {os.path.dirname(made.files[0])}/ show the REAL data: "
                    "they are for the data holder, NOT for release")
  _say(args, *_summary(n, d, privacy, timer.phases, written, num))
  return 0



def private_plot_prefix(output_path: str, mode: str = "store") -> str:
  """Prefix of the real-data plots: inside `OUTPUT_PREFIX.real_data_plots/` (mode
  0700), apart from the releasable files, so they are not published with them.
  The folder is made only when plots are stored (`mode` store or both)."""
  folder = output_path + ".real_data_plots"
  if mode in ("store", "both"):
    os.makedirs(folder, mode=0o700, exist_ok=True)
  return os.path.join(folder, os.path.basename(output_path))


# ------------------------------------------------------------ DP row count and domains
_RELEASE_TAG = 0x646F6D   # fold_in tag of the release's key (a purpose of its own)


def public_release(args, key, epsilon, *, source, need_edges=False, edge_levels=None,
                   max_value_cells=128):
  """A callable (frame, spec) -> `jtwin.dp_domain.PublicPlan` for `prepare`."""
  import jax
  from jtwin import dp_domain
  from jtwin._rng import numpy_generator
  rng = numpy_generator(jax.random.fold_in(key, _RELEASE_TAG))

  def release(frame, spec):
    return dp_domain.plan_release(
        rng, frame, spec, epsilon=epsilon, delta=args.delta, domain=args.domain,
        domain_epsilon=args.domain_epsilon, non_private=args.non_private,
        need_edges=need_edges, edge_levels=edge_levels, max_value_cells=max_value_cells,
        source=source)
  return release


def _resolve_epsilon_flags(args) -> None:
  """--epsilon (default 1) against --noise_multiplier and --max_epsilon, before any data is read.

  --noise_multiplier sets the noise and reports the epsilon it spends, so an
  explicit --epsilon beside it would be ignored: refused instead.
  """
  if args.noise_multiplier is not None:
    if args.epsilon is not None and not args.non_private:
      raise JtwinInputError(
          f"--epsilon {args.epsilon:g} and --noise_multiplier {args.noise_multiplier:g} both "
          "given: --noise_multiplier sets the noise and reports the epsilon it spends; "
          "drop --noise_multiplier to calibrate to --epsilon, or cap the spend with "
          f"--max_epsilon {args.epsilon:g}")
    return
  if args.epsilon is None:
    args.epsilon = DEFAULT_EPSILON
  if (args.max_epsilon is not None and not args.non_private
      and args.epsilon > args.max_epsilon):
    raise JtwinInputError(f"--epsilon {args.epsilon:g} exceeds --max_epsilon "
                          f"{args.max_epsilon:g}; lower --epsilon or raise --max_epsilon")


def _rest_ceiling(max_epsilon, public):
  rest = max_epsilon - public.epsilon
  if not rest > 0:
    raise JtwinInputError(f"--max_epsilon {max_epsilon:g} leaves nothing after the row count "
                          f"and domain step (epsilon {public.epsilon:g})")
  return rest


def compose_public(privacy, public, epsilon_target):
  """The DP-SGD record with the row count and domain step added (basic composition)."""
  if privacy.mode == "non-private":
    return privacy
  if public.epsilon == 0:
    return privacy._replace(delta=public.delta)
  parts = "row count" + (" + DP domain" if public.release.epsilon > 0 else "")
  return privacy._replace(
      epsilon=privacy.epsilon + public.epsilon,
      epsilon_estimate=privacy.epsilon_estimate + public.epsilon,
      epsilon_target=epsilon_target, delta=public.delta,
      accountant=f"{privacy.accountant} + {parts} (basic composition)")


def _rows_text(public, n):
  if public.rows_epsilon == 0:
    return f"{n} rows"
  from jtwin.dp_domain import row_count_sd
  sd = row_count_sd(public.rows_epsilon)
  return f"about {public.rows} rows (DP estimate, noise sd {sd:.0f})"


def _note_release(args, public):
  r = public.release
  if r.released:
    _say(args, f"jtwin: DP domain: {len(r.released)} undeclared item(s) released with "
         f"{_domain_budget(r)} (noise sd {r.noise_std:.3g} per count"
         + (f", {r.category_std:.3g} on the label counts"
            if r.merged and r.category_std != r.noise_std else "") + "), to be written to "
         f"{args.output_path}.domain.txt")
  _warn_release(r)


def _warn_release(r):
  """Warnings about what the DP domain step `r` merged, dropped or could not decide."""
  if r.merged:
    warnings.warn(f"DP domain: categories with fewer than about {r.threshold:.0f} rows are "
                  f"merged into '(other)' in: {', '.join(r.merged)} (declare the categories "
                  "in the model file to keep them)")
  if r.undecided_integer:
    warnings.warn("DP domain: too few rows clear the noise to tell whether these columns "
                  f"hold whole numbers, so they are treated as continuous: "
                  f"{', '.join(r.undecided_integer)} (declare 'integer' in the model file "
                  "where they do)")
  if r.drop_missing:
    warnings.warn("DP domain: missing values are not modelled (the noisy count of missing "
                  f"values was below twice its noise sd, {2 * r.noise_std:.0f}"
                  + (f" or {2 * r.category_std:.0f} for columns with released categories"
                     if r.merged and r.category_std != r.noise_std else "")
                  + f") in: {', '.join(r.drop_missing)}; "
                  "rows missing there, if any, are left out (declare 'missing' or "
                  "'missing = no' in the model file)")


def _domain_budget(r) -> str:
  if r.rho > 0:
    return (f"rho {r.rho:.3g} of the run's zCDP budget and delta {r.delta:.3g}, both in the "
            "printed epsilon")
  return f"epsilon {format_up(r.epsilon)}, delta {r.delta:.3g}, both in the printed epsilon"


_DOMAIN_FILE_HEAD = "# Domain released under DP by jtwin"


def write_separate_outputs(synth, prefix: str, rows_per_draw: int) -> list:
  """Writes OUTPUT_PREFIX.{i}.csv, one per posterior draw of `rows_per_draw` rows;
  returns [the paths' pattern]. Files PREFIX.{j}.csv left by an earlier run
  beyond this run's last index are named in a warning (never removed: they
  may be the user's), since combining them with this run's would mix runs."""
  from jtwin import data as jdata
  from jtwin._atomic import numbered_outputs
  num, m = len(synth), int(rows_per_draw)
  count = math.ceil(num / m)
  for i, start in enumerate(range(0, num, m)):
    jdata.write_csv_atomic(synth.iloc[start:start + m], f"{prefix}.{i}.csv")
  stale = sorted(i for i in numbered_outputs(prefix) if i >= count)
  if stale:
    shown = ", ".join(f"{prefix}.{i}.csv" for i in stale[:3]) + (
        f" and {len(stale) - 3} more" if len(stale) > 3 else "")
    warnings.warn(f"{shown}: left from an earlier run (this run wrote {prefix}.0.csv to "
                  f"{prefix}.{max(count - 1, 0)}.csv); remove them before combining the "
                  "files, or they mix two runs")
  if m == 1 and num > 1:
    warnings.warn(f"--separate_output with --m 1 writes one file per row ({num} files); "
                  "for one data set per posterior draw give --m ROWS_PER_SET")
  return [f"{prefix}.{{0..{max(count - 1, 0)}}}.csv"]


def _write_domain_file(prefix, public, model_path) -> list:
  """Writes PREFIX.domain.txt when the run released a domain: [path], else [].

  A run that releases none removes a PREFIX.domain.txt an earlier jtwin run
  wrote (recognised by its first line), so that no stale domain sits beside
  this run's files; any other file of that name is left alone.
  """
  from jtwin._atomic import atomic_write
  path = prefix + ".domain.txt"
  r = public.release
  if not r.released:
    try:
      with open(path, encoding="utf-8") as f:
        stale = f.readline().startswith(_DOMAIN_FILE_HEAD)
    except (OSError, UnicodeDecodeError):
      stale = False
    if stale:
      os.remove(path)
    return []
  head = (f"{_DOMAIN_FILE_HEAD} ({_domain_budget(r)}) for the model file "
          f"{os.path.basename(str(model_path))}.\n"
          "# Review it, edit it (e.g. replace '(other)' by the real categories) and pass it\n"
          "# as MODEL next time: declared items cost no privacy budget.\n")
  with atomic_write(path, "w") as f:
    f.write(head + public.spec.to_text())
  return [path]


def _without_group_clip(prep, k):
  """`--group_clip off`: the automatic mixture with one global clip (twinify's)."""
  if prep.model_info.get("kind") != "mixture":
    warnings.warn("--group_clip off is ignored: it applies to the automatic mixture model, "
                  "not to a custom model (which is clipped as a whole)")
    return prep
  from jtwin.models import make_mixture_model
  model = make_mixture_model(prep.model.features, k, group_clip=False)
  return prep._replace(model=model, model_info={**prep.model_info, "group_clip": False})


def warn_no_popup(args, made) -> None:
  """`--visualize popup|both` where no window could be shown: say so."""
  if args.visualize in ("popup", "both") and not made.shown:
    stored = "the SVG files were written; " if made.files else ""
    warnings.warn(f"--visualize {args.visualize}: no window was shown (no display, or no "
                  f"interactive matplotlib backend); {stored}use --visualize store to write "
                  "the plots as SVG files")


def _run_key(args):
  """The run's root key: from --seed, from the checkpoint being resumed, or from the OS.

  A resumed run continues with the key the checkpoint was written with (it
  is stored there: checkpoints are secret), so that it ends as the
  uninterrupted run would have.
  """
  import jax
  from jtwin import checkpoint
  from jtwin._rng import root_key
  if args.resume and not args.checkpoint:
    raise JtwinInputError("--resume needs --checkpoint DIR (the checkpoint to continue)")
  if args.checkpoint:
    out_dir = os.path.dirname(os.path.abspath(args.output_path))
    if os.path.realpath(args.checkpoint) == os.path.realpath(out_dir):
      raise JtwinInputError(f"--checkpoint {args.checkpoint}: is the output folder; the "
                            "checkpoint holds the run's secret key and must not sit beside "
                            "the files to release: give a directory of its own")
    checkpoint.check_directory(args.checkpoint)
  meta = checkpoint.read_meta(args.checkpoint) if args.checkpoint else {}
  if meta and not args.resume:
    raise JtwinInputError(f"--checkpoint {args.checkpoint}: already holds a checkpoint; "
                          "continue it with --resume, or remove it")
  note = meta.get("note", {})
  if "root_key" not in note:
    return root_key(args.seed)
  words = np.asarray(note["root_key"], np.uint32)
  if args.seed is not None and not np.array_equal(
      np.asarray(jax.random.key_data(root_key(args.seed))), words):
    raise JtwinInputError(f"--checkpoint {args.checkpoint}: was written with another --seed; "
                          "resume with the same --seed, or without one")
  return jax.random.wrap_key_data(words, impl=note.get("root_key_impl", "threefry2x32"))


def _checkpoint_hint(args) -> None:
  """After Ctrl-C during training: where the run can be continued from."""
  if not args.checkpoint:
    return
  try:
    from jtwin import checkpoint
    steps = checkpoint.read_meta(args.checkpoint).get("steps_done")
  except Exception:   # a hint only: never mask the interruption
    return
  if steps is not None:
    print(f"jtwin: the checkpoint in {args.checkpoint} (after step {steps}) continues this "
          "run: repeat the command with --resume", file=sys.stderr)


def _key_note(key) -> dict:
  """The root key as stored in a checkpoint (secret, like the checkpoint)."""
  import jax
  return {"root_key": np.asarray(jax.random.key_data(key)).tolist(),
          "root_key_impl": str(jax.random.key_impl(key))}


def _unsafe_delta(delta, n):
  return UnsafeDeltaError(
      f"--delta {delta:g} is larger than 1/N = {1.0 / n:.3g}: that allows publishing a whole "
      "row; use a smaller --delta (default 0.1/N) or pass --allow_large_delta")


def format_up(x: float) -> str:
  """x with 4 significant digits, rounded UP (a printed upper bound stays a bound)."""
  if not math.isfinite(x) or x == 0:
    return f"{x:g}"
  digits = 3 - int(math.floor(math.log10(abs(x))))
  up = math.ceil(x * 10**digits) / 10**digits
  return f"{up:.{max(digits, 0)}f}" if digits > 0 else f"{up:.0f}"


def _stored_up(x) -> str:
  """`format_up` of a number read from a result file (inf is stored as "inf")."""
  try:
    return format_up(float(x))
  except (TypeError, ValueError):
    return str(x)


def _stored_g(x) -> str:
  try:
    return f"{float(x):.3g}"
  except (TypeError, ValueError):
    return str(x)


def _privacy_line(p) -> str:
  if p.mode == "non-private":
    return f"NON-PRIVATE run (no clipping, no noise), q = {p.sampling_ratio:g}, T = {p.steps} steps"
  target = f", target {p.epsilon_target:g}" if p.epsilon_target is not None else ""
  warm = (f"; warm start: noisy marginals with epsilon {p.warm_start_epsilon:.3g}, "
          f"sigma {p.warm_start_noise:.4g}" if p.warm_start_noise > 0 else "")
  return (f"(epsilon = {format_up(p.epsilon)}{target}, delta = {p.delta:.3g})-DP "
          f"[certified upper bound, {p.accountant}, {p.relation}]; "
          f"DP-SGD noise multiplier sigma = {p.noise_multiplier:.4g}, q = {p.sampling_ratio:g}, "
          f"T = {p.steps} steps, C = {p.clipping_threshold:g}{warm}")


def _summary(n, d, privacy, phases, written, num):
  total = sum(phases.values())
  times = " | ".join(f"{k} {v:.2f}s" for k, v in phases.items())
  return [f"jtwin: done in {total:.1f} s ({times})",
          f"jtwin: wrote {num} synthetic rows: " + ", ".join(written)]


def sample(args) -> int:
  import jax
  from jtwin import data as jdata
  from jtwin._atomic import check_output_path
  from jtwin._rng import numpy_generator, root_key
  from jtwin.result_io import load_result, provenance_warnings, rebuild
  from jtwin.marginals.cells import coarse_maps
  from jtwin.marginals.ensemble import resolve_sampling, sample_posterior
  to_stdout = args.output == "-"   # the CSV goes to standard output: the summary must not
  if to_stdout:
    args.quiet = True
  else:
    check_output_path(args.output, inputs=[args.result] + ([args.model] if args.model else []))
  t0 = time.perf_counter()
  loaded = load_result(args.result)
  model, post, decode = rebuild(loaded, custom_model_path=args.model, source=args.result)
  if args.model and loaded.meta["model"]["kind"] != "custom":
    warnings.warn(f"--model {args.model} is ignored: {args.result} was fitted with the "
                  "automatic mixture model, which the result file describes completely")
  for text in provenance_warnings(loaded.meta):
    warnings.warn(text)
  key = root_key(args.seed)
  _, k_sample, k_decode = jax.random.split(key, 3)
  sampling = resolve_sampling(args.sampling, args.m,
                              marginal=loaded.meta["model"].get("method") == "napsumq",
                              flag="--sampling", m_flag="--m")
  custom = loaded.meta["model"]["kind"] == "custom"
  from jtwin.sampling import check_output_size, whole_draws
  num = whole_draws(args.num_synthetic, args.m, "-n")
  check_output_size(num,
                    len(model.features) if model.features else
                    len(loaded.meta["model"].get("columns") or ()), "-n")
  try:
    values, observed = sample_posterior(k_sample, model, post, num,
                                        records_per_draw=args.m,
                                        members=int(loaded.meta["model"].get("ensemble") or 1),
                                        sampling=sampling,
                                        coarse=coarse_maps(loaded.meta["model"].get("cells")))
  except (TypeError, ValueError, IndexError) as e:
    if not custom or isinstance(e, JtwinInputError):
      raise
    raise JtwinInputError(f"{args.model or loaded.meta['model'].get('path')}: the custom "
                          f"model's sample() failed: {e.__class__.__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
  if not custom and not np.all(np.isfinite(np.asarray(values)[np.asarray(observed)])):
    raise JtwinInputError(f"{args.result}: sampling gave non-finite values: the result file "
                          "is corrupt (its parameters are out of range)")
  synth = decode(values, observed, numpy_generator(k_decode))
  if to_stdout:
    synth.to_csv(sys.stdout, index=False)
    sys.stdout.flush()
  else:
    jdata.write_csv_atomic(synth, args.output)
  p = loaded.meta.get("privacy", {})
  _say(args, f"jtwin: wrote {num} rows to {args.output} in "
       f"{time.perf_counter() - t0:.2f} s (post-processing of a result with "
       f"epsilon = {_stored_up(p.get('epsilon'))}, delta = {_stored_g(p.get('delta'))}; "
       "no extra privacy cost)")
  return 0


def _narrow(column) -> bool:
  """Values of one sign whose largest is under 1.5 times their smallest in size."""
  import pandas as pd
  x = pd.to_numeric(column, errors="coerce").dropna().to_numpy(float)
  return bool(len(x) and (np.all(x > 0) or np.all(x < 0))
              and np.abs(x).max() < 1.5 * np.abs(x).min())


def _check_determined_by(spec, frame) -> list:
  """Prints whether each `determined_by` declaration holds in the data; problems (> 1%
  of rows off the most common value for their parent). Local to the data holder."""
  problems = []
  for f in spec.features:
    if f.determined_by is None:
      continue
    pair = frame[[f.determined_by, f.name]].astype(object).astype(str).where(
        frame[[f.determined_by, f.name]].notna(), "<missing>")
    counts = pair.groupby([f.determined_by, f.name]).size()
    off = int(len(pair) - counts.groupby(level=0).max().sum())
    share = off / max(len(pair), 1)
    what = f"'{f.name}' determined_by '{f.determined_by}'"
    if off == 0:
      print(f"  {what}: holds on every row")
    elif share <= 0.01:
      print(f"  {what}: {off} rows ({100 * share:.2g}%) differ from the most common "
            f"'{f.name}' for their '{f.determined_by}'; the twin will not have them")
    else:
      problems.append(f"{what}: {off} rows ({100 * share:.2g}%) differ from the most common "
                      f"'{f.name}' for their '{f.determined_by}', so it is not a function of "
                      "it; remove 'determined_by' from the model file")
  return problems


def check(args) -> int:
  import jax
  import jax.numpy as jnp
  from jtwin import data as jdata
  df = jdata.read_csv(args.data_path)
  spec = None                       # a model file is parsed once, for both checks
  if not str(args.model_path).endswith(".py"):
    from jtwin.spec import parse_model_file
    spec = parse_model_file(args.model_path)
  key = jax.random.key(0)   # public, data-independent: only used to test the model
  args.non_private = False
  # the DP domain step as fit runs it (a fixed seed): its refusals are check's too
  release = public_release(args, key, args.epsilon, source=args.data_path)
  prep = prepare(df, args.model_path if spec is None else spec, k=args.k, drop_na=args.drop_na,
                 source=args.data_path, release=release)
  n, d = prep.values.shape
  problems = []
  if args.sampling_ratio * n < 1:
    problems.append(f"{n} rows are too few for --sampling_ratio {args.sampling_ratio:g}")
  model = prep.model
  k1, k2 = jax.random.split(key)
  theta = model.init(k1)
  rows = slice(0, min(n, 1000))
  batch = model.log_likelihood_batch or jax.vmap(model.log_likelihood, in_axes=(None, 0, 0))
  ll = np.asarray(batch(theta, jnp.asarray(prep.values[rows]), jnp.asarray(prep.observed[rows])))
  if not np.all(np.isfinite(ll)):
    bad = int(np.argmax(~np.isfinite(ll)))
    problems.append(f"the log-likelihood is not finite for data row {bad + 1}")
  lp = float(model.log_prior(theta))
  if not math.isfinite(lp):
    problems.append("the log-prior is not finite at the initial parameters")
  values, observed = model.sample(k2, theta, 100)
  if np.asarray(values).shape != (100, d):
    problems.append(f"sample() returned shape {np.asarray(values).shape}, expected (100, {d})")
  else:
    prep.decode(np.asarray(values), np.asarray(observed))
  print(f"jtwin check: {args.model_path} against {args.data_path}: {n} rows x {d} features")
  print("  (this report reads the private data: its counts are exact, NOT private; "
        "do not release it)")
  for line in clipped_lines(prep.clipped):
    print(f"  {line}")
  released = prep.public.release.released if prep.public is not None else ()
  if released:
    print("  undeclared (fit and napsumq release these under DP from a share of epsilon, "
          "or read them off the data with --domain data; declare them to save that share): "
          + "; ".join(released))
    _warn_release(prep.public.release)
  elif prep.inferred:
    print("  undeclared, read off the private data (--domain data; NOT covered by epsilon): "
          + "; ".join(prep.inferred))
  else:
    print("  every domain is declared: fit and napsumq take nothing from the private data "
          "without noise")
  unbounded = [c.name for c in (prep.domain.columns if prep.domain is not None else ())
               if c.family in ("normal", "poisson") and c.bounds is None]
  if unbounded:
    print("  no declared bounds, so synthetic values are not clipped (they may leave the "
          "real range, e.g. go negative): " + ", ".join(unbounded) + "; declare "
          "'bounds = lo, hi' where the range is public")
  narrow = [c for c in unbounded if _narrow(prep.frame[c])]
  if narrow:
    print("  values far from zero with a narrow spread (such as years), finer than the DP "
          "domain step's grid (16 cells per decade) resolves: 'jtwin fit' standardises Normal "
          "ones from that coarse grid, and 'jtwin napsumq' spends a second, fine histogram on "
          "them: " + ", ".join(narrow) + "; declare their public range ('bounds = lo, hi', "
          "with 'integer' where they are whole numbers) to avoid both")
  if spec is not None:
    problems += _check_determined_by(spec, prep.frame)
  if problems:
    for p in problems:
      print(f"  problem: {p}", file=sys.stderr)
    return 1
  print("Everything okay!")
  return 0
