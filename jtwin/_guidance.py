"""Guidance on the size of epsilon: a warning above a sensible value, a refusal
past an extreme one.

epsilon bounds how much one person's row can change the probability of any
output: by a factor of at most e^epsilon (plus delta). Equivalently, an
attacker who knows everything except whether one person's row was used, and
starts at even odds, can be at most e^epsilon / (1 + e^epsilon) sure of it
after seeing the output (Kairouz, Oh & Viswanath 2015). The DP literature
treats epsilon <= 1 as strong and single-digit epsilon as common practice;
above 10 (e^10 ~ 22,000; certainty up to 99.995%) the guarantee says almost
nothing, so jtwin warns.

Past MAX_EPSILON = 100 (e^100 ~ 3e43: certainty indistinguishable from 100%)
the run is refused unless the user passes `--allow_large_epsilon`
(`allow_large_epsilon=True`). 100 rather than 1000: nothing above 100 is
private in any sense, such values are typically a typo (1e6, an extra zero)
or a wish for a non-private baseline, for which `--no-privacy` says what it
is; but values up to 100 are used in published utility-versus-epsilon
curves, so those only get the warning.
"""
from __future__ import annotations

import math
import warnings

from jtwin.errors import UnsafeEpsilonError

WARN_EPSILON = 10.0
MAX_EPSILON = 100.0


def meaning(epsilon: float) -> str:
  """What an epsilon means, in one clause."""
  ratio = f"{math.exp(epsilon):.3g}" if epsilon < 690 else "more than 1e300"
  sure = 1.0 / (1.0 + math.exp(-min(epsilon, 700.0)))
  sure_text = f"up to {100 * sure:.3f}%" if sure < 0.99999 else "essentially 100%"
  return (f"one person's row may change the probability of any output by a factor of up to "
          f"e^epsilon = {ratio}, so an attacker starting at even odds can become {sure_text} "
          "sure whether that person's row was used")


def check_epsilon(epsilon: float, *, allow_large: bool = False, what: str = "--epsilon",
                  flag: str = "--allow_large_epsilon") -> None:
  """Warns above WARN_EPSILON; refuses above MAX_EPSILON unless `allow_large`.

  Args:
    epsilon: the target epsilon, or the epsilon a run spends.
    allow_large: accept epsilon > MAX_EPSILON (still with the warning).
    what: how the value is named in the messages.
    flag: the option that accepts a larger epsilon, named in the refusal.

  Raises:
    UnsafeEpsilonError: epsilon > MAX_EPSILON and not `allow_large`.
  """
  if epsilon is None or not epsilon > WARN_EPSILON:
    return
  if epsilon > MAX_EPSILON and not allow_large:
    raise UnsafeEpsilonError(
        f"{what} = {epsilon:g} is above {MAX_EPSILON:g}, where differential privacy protects "
        f"nothing ({meaning(epsilon)}); use epsilon <= {WARN_EPSILON:g}, --no-privacy for a "
        f"non-private baseline, or pass {flag}")
  warnings.warn(f"{what} = {epsilon:g}, above {WARN_EPSILON:g}: a weak guarantee: "
                f"{meaning(epsilon)}; values of 1 or less are strong, single digits common")
