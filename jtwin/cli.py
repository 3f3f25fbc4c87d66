"""The `jtwin` command line: fit, napsumq, sample, check, evaluate.

A twinify command line works after changing the program name: `twinify DATA
MODEL OUT [opts]` (v0.1) and `twinify vi DATA MODEL OUT [opts]` (2.0) both run
`jtwin fit`, and `twinify napsumq DATA MODEL OUT` runs `jtwin napsumq`, with
twinify's option names, meanings and defaults (except
`--visualize`, which defaults to `store`: a popup would block). Arguments can
be read from a file with `%args.txt`, as in twinify.

This is the only module that reads flags, prints and exits. User mistakes end
with one line on stderr and a non-zero exit code (1: bad input, 2: usage or
training diverged, 3: model file error, 4: unsafe delta or epsilon refused,
130: interrupted), never with a
traceback, and leave no output files behind.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from typing import Optional, Sequence

from jtwin import __version__
from jtwin._flags import (HelpFormatter, _fraction, _non_negative_int,  # noqa: F401
                          _positive_float, _positive_int, _probability,
                          add_domain_flags, add_drop_na_and_seed, add_output_group,
                          add_sampling_flag)
from jtwin.errors import (JtwinInputError, ModelFileError, NonFiniteError, UnsafeDeltaError,
                          UnsafeEpsilonError)

COMMANDS = ("fit", "vi", "napsumq", "sample", "check", "evaluate")


def _add_fit_parser(sub):
  p = sub.add_parser(
      "fit", aliases=["vi"], help="fit a DP model to a CSV file and write a synthetic twin",
      description="Fit a differentially private mixture model to DATA.csv as described by "
      "MODEL (a twinify model.txt, optionally with public domains, or a custom .py model) "
      "and write OUTPUT_PREFIX.csv (synthetic rows), OUTPUT_PREFIX.jtwin.npz (the result, "
      "for 'jtwin sample') and, with --visualize, comparison plots.",
      formatter_class=HelpFormatter, fromfile_prefix_chars="%")
  p.add_argument("data_path", metavar="DATA.csv", help="the sensitive data (never modified)")
  p.add_argument("model_path", metavar="MODEL", help="model.txt, or a .py custom model")
  p.add_argument("output_path", metavar="OUTPUT_PREFIX", help="prefix of the output files")
  g = p.add_argument_group("privacy")
  g.add_argument("--epsilon", type=_positive_float("--epsilon"), default=None,
                 help="target epsilon (default 1); the noise is calibrated so that the "
                 "certified upper bound is at most this")
  g.add_argument("--delta", type=_probability("--delta", upper_open=True), default=None,
                 help="delta (default: 0.1/N, N = rows used)")
  g.add_argument("--noise_multiplier", type=_positive_float("--noise_multiplier"),
                 default=None, help="use this noise multiplier sigma and REPORT the epsilon "
                 "spent instead of calibrating to --epsilon (not with --epsilon: cap the spend with "
                 "--max_epsilon)")
  g.add_argument("--max_epsilon", type=_positive_float("--max_epsilon"), default=None,
                 help="ceiling: with --noise_multiplier, train only as many steps as fit "
                 "under it; with --epsilon, refuse a larger target")
  g.add_argument("--clipping_threshold", type=_positive_float("--clipping_threshold"),
                 default=1.0, help="per-example gradient clipping norm C")
  g.add_argument("--warm_start", type=_fraction("--warm_start"), default=0.1,
                 help="fraction of (epsilon, delta) spent on noisy 1-way marginals that "
                 "start every mixture component near the data's marginals (Gaussian "
                 "mechanism, composed with DP-SGD); 0 disables it (twinify has none)")
  g.add_argument("--allow_large_delta", action="store_true",
                 help="accept delta > 1/N (such a delta allows publishing a whole row)")
  g.add_argument("--allow_large_epsilon", action="store_true",
                 help="accept epsilon > 100 (above 10 a warning says what such an epsilon "
                 "means; above 100 differential privacy protects nothing)")
  g.add_argument("--no-privacy", "--non_private", dest="non_private", action="store_true",
                 help="no clipping or noise: NOT private, for baselines only")
  g = p.add_argument_group("model and training")
  g.add_argument("--k", type=_positive_int("--k"), default=50,
                 help="number of mixture components (automatic model)")
  g.add_argument("--num_epochs", "-e", type=_positive_int("--num_epochs"), default=200,
                 help="epochs; T = ceil(epochs / q) DP steps run and are accounted")
  g.add_argument("--sampling_ratio", "-q", type=_probability("--sampling_ratio"),
                 default=0.01, help="Poisson sampling probability q of each row per step")
  g.add_argument("--learning_rate", type=_positive_float("--learning_rate"), default=3e-3,
                 help="Adam learning rate (twinify: 1e-3)")
  g.add_argument("--lr_schedule", choices=("constant", "cosine"), default="cosine",
                 help="learning-rate schedule: cosine decays to 5%% over the run, damping "
                 "the DP noise of the last steps (twinify: constant)")
  g.add_argument("--group_clip", choices=("on", "off"), default="on",
                 help="automatic mixture: clip each parameter group (mixture weights, each "
                 "numeric column, categorical columns, missingness) to its share of C; 'off' "
                 "clips the whole per-example gradient to C at once, as twinify does")
  g.add_argument("--average_decay", type=_fraction("--average_decay"), default=0.999,
                 help="the posterior is an exponential moving average of the iterates "
                 "with this decay (free post-processing; 0 = last iterate, as twinify)")
  add_drop_na_and_seed(g)
  add_domain_flags(p)
  _add_scale_group(p)
  add_output_group(p, rows_default="the DP estimate of N")
  return p


def _add_scale_group(p) -> None:
  """--devices (data-parallel training), --checkpoint, --resume, --checkpoint_every."""
  g = p.add_argument_group("devices and checkpoints")
  g.add_argument("--devices", type=_positive_int("--devices"), default=1,
                 help="train data-parallel on this many devices (rows sharded, noise added "
                 "once; same result up to rounding); on a CPU-only machine it uses that "
                 "many host devices (XLA_FLAGS=--xla_force_host_platform_device_count)")
  g.add_argument("--checkpoint", metavar="DIR", default=None,
                 help="save the training state in DIR every --checkpoint_every epochs and at "
                 "the end; DIR holds the run's SECRET key (mode 0700/0600): keep it as "
                 "private as the data and delete it after the run")
  g.add_argument("--resume", action="store_true",
                 help="continue the run saved in --checkpoint DIR (same data and settings; "
                 "starts afresh if DIR holds none): the result equals an uninterrupted run's")
  g.add_argument("--checkpoint_every", type=_positive_int("--checkpoint_every"), default=10,
                 help="epochs between checkpoints")
  g = p.add_argument_group("data larger than memory")
  g.add_argument("--stream", choices=("auto", "on", "off"), default="auto",
                 help="on: encode the CSV in chunks into a memory-mapped table and train from "
                 "it without loading it whole (memory independent of N; same result); auto: "
                 "on when the data file is over 1 GiB (compressed: over 200 MiB)")
  g.add_argument("--memmap", metavar="DIR", default=None,
                 help="with streaming (implies --stream on): write the encoded table to DIR "
                 "(a new directory, mode 0700, kept: it holds the private data) instead of a "
                 "temporary directory next to OUTPUT_PREFIX that is removed at the end")
  g.add_argument("--chunk_rows", type=_positive_int("--chunk_rows"), default=None,
                 help="with streaming: CSV rows read at a time (bounds the memory) [default: 100000]")


def _add_sample_parser(sub):
  p = sub.add_parser(
      "sample", help="draw more synthetic rows from a stored result (no data needed)",
      description="Draw synthetic rows from a result file written by 'jtwin fit' or "
      "'jtwin napsumq'. Sampling "
      "is post-processing of the DP posterior: it costs no privacy and needs no data.",
      formatter_class=HelpFormatter)
  p.add_argument("result", metavar="RESULT",
                 help="PREFIX.jtwin.npz from 'jtwin fit' or 'jtwin napsumq'")
  p.add_argument("-n", "--num_synthetic", type=_non_negative_int("-n"), required=True,
                 help="rows to draw")
  p.add_argument("-o", "--output", required=True, metavar="OUT.csv",
                 help="output CSV ('-': standard output, and nothing else is printed there); "
                 "compressed when its name ends in .gz, .bz2, .xz, .zip or .zst")
  p.add_argument("--seed", type=_non_negative_int("--seed"), default=None,
                 help="seed (default: from the OS)")
  p.add_argument("--model", default=None, metavar="MODEL.py",
                 help="the custom model file, for results of custom models")
  p.add_argument("--m", "--num_synthetic_records_per_parameter_sample", dest="m",
                 type=_positive_int("--m"), default=1,
                 help="rows per posterior parameter draw; the row count is rounded up to whole "
                 "draws (as twinify does), and the rows of one draw are consecutive")
  add_sampling_flag(p, default_text="balanced for 'jtwin napsumq' results with --m 1, else iid")
  p.add_argument("--quiet", action="store_true", help="print only warnings and errors")
  return p


def _add_check_parser(sub):
  p = sub.add_parser(
      "check", help="validate a model file against the data without training",
      description="Parse MODEL, match it to DATA.csv, build the model, evaluate its "
      "likelihood on the data and draw prior-predictive rows; report problems and what "
      "would be taken from the private data. Trains nothing and writes nothing.",
      formatter_class=HelpFormatter)
  p.add_argument("data_path", metavar="DATA.csv")
  p.add_argument("model_path", metavar="MODEL")
  p.add_argument("--k", type=_positive_int("--k"), default=50, help="mixture components")
  p.add_argument("--drop_na", type=int, nargs="?", const=1, default=0, choices=(0, 1),
                 help="drop rows with missing values first")
  p.add_argument("--sampling_ratio", "-q", type=_probability("--sampling_ratio"),
                 default=0.01, help="checked against the data size")
  g = p.add_argument_group("the DP domain step, run as fit and napsumq run it (same refusals)")
  g.add_argument("--epsilon", type=_positive_float("--epsilon"), default=1.0,
                 help="the epsilon the fit will use")
  g.add_argument("--delta", type=_probability("--delta", upper_open=True), default=None,
                 help="the delta the fit will use (default: 0.1/N)")
  g.add_argument("--domain", choices=("dp", "data"), default="dp",
                 help="as for fit: 'dp' releases undeclared domain items under DP (with a "
                 "fixed seed here, so a borderline column may pass here and fail in the fit "
                 "or the other way round)")
  g.add_argument("--domain_epsilon", type=_positive_float("--domain_epsilon"), default=None,
                 help="as for fit")
  return p


class _OneLineParser(argparse.ArgumentParser):
  """A usage error is one line (exit code 2), pointing to --help, not a usage dump.

  Subcommand parsers are of this class too (argparse's `add_subparsers` uses
  the parent's class).
  """

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _OneLineParser(
      prog="jtwin", fromfile_prefix_chars="%",
      description="Differentially private synthetic twins of tabular data (a fast, "
      "pure-JAX twinify). 'jtwin DATA MODEL OUT' is short for 'jtwin fit DATA MODEL OUT'.")
  parser.add_argument("--version", action="version", version=f"jtwin {__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  _add_fit_parser(sub)
  from jtwin import _napsumq_command
  _napsumq_command.add_parser(sub, (_positive_float, _positive_int, _probability))
  _add_sample_parser(sub)
  _add_check_parser(sub)
  from jtwin.evaluate import cli as evaluate_cli
  evaluate_cli.add_parser(sub)
  return parser


def _normalise_argv(argv: list) -> list:
  """twinify v0.1 style `DATA MODEL OUT ...` means `fit DATA MODEL OUT ...`."""
  if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
    return ["fit"] + argv
  return argv


def _exit_code(error: Exception) -> int:
  if isinstance(error, (UnsafeDeltaError, UnsafeEpsilonError)):
    return 4
  if isinstance(error, ModelFileError):
    return 3
  if isinstance(error, NonFiniteError):
    return 2
  return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command line; returns the exit code."""
  argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
  parser = build_parser()
  if not argv:
    parser.print_help(sys.stderr)
    return 2
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:   # argparse: --help (0) or a usage error (2)
    return int(e.code or 0)
  from jtwin import _commands, _napsumq_command
  run = {"fit": _commands.fit, "vi": _commands.fit, "sample": _commands.sample,
         "check": _commands.check, "napsumq": _napsumq_command.napsumq}.get(args.command)
  if run is None:
    from jtwin.evaluate import cli as evaluate_cli
    run = evaluate_cli.run
  if isinstance(getattr(args, "output_path", None), str) and args.output_path.endswith(".csv"):
    args.output_path = args.output_path[:-len(".csv")]   # `out.csv` means prefix `out`
  if args.command in ("fit", "vi", "sample", "check", "napsumq"):
    from jtwin import _compile_cache
    _compile_cache.enable()        # later runs load compiled programs (JTWIN_CACHE_DIR=off)
  from jtwin import _interrupt
  _interrupt.reset()
  prefix = getattr(args, "output_path", None) or getattr(args, "output", None)
  try:
    with _interrupt.guard(), (_interrupt.watch(prefix) if isinstance(prefix, str)
                              else contextlib.nullcontext()):
      with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        code = int(run(args) or 0)
      # an interrupt that was swallowed (e.g. raised inside a garbage-collection
      # callback, "Exception ignored in ...") still ends the run as interrupted
      _interrupt.check()
    return code
  except (JtwinInputError, NonFiniteError) as e:
    print(f"jtwin: error: {e}", file=sys.stderr)
    return _exit_code(e)
  except OSError as e:   # the system refused a file operation (disk full, permissions)
    where = f"{e.filename}: " if getattr(e, "filename", None) else ""
    print(f"jtwin: error: {where}{e.strerror or e}; nothing more was written "
          "(check the disk and the output path)", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(_interrupt.message(), file=sys.stderr)
    return 130
  finally:
    _interrupt.disarm()


def _show_warning(message, category, filename, lineno, file=None, line=None):
  print(f"jtwin: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
  raise SystemExit(main())
