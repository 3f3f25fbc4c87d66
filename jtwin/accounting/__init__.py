"""Privacy accounting for jtwin's DP-SGD.

Mechanism. Each of T steps draws a Poisson subsample (every row independently
with probability q), sums the per-example gradients clipped to L2 norm C, and
adds Gaussian noise N(0, (sigma C)^2 I) to the clipped sum. The noise
multiplier sigma, the sampling rate q, the number of steps T and delta are
the only inputs: all public. N is treated as public (it may set q), but the
guarantee does not depend on the realised batch sizes.

Neighbouring relation. Add/remove one row: the clipped sum then has L2
sensitivity C, and one step is the Poisson-subsampled Gaussian mechanism with
noise multiplier sigma (under replace-one the sensitivity would be 2C, i.e.
half the effective sigma; jtwin does not use that relation).

Accountants. `epsilon` reports Microsoft prv-accountant bounds
(lower, estimate, upper) with delta_error = delta / 1000, plus an RDP bound
(`jtwin.accounting.rdp`, Mironov et al. 2019 with the Balle et al. 2020
conversion). The certified figure is `upper` = min(PRV upper, RDP), the smaller
of two valid upper bounds, and `accountant` records which one it is. If
prv-accountant fails (0.2.0 raises at some high-epsilon settings), RDP alone
is used.

Public API: `EpsilonBounds`, `Calibration`, `epsilon`, `calibrate_noise`,
`steps_for_epsilon`.
"""
from jtwin.accounting.bounds import EpsilonBounds, epsilon
from jtwin.accounting.calibrate import Calibration, calibrate_noise
from jtwin.accounting.steps import steps_for_epsilon

__all__ = [
    "Calibration",
    "EpsilonBounds",
    "calibrate_noise",
    "epsilon",
    "steps_for_epsilon",
]
