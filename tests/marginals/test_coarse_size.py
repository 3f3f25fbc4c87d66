"""The size-aware coarse view of undeclared numeric columns (napsumq._coarse_size)."""
import math

import pytest

from jtwin.accounting import zcdp
from jtwin.marginals import cells as cl
from jtwin.napsumq import _coarse_size

RHO = zcdp.cdp_rho(1.0, 1e-5) * 0.9 * 0.6     # epsilon = 1: what is left after the 1-way tables


@pytest.mark.parametrize("rows,d,target,expected", [
    (32561, 15, 14, 16),       # Adult: the full 16
    (10000, 18, None, 6),      # the loans-like table
    (10000, 18, 17, 4),        # ... with a target: more tables, more noise
    (500, 10, None, 4),        # tiny: never below 4
    (10**7, 10, None, cl.MAX_COARSE),   # huge: never above the cap
])
def test_coarse_size_follows_rows_over_noise(rows, d, target, expected):
  assert _coarse_size(float(rows), RHO, d, "all", target, False) == expected


def test_coarse_size_is_monotone_in_rows_and_budget():
  sizes = [_coarse_size(float(n), RHO, 12, "all", None, False) for n in range(1000, 60000, 1000)]
  assert sizes == sorted(sizes)
  budgets = [_coarse_size(20000.0, RHO * f, 12, "all", None, False) for f in (0.1, 0.5, 1, 4)]
  assert budgets == sorted(budgets)


def test_mst_measures_fewer_tables_so_gets_finer_views():
  assert (_coarse_size(10000.0, RHO, 18, "mst", None, False)
          > _coarse_size(10000.0, RHO, 18, "all", None, False))


def test_non_private_keeps_the_cap():
  assert _coarse_size(100.0, math.inf, 18, "all", None, True) == cl.MAX_COARSE
