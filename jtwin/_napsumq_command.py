"""The work behind `jtwin napsumq` (called by `jtwin.cli`)."""
from __future__ import annotations

import argparse
import os
import warnings

from jtwin._commands import _note_release, _say, _Timer, _unsafe_delta, _warn_inferred
from jtwin._commands import _write_domain_file, private_plot_prefix
from jtwin._commands import format_up as _up
from jtwin._commands import warn_no_popup, write_separate_outputs
from jtwin.errors import JtwinInputError


def privacy_line(p) -> str:
  """One line describing a `MarginalPrivacyRecord`."""
  if p.mode == "non-private":
    return "NON-PRIVATE run (exact marginals, no noise)"
  return (f"(epsilon = {_up(p.epsilon)}, target {p.epsilon_target:g}, delta = {p.delta:.3g})-DP "
          f"[certified upper bound, {p.accountant}, {p.relation}]; rho = {p.rho:.4g} "
          f"(1-way {p.rho_one_way:.3g}, queries {p.rho_queries:.3g}, selection "
          f"{p.rho_selection:.3g}, measurements {p.rho_measurement:.3g}); "
          f"{p.num_measurements} noisy tables, {p.num_selections} selections")


def _load(args, streaming: bool = False):
  """(frame, spec, forced cliques, notes on what the spec took from the data).

  With `streaming` the frame is a `CsvSource` (the file is read in chunks by
  `fit_marginals`), which needs a model file.
  """
  from jtwin import data as jdata
  from jtwin.marginals import queries as mq
  from jtwin.spec import parse_model_file
  if args.model_path.endswith(".py"):
    raise JtwinInputError(f"{args.model_path}: custom .py models are for 'jtwin fit'; "
                          "'jtwin napsumq' takes a model file or a query file")
  query_file = mq.is_query_file(args.model_path)
  if streaming and query_file:
    raise JtwinInputError(f"{args.model_path}: a query file chooses each column's family "
                          "from the whole data, so it cannot be streamed; give a model "
                          "file (or --stream off)")
  forced, notes = [], []
  if streaming:
    from jtwin.marginals.streamed import CsvSource
    workdir = os.path.dirname(os.path.abspath(args.output_path))
    frame = CsvSource(args.data_path, args.chunk_rows, bool(args.drop_na), workdir)
    spec = parse_model_file(args.model_path)
  else:
    df = jdata.read_csv(args.data_path)
    if query_file:
      forced = mq.parse_query_file(args.model_path, columns=set(map(str, df.columns)))
      df.columns = [str(c) for c in df.columns]
      spec = mq.spec_from_data(df, source=args.data_path)
      notes = [f"every column: modelled (a query file declares no model), family chosen by "
               f"its number of distinct values (numeric with more than "
               f"{mq.MAX_CATEGORIES} distinct values: Normal, else Categorical)"]
    else:
      spec = parse_model_file(args.model_path)
    frame = jdata.select_columns(df, spec, bool(args.drop_na), source=args.data_path)
  if args.queries:
    forced += mq.parse_query_file(args.queries, columns=set(spec.names),
                                  what="query file (--queries)", columns_of="the model file")
  return frame, spec, forced, notes


