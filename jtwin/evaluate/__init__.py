"""`jtwin evaluate`: how good is a synthetic twin, before it is released?

`evaluate(real, synth, ...)` computes marginal fidelity (total variation
distances of 1-, 2- and 3-way marginals, missing rates), dependence
(Cramér's V and Pearson differences), distinguishability (propensity-score
MSE) and, given a target column, machine-learning utility (train on
synthetic, test on real; synthetic ranking agreement). `write_report` saves
the figures as JSON and a one-page HTML report.

Everything here reads the real data: the results are for the data holder,
not for release. NumPy and pandas only; matplotlib is imported by
`write_report` when it draws.
"""
from jtwin.evaluate.core import evaluate
from jtwin.evaluate.report import format_summary, write_report

__all__ = ["evaluate", "format_summary", "write_report"]
