"""Option types and flag groups shared by the subcommands' parsers.

Kept apart from `jtwin.cli` so that the subcommand modules that add their own
parser (`jtwin._napsumq_command`) do not import the command line back.
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
  """Shows "(default: X)" except where the default is None (the help says it)."""

  def _get_help_string(self, action):
    if action.default is None:
      return action.help
    return super()._get_help_string(action)


def _positive_float(name):
  def parse(text):
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
    if not value > 0 or value != value:
      raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text}")
    if value == float("inf"):
      raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text}")
    return value
  return parse


def _int_at_least(name, low: int):
  def parse(text):
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {text}")
    return value
  return parse


def _non_negative_int(name):
  return _int_at_least(name, 0)


def _positive_int(name):
  return _int_at_least(name, 1)


def _probability(name, upper_open=False):
  def parse(text):
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
    ok = 0 < value < 1 if upper_open else 0 < value <= 1
    if not ok:
      interval = "(0, 1)" if upper_open else "(0, 1]"
      raise argparse.ArgumentTypeError(f"{name} must be in {interval}, got {text}")
    return value
  return parse


def _fraction(name):
  """A number in [0, 1)."""
  def parse(text):
    try:
      value = float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
      raise argparse.ArgumentTypeError(f"{name} must be in [0, 1), got {text}")
    return value
  return parse


def add_domain_flags(p) -> None:
  """--domain, --domain_epsilon and --verbose (shared by `fit` and `napsumq`)."""
  g = p.add_argument_group("public domain and row count")
  g.add_argument("--domain", choices=("dp", "data"), default="dp",
                 help="where undeclared domain items (categories, missing and integer flags, "
                 "standardisation, bin edges) come from: 'dp' releases them under DP from a "
                 "share of epsilon (covered by the printed epsilon); 'data' reads them off "
                 "the private data (NOT covered; warned and recorded)")
  g.add_argument("--domain_epsilon", type=_positive_float("--domain_epsilon"), default=None,
                 help="epsilon for the DP domain step, spent only when the model file leaves "
                 "something undeclared (default: 0.09 x epsilon, and 10%% of delta); the row "
                 "count always gets 0.01 x epsilon")
  g.add_argument("--verbose", action="store_true",
                 help="also print exact, NON-private statistics of the data (the training "
                 "log-likelihood, counts of clipped values): not for logs that are released")


def add_drop_na_and_seed(g) -> None:
  """--drop_na and --seed (shared by `fit` and `napsumq`)."""
  g.add_argument("--drop_na", type=int, nargs="?", const=1, default=0, choices=(0, 1),
                 help="drop rows with a missing value in a modelled column "
                 "('--drop_na' or '--drop_na 1')")
  g.add_argument("--seed", type=_non_negative_int("--seed"), default=None,
                 help="seed for reproducibility (default: drawn from the OS; a known seed "
                 "lets anyone recompute the noise, so keep it secret)")


def add_output_group(p, rows_default: str) -> None:
  """The output options (shared by `fit` and `napsumq`, with twinify's names)."""
  g = p.add_argument_group("output")
  g.add_argument("--num_synthetic", "--n", type=_non_negative_int("--num_synthetic"),
                 default=None,
                 help=f"synthetic rows to write (default: {rows_default})")
  g.add_argument("--num_synthetic_records_per_parameter_sample", "--m", type=_positive_int("--m"),
                 default=1,
                 help="rows per posterior parameter draw; the row count is rounded up to whole "
                 "draws (as twinify does), and the rows of one draw are consecutive")
  g.add_argument("--separate_output", action="store_true",
                 help="write OUTPUT_PREFIX.{i}.csv per parameter draw")
  g.add_argument("--visualize", choices=("none", "store", "popup", "both"), default="store",
                 help="comparison plots of real vs synthetic (for the data holder only): "
                 "store SVGs, pop up windows, both, or none")
  g.add_argument("--quiet", action="store_true", help="print only warnings and errors")


def add_sampling_flag(p, default_text: str) -> None:
  """--sampling: how synthetic rows are drawn from a marginal-method result."""
  p.add_argument("--sampling", choices=("balanced", "iid"), default=None,
                 help="balanced: the mixture at the posterior mean, every count rounded "
                 "systematically instead of drawn (far less Monte Carlo noise in the twin's "
                 "tables); iid: i.i.d. rows, a fresh posterior draw per row or per --m rows, "
                 f"as twinify does (use it for Rubin's rules) [default: {default_text}]")