def napsumq(args) -> int:
  import jax
  from jtwin import data as jdata
  from jtwin import napsumq as nq
  from jtwin._atomic import check_numbered_outputs, check_output_path, check_output_prefix
  from jtwin._progress import ProgressBar
  from jtwin._rng import root_key
  from jtwin.result_io import save_result

  timer = _Timer()
  from jtwin import parallel
  parallel.configure_cpu_devices(args.devices)   # before JAX starts its backend
  from jtwin.marginals.ensemble import resolve_sampling
  resolve_sampling(args.sampling, args.num_synthetic_records_per_parameter_sample,
                   flag="--sampling", m_flag="--m")      # before anything is spent
  if not args.non_private:
    from jtwin._guidance import check_epsilon
    check_epsilon(args.epsilon, allow_large=args.allow_large_epsilon)
  inputs = [args.data_path, args.model_path] + ([args.queries] if args.queries else [])
  paths = {"csv": args.output_path + ".csv", "result": args.output_path + ".jtwin.npz",
           "domain": args.output_path + ".domain.txt"}
  check_output_prefix(args.output_path, args.visualize)
  for p in paths.values():
    check_output_path(p, inputs=inputs)
  if args.separate_output:
    check_numbered_outputs(args.output_path, inputs)
  if args.select == "none" and not args.queries:     # before the data is read
    from jtwin.marginals import queries as mq
    if not mq.is_query_file(args.model_path):
      raise JtwinInputError("--select none measures only the query cliques, but none were "
                            "given: pass --queries FILE (or a query file as MODEL), or "
                            "choose another --select")
  from jtwin._stream_command import wants_stream
  streaming = wants_stream(args)
  frame, spec, forced, notes = _load(args, streaming)
  if args.target is not None and args.target not in spec.names:
    raise JtwinInputError(f"--target '{args.target}' is not a modelled column (model columns: "
                          f"{', '.join(list(spec.names)[:8])}{', ...' if len(spec.names) > 8 else ''})")
  timer.lap("load")
  if args.non_private:
    warnings.warn("--no-privacy: NO differential privacy; do not release this output")
  bar = ProgressBar("measuring and fitting", 1000, quiet=args.quiet)
  key = root_key(args.seed)
  k_fit, k_sample = jax.random.split(key)
  result = nq.fit_marginals(
      k_fit, frame, spec, epsilon=args.epsilon, delta=args.delta, num_components=args.k,
      domain=args.domain, domain_epsilon=args.domain_epsilon,
      check_delta=None if args.allow_large_delta or args.non_private else _unsafe_delta,
      selection=args.select, target=args.target, queries=forced, non_private=args.non_private,
      one_way_fraction=args.one_way_fraction, rounds=args.rounds, max_cells=args.max_cells,
      final_steps=args.steps, source=args.data_path, devices=args.devices,
      ensemble=args.ensemble,
      smoothness=nq.SMOOTHNESS if args.smoothness is None else args.smoothness,
      residuals=nq.RESIDUALS if args.residuals is None else args.residuals,
      one_way_smoothing=(nq.ONE_WAY_SMOOTHING if args.one_way_smoothing is None
                         else args.one_way_smoothing),
      multires=args.multires,
      progress=lambda frac, text: bar.update(int(1000 * frac), text))
  inferred = notes + result.inferred_from_data
  # fit_marginals warned about the rest itself; only a model file chooses these
  _warn_inferred(notes, "write a model file to choose the columns and their families")
  _note_release(args, result.public)
  for name, secs in result.timings.items():
    timer.phases[name] = secs
  timer.lap("fit")
  timer.phases["fit"] -= sum(result.timings.values())
  if timer.phases["fit"] < 0.005:
    del timer.phases["fit"]
  derived = f" ({len(result.derived)} derived from others)" if result.derived else ""
  _say(args, f"jtwin napsumq: {len(result.cells) + len(result.derived)} columns{derived}; "
       f"{privacy_line(result.privacy)}")
  if result.smoothed:
    _say(args, "jtwin napsumq: smooth fit used for the noisy 1-way histogram of "
         + ", ".join(result.smoothed) + " (post-processing; --one_way_smoothing 0 turns it off)")
  if result.run_smoothed:
    _say(args, "jtwin napsumq: merged cells of " + ", ".join(result.run_smoothed)
         + " spread their rows partly by a smooth fit to their noisy counts (the blend with"
         " the lowest estimated error; post-processing; --one_way_smoothing 0 turns it off)")

  m = args.num_synthetic_records_per_parameter_sample
  from jtwin.sampling import check_output_size, whole_draws
  num = whole_draws(max(int(round(result.num_rows_estimate)), 0) if args.num_synthetic is None
                    else args.num_synthetic, m, "--num_synthetic")
  check_output_size(num, len(result.cells), "--num_synthetic")
  synth = nq.sample_marginals(k_sample, result, num, records_per_draw=m, sampling=args.sampling)
  timer.lap("sampling")
  written = []
  if args.separate_output:
    written += write_separate_outputs(synth, args.output_path, m)
  else:
    jdata.write_csv_atomic(synth, paths["csv"])
    written.append(paths["csv"])
  save_result(paths["result"], result.posterior, model_info=model_info(result),
              privacy=result.privacy, inferred_from_data=inferred,
              extra={"measurements": result.measurements,
                     "smoothed_one_way": list(result.smoothed),
                     "smooth_decoded_runs": list(result.run_smoothed),
                     "num_rows_estimate": result.num_rows_estimate,
                     "release": result.public.record()})
  written.append(paths["result"])
  written += _write_domain_file(args.output_path, result.public, args.model_path)
  timer.lap("writing")
  if args.visualize != "none":
    from jtwin.plots import make_plots
    real = result.plot_rows if streaming else frame.reset_index(drop=True)
    made = make_plots(real, synth, private_plot_prefix(args.output_path, args.visualize),
                      args.visualize)
    warn_no_popup(args, made)
    timer.lap("plots")
    if made.files:   # a warning, so --quiet never hides it
      warnings.warn(f"the plots in {os.path.dirname(made.files[0])}/ show the REAL data: "
                    "they are for the data holder, NOT for release")
  total = sum(timer.phases.values())
  _say(args, f"jtwin: done in {total:.1f} s (" +
       " | ".join(f"{k} {v:.2f}s" for k, v in timer.phases.items()) + ")",
       f"jtwin: wrote {num} synthetic rows: " + ", ".join(written))
  if not args.quiet and args.num_synthetic is None:
    _say(args, f"jtwin: the number of rows, {num}, is the DP estimate of N from the noisy "
         "1-way tables")
  return 0


def model_info(result) -> dict:
  """The result file's model description (everything `jtwin sample` needs)."""
  return {"kind": "mixture", "method": "napsumq", "num_components": result.num_components,
          "ensemble": result.ensemble,
          "features": [list(f) for f in result.model.features],
          "cells": [c.to_dict() for c in result.cells],
          "derived": [dc.to_dict() for dc in result.derived]}


def add_parser(sub, types):
  """The `napsumq` subcommand (twinify 2.0's name for its marginal-query method)."""
  from jtwin._flags import (HelpFormatter, _fraction, add_domain_flags, add_drop_na_and_seed,
                            add_output_group, add_sampling_flag)
  positive_float, positive_int, probability = types
  p = sub.add_parser(
      "napsumq", help="fit a noise-aware mixture to DP marginal queries and write a twin",
      description="Measure DP marginals of DATA.csv (all 1-way tables, then 2- and 3-way "
      "tables: every pair by default, or chosen adaptively), fit a mixture to them with a posterior that accounts "
      "for the noise, and write OUTPUT_PREFIX.csv, OUTPUT_PREFIX.jtwin.npz and plots. MODEL "
      "is a model file (as for 'jtwin fit') or a twinify NAPSU-MQ query file (one clique "
      "per line, comma-separated column names).",
      formatter_class=HelpFormatter, fromfile_prefix_chars="%")
  p.add_argument("data_path", metavar="DATA.csv", help="the sensitive data (never modified)")
  p.add_argument("model_path", metavar="MODEL", help="model file or NAPSU-MQ query file")
  p.add_argument("output_path", metavar="OUTPUT_PREFIX", help="prefix of the output files")
  g = p.add_argument_group("privacy")
  g.add_argument("--epsilon", type=positive_float("--epsilon"), default=1.0,
                 help="target epsilon (certified upper bound)")
  g.add_argument("--delta", type=probability("--delta", upper_open=True), default=None,
                 help="delta [default: 0.1/N]")
  g.add_argument("--allow_large_delta", action="store_true",
                 help="accept delta > 1/N (such a delta allows publishing a whole row)")
  g.add_argument("--allow_large_epsilon", action="store_true",
                 help="accept epsilon > 100 (above 10 a warning says what such an epsilon "
                 "means; above 100 differential privacy protects nothing)")
  g.add_argument("--no-privacy", "--non_private", dest="non_private", action="store_true",
                 help="exact marginals, no noise: NOT private, for baselines only")
  g = p.add_argument_group("queries and model")
  g.add_argument("--select", choices=("all", "aim", "mst", "none"), default="all",
                 help="which further marginals are measured after the 1-way tables: every "
                 "2-way table (and 3-way with --target), AIM's adaptive loop, MST's tree, or "
                 "none (query cliques only)")
  g.add_argument("--target", default=None, metavar="COLUMN",
                 help="3-way tables containing this column join the workload")
  g.add_argument("--queries", default=None, metavar="FILE",
                 help="query file of cliques that are always measured")
  g.add_argument("--k", type=positive_int("--k"), default=400,
                 help="mixture components (post-processing: costs no privacy)")
  g.add_argument("--ensemble", type=positive_int("--ensemble"), default=8,
                 help="fit up to this many mixtures (at least 50 components each) from "
                 "different starts and join them into one of K components (averages away "
                 "what the tables leave undetermined; post-processing)")
  g.add_argument("--smoothness", type=float, default=None,
                 help="weight of the prior that the mixture components' shares of a numeric "
                 "column's fine cells vary smoothly (0: off) [default: 100]")
  g.add_argument("--one_way_smoothing", type=float, default=None,
                 help="weight of the robust smooth fit to the noisy 1-way histogram of each "
                 "integer column with one cell per value (>= 16 cells), used where it explains "
                 "the counts within their noise (columns with spikes keep their noisy counts; "
                 "0: off; post-processing) [default: 10]")
  g.add_argument("--residuals", action=argparse.BooleanOptionalAction, default=None,
                 help="with --select all: release each 2- and 3-way table centred (its "
                 "1-way parts removed, measured once by the 1-way tables), which needs "
                 "less noise for the same budget [default: on]")
  g.add_argument("--multires", type=_fraction("--multires"),
                 default=0.0, metavar="SHARE",
                 help="with --select all: spend this share of the multi-way budget on "
                 "coarse copies of the tables with a numeric column (4 runs of its coarse "
                 "cells), which shows broad relations more clearly: better Rubin's-rules "
                 "coverage (Adult: 0.54 -> 0.66 at 0.3), slightly worse 3-way TVD (0: off)")
  g.add_argument("--rounds", type=positive_int("--rounds"), default=None,
                 help="AIM's initial number of rounds [default: 16 x columns]")
  g.add_argument("--one_way_fraction", type=probability("--one_way_fraction", upper_open=True),
                 default=0.4,
                 help="share of the budget spent on the 1-way tables")
  g.add_argument("--max_cells", type=positive_int("--max_cells"), default=1 << 20,
                 help="largest marginal table measured (cells)")
  g.add_argument("--steps", type=positive_int("--steps"), default=2000,
                 help="Adam steps of the final fit")
  g.add_argument("--devices", type=positive_int("--devices"), default=1,
                 help="count the marginal tables with the rows sharded over this many "
                 "devices (one psum, the noise added once: same output); on a CPU-only "
                 "machine that many host devices (XLA_FLAGS=--xla_force_host_platform_"
                 "device_count)")
  add_drop_na_and_seed(g)
  g = p.add_argument_group("data larger than memory")
  g.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                 help="on: read the CSV in chunks, twice (the DP domain's counts, then the "
                 "rows' cell codes into memory-mapped files in a private temporary directory "
                 "next to OUTPUT_PREFIX, removed at the end), so memory does not grow with N "
                 "(same result); needs a model file; auto: on when the data file is over "
                 "1 GiB (compressed: over 200 MiB)")
  g.add_argument("--chunk_rows", type=positive_int("--chunk_rows"), default=None,
                 help="with streaming: CSV rows read at a time (bounds the memory) [default: 100000]")
  add_domain_flags(p)
  add_output_group(p, rows_default="the DP estimate of N")
  add_sampling_flag(p, default_text="balanced with one row per draw (--m 1), else iid")
  return p
